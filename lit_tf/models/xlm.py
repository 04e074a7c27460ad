"""XLM (Lample & Conneau, 2019): a cross-lingual post-LayerNorm Transformer encoder.

Read top to bottom: config -> embeddings -> encoder -> pre-training model -> classification models
-> language-adversarial parts (gradient reversal, discriminator, mean pooling).

The same network serves XLM's three objectives; only the data and ``XLMConfig.causal`` differ:

* MLM: monolingual streams with masked tokens, bidirectional attention;
* TLM: a parallel pair ``[CLS] src [SEP] tgt [SEP]`` with positions restarting at the target
  sentence and per-token language ids (built by ``lit_tf.objectives.crosslingual``);
* CLM: ``causal=True``, every position attends only to itself and the past.

The block and the MLM head are BERT's (``BertBlock``, ``BertMLMHead``): XLM's encoder is the
same post-LN Transformer. Shapes use B = batch, T = sequence length, C = d_model,
V = vocab_size, L = n_langs, N = number of positions selected for prediction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lit_tf.models.bert import (
    BertBlock,
    BertConfig,
    BertMLMHead,
    BertPooler,
    _init_bert_weights,
    classifier_dropout_p,
    pretraining_output,
)
from lit_tf.models.layers import ConfigMixin, Dropout, count_parameters
from lit_tf.models.outputs import ClassifierOutput, EncoderOutput, PreTrainingOutput


@dataclass
class XLMConfig(ConfigMixin):
    vocab_size: int  # number of tokens in the (shared, multilingual) vocabulary (V)
    n_langs: int = 2  # number of languages (L); language ids are 0 .. n_langs - 1
    d_model: int = 256  # hidden size (C)
    n_layers: int = 4  # number of Transformer blocks
    n_heads: int = 4  # attention heads per block; must divide d_model
    d_ff: int = 1024  # inner size of the feed-forward MLP
    max_seq_len: int = 256  # number of learned position embeddings = largest position id + 1
    dropout: float = 0.1  # dropout on embeddings and on both residual branches
    attn_dropout: float = 0.1  # dropout on the attention probabilities
    use_lang_emb: bool = True  # add a learned language embedding to token + position embeddings
    causal: bool = False  # causal attention (CLM): position t attends only to positions <= t
    layer_norm_eps: float = 1e-12  # epsilon of every LayerNorm
    init_std: float = 0.02  # std of the normal init of Linear and Embedding weights
    pad_id: int = 0  # id of the padding token; its embedding row is zero-initialised
    activation: str = "gelu"  # feed-forward / LM-head activation: "gelu" (erf) or "gelu_tanh"

    def __post_init__(self) -> None:
        self.validate(positive=("n_langs",), flags=("use_lang_emb", "causal"))

    def as_bert_config(self) -> BertConfig:
        """The ``BertConfig`` holding the fields XLM shares with BERT, used to build the reused
        ``BertBlock`` / ``BertMLMHead`` and the shared init policy (its segment embedding size is
        irrelevant: XLM has no token types)."""
        shared = (
            "vocab_size",
            "d_model",
            "n_layers",
            "n_heads",
            "d_ff",
            "max_seq_len",
            "dropout",
            "attn_dropout",
            "layer_norm_eps",
            "init_std",
            "pad_id",
            "activation",
        )
        return BertConfig(**{name: getattr(self, name) for name in shared})


def _init_weights(module: nn.Module, cfg: XLMConfig) -> None:
    """XLM's single init policy is BERT's: normal(0, init_std) Linear/Embedding weights, zero biases,
    identity LayerNorms, zeroed padding row. Delegated so the policy is written once."""
    _init_bert_weights(module, cfg.as_bert_config())


class XLMEmbeddings(nn.Module):
    """token + learned position (+ language, when ``use_lang_emb``) embeddings, LayerNorm, dropout.

    Position ids may restart inside a sequence (TLM: the target sentence starts again at 0), so
    they are an input rather than always ``0 .. T-1``.
    """

    def __init__(self, cfg: XLMConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=cfg.pad_id)
        self.position_embeddings = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        # Absent (None) rather than unused when switched off, so it holds no parameters.
        self.lang_embeddings = nn.Embedding(cfg.n_langs, cfg.d_model) if cfg.use_lang_emb else None
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.dropout)

    def forward(
        self, input_ids: Tensor, lang_ids: Tensor | None = None, position_ids: Tensor | None = None
    ) -> Tensor:
        """input_ids (B, T); lang_ids (B, T) language of each token (required when language
        embeddings are on, ignored otherwise); position_ids (B, T) (default 0..T-1) -> (B, T, C)."""
        T = input_ids.shape[1]
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device).unsqueeze(0)  # (1, T), broadcast over B
        x = self.word_embeddings(input_ids)  # (B, T, C)
        x = x + self.position_embeddings(position_ids)  # (B, T, C)
        if self.lang_embeddings is not None:
            if lang_ids is None:
                raise ValueError(
                    "lang_ids (B, T) is required when XLMConfig.use_lang_emb is True "
                    "(pass the language id of every token, or set use_lang_emb=False)"
                )
            if lang_ids.shape != input_ids.shape:
                raise ValueError(
                    f"lang_ids shape {tuple(lang_ids.shape)} must equal input_ids shape {tuple(input_ids.shape)}"
                )
            x = x + self.lang_embeddings(lang_ids)  # (B, T, C)
        return self.dropout(self.norm(x))


class XLMModel(nn.Module):
    """The XLM encoder: embeddings then n_layers post-LN blocks (causal attention when cfg.causal)."""

    def __init__(self, cfg: XLMConfig):
        super().__init__()
        self.cfg = cfg
        block_cfg = cfg.as_bert_config()
        self.embeddings = XLMEmbeddings(cfg)
        self.blocks = nn.ModuleList([BertBlock(block_cfg) for _ in range(cfg.n_layers)])
        _init_weights(self, cfg)

    def forward(
        self,
        input_ids: Tensor,
        lang_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
    ) -> EncoderOutput:
        """input_ids (B, T) long; lang_ids (B, T) long, required when cfg.use_lang_emb;
        attention_mask (B, T) bool/int with 1 = real token, 0 = padding (default: all real);
        position_ids (B, T) long (default 0..T-1), each < max_seq_len."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
        if position_ids is None and input_ids.shape[1] > self.cfg.max_seq_len:
            raise ValueError(
                f"sequence length {input_ids.shape[1]} exceeds max_seq_len={self.cfg.max_seq_len}"
            )
        key_padding_mask = None if attention_mask is None else attention_mask.bool()  # (B, T), True = real

        x = self.embeddings(input_ids, lang_ids=lang_ids, position_ids=position_ids)  # (B, T, C)
        for block in self.blocks:
            x = block(x, key_padding_mask=key_padding_mask, is_causal=self.cfg.causal)  # (B, T, C)
        return EncoderOutput(hidden=x)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        return count_parameters(self, exclude_embeddings=exclude_embeddings)


class XLMForPreTraining(nn.Module):
    """XLMModel + LM head (BERT's MLM head, decoder tied to the token embeddings).

    One head serves MLM, TLM and CLM: the objective decides which positions carry targets.
    Returns logits, never a loss.
    """

    def __init__(self, cfg: XLMConfig):
        super().__init__()
        self.cfg = cfg
        self.xlm = XLMModel(cfg)
        self.lm_head = BertMLMHead(cfg.as_bert_config(), self.xlm.embeddings.word_embeddings)
        # Re-apply the same policy to the whole model so the head is covered too.
        _init_weights(self, cfg)

    def forward(
        self,
        input_ids: Tensor,
        lang_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        mlm_positions: Tensor | None = None,
        mlm_targets: Tensor | None = None,
    ) -> PreTrainingOutput:
        """mlm_positions: optional (B, T) bool, True where a prediction is needed (MLM/TLM), or the flat
        indices of its True entries (`select_positions`). When
        given, only those rows are projected and mlm_logits is (N, V), rows in row-major order;
        otherwise mlm_logits is the full (B, T, V) (CLM, where every position predicts the next
        token; the shift happens in the loss). nsp_logits is always None. mlm_targets: optional (N,)
        ids for the selected rows: the head is then fused into the loss (mlm_nll, mlm_hits, no logits)."""
        hidden = self.xlm(
            input_ids, lang_ids=lang_ids, attention_mask=attention_mask, position_ids=position_ids
        ).hidden  # (B, T, C)

        return pretraining_output(hidden, self.lm_head, mlm_positions, mlm_targets)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        return count_parameters(self, exclude_embeddings=exclude_embeddings)


class XLMForSequenceClassification(nn.Module):
    """XLMModel + pooler -> dropout -> Linear(C, num_labels).

    The pooler is BERT's (dense + tanh on the first token's hidden state), chosen so BERT and XLM
    classifiers have the same shape. (HF's ``XLMForSequenceClassification`` instead feeds the
    first token straight to the output Linear, so this head is not exported to HF; the encoder is.)
    ``xlm`` is a plain ``XLMModel``: transfer a pretrained encoder with
    ``clf.xlm.load_state_dict(pretrained.xlm.state_dict())``. Returns logits, never a loss.
    """

    def __init__(self, cfg: XLMConfig, num_labels: int, classifier_dropout: float | None = None):
        super().__init__()
        self.cfg = cfg
        self.num_labels = num_labels
        self.xlm = XLMModel(cfg)
        self.pooler = BertPooler(cfg.as_bert_config())
        self.dropout = Dropout(classifier_dropout_p(num_labels, classifier_dropout, cfg.dropout))
        self.classifier = nn.Linear(cfg.d_model, num_labels)
        _init_weights(self, cfg)

    def forward(
        self,
        input_ids: Tensor,
        lang_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
    ) -> ClassifierOutput:
        """Inputs as ``XLMModel.forward`` -> logits (B, num_labels)."""
        hidden = self.xlm(
            input_ids, lang_ids=lang_ids, attention_mask=attention_mask, position_ids=position_ids
        ).hidden  # (B, T, C)
        logits = self.classifier(self.dropout(self.pooler(hidden)))  # (B, C) -> (B, num_labels)
        return ClassifierOutput(hidden=hidden, logits=logits)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        return count_parameters(self, exclude_embeddings=exclude_embeddings)


class XLMForTokenClassification(nn.Module):
    """XLMModel -> dropout -> Linear(C, num_labels) at every position (same layout as HF's).
    Returns logits, never a loss."""

    def __init__(self, cfg: XLMConfig, num_labels: int, classifier_dropout: float | None = None):
        super().__init__()
        self.cfg = cfg
        self.num_labels = num_labels
        self.xlm = XLMModel(cfg)
        self.dropout = Dropout(classifier_dropout_p(num_labels, classifier_dropout, cfg.dropout))
        self.classifier = nn.Linear(cfg.d_model, num_labels)
        _init_weights(self, cfg)

    def forward(
        self,
        input_ids: Tensor,
        lang_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
    ) -> ClassifierOutput:
        """Inputs as ``XLMModel.forward`` -> logits (B, T, num_labels)."""
        hidden = self.xlm(
            input_ids, lang_ids=lang_ids, attention_mask=attention_mask, position_ids=position_ids
        ).hidden  # (B, T, C)
        logits = self.classifier(self.dropout(hidden))  # (B, T, num_labels)
        return ClassifierOutput(hidden=hidden, logits=logits)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        return count_parameters(self, exclude_embeddings=exclude_embeddings)


# ----------------------------------------------------------------------------- language-adversarial parts


class GradReverse(torch.autograd.Function):
    """Gradient reversal (Ganin & Lempitsky, 2015): identity forward, ``-lambd * grad`` backward.

    Placed between an encoder and a language discriminator, the discriminator learns to tell
    languages apart while the encoder receives the opposite gradient and learns to hide them.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, lambd: float) -> Tensor:
        ctx.lambd = float(lambd)
        return x.view_as(x)  # a new tensor object, so autograd records this node

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        return -ctx.lambd * grad_output, None  # no gradient for lambd


def grad_reverse(x: Tensor, lambd: float = 1.0) -> Tensor:
    """Identity on ``x`` whose backward multiplies the incoming gradient by ``-lambd``."""
    return GradReverse.apply(x, lambd)


class LanguageDiscriminator(nn.Module):
    """Predicts the language of a pooled sentence representation through a gradient-reversal layer.

    pooled (B, C) -> grad_reverse(., lambd) -> Linear(C, hidden) -> GELU -> Dropout -> Linear(hidden, L).
    Train it with ``objectives.crosslingual.language_adversarial_loss``; ``lambd`` usually follows a
    schedule (``objectives.crosslingual.PiecewiseLinear``). It keeps PyTorch's default init: it is
    not part of the pretrained encoder.
    """

    def __init__(self, d_model: int, n_langs: int, hidden: int | None = None, dropout: float = 0.1):
        super().__init__()
        if d_model <= 0 or n_langs < 2:
            raise ValueError(
                f"LanguageDiscriminator needs d_model > 0 and n_langs >= 2, got {d_model}, {n_langs}"
            )
        hidden = d_model if hidden is None else hidden
        if hidden <= 0:
            raise ValueError(f"LanguageDiscriminator hidden must be > 0, got {hidden}")
        self.n_langs = n_langs
        self.mlp = nn.Sequential(
            nn.Linear(d_model, hidden),
            nn.GELU(),
            Dropout(dropout),
            nn.Linear(hidden, n_langs),
        )

    def forward(self, pooled: Tensor, lambd: float) -> Tensor:
        """pooled (B, C), lambd >= 0 the reversal strength -> logits (B, L)."""
        if pooled.dim() != 2:
            raise ValueError(f"pooled must be (B, C), got shape {tuple(pooled.shape)}")
        return self.mlp(grad_reverse(pooled, lambd))  # (B, L)


def mean_pool(hidden: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """Mask-aware mean over time: hidden (B, T, C), attention_mask (B, T) with 1 = real token
    (None = all real) -> (B, C). A row without any real token pools to zeros."""
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be (B, T, C), got shape {tuple(hidden.shape)}")
    if attention_mask is None:
        return hidden.mean(dim=1)  # (B, C)
    if attention_mask.shape != hidden.shape[:2]:
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} must be (B, T) = {tuple(hidden.shape[:2])}"
        )
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    total = (hidden * weights).sum(dim=1)  # (B, C)
    count = weights.sum(dim=1).clamp(min=1.0)  # (B, 1)
    return total / count  # (B, C)
