"""Model definitions (pure PyTorch)."""

from lit_tf.models.bert import (
    BertBlock,
    BertConfig,
    BertEmbeddings,
    BertForPreTraining,
    BertMLMHead,
    BertModel,
    BertNSPHead,
    BertPooler,
)
from lit_tf.models.layers import ACTIVATIONS, FeedForward, KVCache, MultiHeadAttention, count_parameters
from lit_tf.models.outputs import EncoderOutput, PreTrainingOutput

__all__ = [
    "ACTIVATIONS",
    "BertBlock",
    "BertConfig",
    "BertEmbeddings",
    "BertForPreTraining",
    "BertMLMHead",
    "BertModel",
    "BertNSPHead",
    "BertPooler",
    "EncoderOutput",
    "FeedForward",
    "KVCache",
    "MultiHeadAttention",
    "PreTrainingOutput",
    "count_parameters",
]
