"""Model definitions (pure PyTorch)."""

from lit_tf.models.bert import (
    BertBlock,
    BertConfig,
    BertEmbeddings,
    BertForPreTraining,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertMLMHead,
    BertModel,
    BertNSPHead,
    BertPooler,
)
from lit_tf.models.generation import filter_logits, generate
from lit_tf.models.gpt import GPTBlock, GPTConfig, GPTForCausalLM, GPTModel
from lit_tf.models.layers import ACTIVATIONS, FeedForward, KVCache, MultiHeadAttention, count_parameters
from lit_tf.models.outputs import CausalLMOutput, ClassifierOutput, EncoderOutput, PreTrainingOutput
from lit_tf.models.xlm import (
    GradReverse,
    LanguageDiscriminator,
    XLMConfig,
    XLMEmbeddings,
    XLMForPreTraining,
    XLMForSequenceClassification,
    XLMForTokenClassification,
    XLMModel,
    grad_reverse,
    mean_pool,
)

__all__ = [
    "ACTIVATIONS",
    "BertBlock",
    "BertConfig",
    "BertEmbeddings",
    "BertForPreTraining",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertMLMHead",
    "BertModel",
    "BertNSPHead",
    "BertPooler",
    "CausalLMOutput",
    "ClassifierOutput",
    "EncoderOutput",
    "FeedForward",
    "GPTBlock",
    "GPTConfig",
    "GPTForCausalLM",
    "GPTModel",
    "GradReverse",
    "KVCache",
    "LanguageDiscriminator",
    "MultiHeadAttention",
    "PreTrainingOutput",
    "XLMConfig",
    "XLMEmbeddings",
    "XLMForPreTraining",
    "XLMForSequenceClassification",
    "XLMForTokenClassification",
    "XLMModel",
    "count_parameters",
    "filter_logits",
    "generate",
    "grad_reverse",
    "mean_pool",
]
