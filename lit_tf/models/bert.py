"""BERT (Devlin et al., 2019): a post-LayerNorm Transformer encoder with MLM and NSP heads.

Read top to bottom: config -> embeddings -> block -> encoder -> heads -> pre-training model ->
fine-tuning models (sequence and token classification).
Shapes use B = batch, T = sequence length, C = d_model, V = vocab_size, N = number of
masked positions selected for prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lit_tf.models.layers import (
    ConfigMixin,
    Dropout,
    FeedForward,
    MultiHeadAttention,
    count_parameters,
    linear_cross_entropy,
    make_activation,
    select_positions,
)
from lit_tf.models.outputs import ClassifierOutput, EncoderOutput, PreTrainingOutput


@dataclass
class BertConfig(ConfigMixin):
    vocab_size: int  # number of tokens in the vocabulary (V)
    d_model: int = 256  # hidden size (C)
    n_layers: int = 4  # number of Transformer blocks
    n_heads: int = 4  # attention heads per block; must divide d_model
    d_ff: int = 1024  # inner size of the feed-forward MLP
    max_seq_len: int = 128  # number of learned position embeddings = longest accepted input
    dropout: float = 0.1  # dropout on embeddings and on both residual branches
    attn_dropout: float = 0.1  # dropout on the attention probabilities
    type_vocab_size: int = 2  # number of token types (segments A/B)
    layer_norm_eps: float = 1e-12  # epsilon of every LayerNorm (BERT's value)
    init_std: float = 0.02  # std of the normal init of Linear and Embedding weights
    pad_id: int = 0  # id of the padding token; its embedding row is zero-initialised
    activation: str = "gelu"  # feed-forward / MLM-head activation: "gelu" (erf) or "gelu_tanh"

    def __post_init__(self) -> None:
        self.validate(positive=("type_vocab_size",))


class BertEmbeddings(nn.Module):
    """word + learned position + token-type embeddings, then LayerNorm and dropout."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=cfg.pad_id)
        self.position_embeddings = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.d_model)
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.dropout)

    def forward(
        self, input_ids: Tensor, token_type_ids: Tensor | None = None, position_ids: Tensor | None = None
    ) -> Tensor:
        T = input_ids.shape[1]
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device).unsqueeze(0)  # (1, T), broadcast over B
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)  # (B, T)
        x = self.word_embeddings(input_ids)  # (B, T, C)
        x = x + self.position_embeddings(position_ids)  # (B, T, C)
        x = x + self.token_type_embeddings(token_type_ids)  # (B, T, C)
        return self.dropout(self.norm(x))


class BertBlock(nn.Module):
    """Post-LN block: x = LN(x + drop(attn(x))); x = LN(x + drop(ffn(x)))."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, dropout=cfg.attn_dropout)
        self.attn_dropout = Dropout(cfg.dropout)  # residual dropout on the attention branch
        self.attn_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        # FeedForward ends with its own Dropout(cfg.dropout): that is the FFN branch's residual dropout.
        self.ffn = FeedForward(cfg.d_model, cfg.d_ff, dropout=cfg.dropout, activation=cfg.activation)
        self.ffn_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        """x (B, T, C) -> (B, T, C). is_causal: position t attends only to positions <= t
        (BERT never sets it; XLM's CLM mode reuses this block with it)."""
        x = self.attn_norm(
            x + self.attn_dropout(self.attn(x, key_padding_mask=key_padding_mask, is_causal=is_causal))
        )  # (B, T, C)
        x = self.ffn_norm(x + self.ffn(x))  # (B, T, C)
        return x


def _init_bert_weights(module: nn.Module, cfg: BertConfig) -> None:
    """The single init policy: normal(0, init_std) weights, zero biases, LayerNorm = identity,
    padding embedding row zeroed."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=cfg.init_std)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    # Last, because a tied output projection (visited after the embedding) re-draws the whole matrix.
    for m in module.modules():
        if isinstance(m, nn.Embedding) and m.padding_idx is not None:
            with torch.no_grad():
                m.weight[m.padding_idx].zero_()


class BertModel(nn.Module):
    """The BERT encoder: embeddings followed by n_layers post-LN blocks."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = BertEmbeddings(cfg)
        self.blocks = nn.ModuleList([BertBlock(cfg) for _ in range(cfg.n_layers)])
        _init_bert_weights(self, cfg)

    def forward(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
    ) -> EncoderOutput:
        """input_ids (B, T) long; token_type_ids (B, T) long (default all 0);
        attention_mask (B, T) bool/int with 1 = real token, 0 = padding (default: all real);
        position_ids (B, T) long (default 0..T-1)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
        T = input_ids.shape[1]
        if T > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {T} exceeds max_seq_len={self.cfg.max_seq_len}")
        key_padding_mask = None if attention_mask is None else attention_mask.bool()  # (B, T), True = real

        x = self.embeddings(input_ids, token_type_ids=token_type_ids, position_ids=position_ids)  # (B, T, C)
        for block in self.blocks:
            x = block(x, key_padding_mask=key_padding_mask)  # (B, T, C)
        return EncoderOutput(hidden=x)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        return count_parameters(self, exclude_embeddings=exclude_embeddings)


class BertMLMHead(nn.Module):
    """Masked-LM head: dense -> activation -> LayerNorm -> decoder to V, decoder weight tied
    to the word embeddings; the head owns only the output bias."""

    def __init__(self, cfg: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.dense = nn.Linear(cfg.d_model, cfg.d_model)
        self.act = make_activation(cfg.activation)
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.decoder = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.decoder.weight = word_embeddings.weight  # tied: same Parameter, (V, C)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def transform(self, hidden: Tensor) -> Tensor:
        """dense -> activation -> LayerNorm: (..., C) -> (..., C), what the decoder projects."""
        return self.norm(self.act(self.dense(hidden)))

    def forward(self, hidden: Tensor) -> Tensor:
        """hidden (..., C), e.g. (N, C) or (B, T, C) -> logits (..., V)."""
        return self.decoder(self.transform(hidden)) + self.bias  # (..., V)

    def score(self, hidden: Tensor, targets: Tensor) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor] | None]:
        """hidden (N, C), targets (N,) -> (nll, hits) with the decoder fused into the cross-entropy
        (`linear_cross_entropy`): no (N, V) logits; hits (arg-max accuracy counts) in eval mode."""
        return linear_cross_entropy(self.transform(hidden), self.decoder.weight, targets, bias=self.bias,
                                    count_hits=not self.training)


def pretraining_output(hidden: Tensor, head: BertMLMHead, mlm_positions: Tensor | None, mlm_targets: Tensor | None,
                       nsp_logits: Tensor | None = None) -> PreTrainingOutput:
    """The MLM head's part of a pre-training forward (BERT's and XLM's): logits at every position, at
    `mlm_positions` only, or, with `mlm_targets` (one per selected position), the fused loss."""
    if mlm_positions is None:
        if mlm_targets is not None:
            raise ValueError("mlm_targets needs mlm_positions (the positions they belong to)")
        return PreTrainingOutput(hidden=hidden, mlm_logits=head(hidden), nsp_logits=nsp_logits)  # (B, T, V)
    selected = select_positions(hidden, mlm_positions)  # (N, C)
    if mlm_targets is None:
        return PreTrainingOutput(hidden=hidden, mlm_logits=head(selected), nsp_logits=nsp_logits)  # (N, V)
    nll, hits = head.score(selected, mlm_targets)
    return PreTrainingOutput(hidden=hidden, mlm_logits=None, nsp_logits=nsp_logits, mlm_nll=nll, mlm_hits=hits)


class BertPooler(nn.Module):
    """dense + tanh on the [CLS] (position 0) hidden state; reusable by classification heads."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, hidden: Tensor) -> Tensor:
        cls = hidden[:, 0]  # (B, T, C) -> (B, C)
        return torch.tanh(self.dense(cls))  # (B, C)


class BertNSPHead(nn.Module):
    """Next-sentence prediction: pooler then Linear(C, 2)."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.pooler = BertPooler(cfg)
        self.classifier = nn.Linear(cfg.d_model, 2)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.classifier(self.pooler(hidden))  # (B, T, C) -> (B, 2)


class BertForPreTraining(nn.Module):
    """BertModel + MLM head (+ NSP head unless nsp=False). Returns logits, never a loss."""

    def __init__(self, cfg: BertConfig, nsp: bool = True):
        super().__init__()
        self.cfg = cfg
        self.bert = BertModel(cfg)
        self.mlm_head = BertMLMHead(cfg, self.bert.embeddings.word_embeddings)
        self.nsp_head = BertNSPHead(cfg) if nsp else None
        # Re-apply the same policy to the whole model so the heads are covered too.
        _init_bert_weights(self, cfg)

    def forward(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        mlm_positions: Tensor | None = None,
        position_ids: Tensor | None = None,
        mlm_targets: Tensor | None = None,
    ) -> PreTrainingOutput:
        """mlm_positions: optional (B, T) bool, True where an MLM prediction is needed, or the flat
        indices of its True entries (`select_positions`). When given,
        only those rows are projected to the vocabulary and mlm_logits is (N, V), rows in
        row-major order (torch boolean indexing); otherwise mlm_logits is (B, T, V).
        mlm_targets: optional (N,) token ids for those rows: then the head is fused into the loss and
        the output carries mlm_nll (and, in eval mode, mlm_hits) instead of logits."""
        hidden = self.bert(
            input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask, position_ids=position_ids
        ).hidden  # (B, T, C)
        nsp_logits = self.nsp_head(hidden) if self.nsp_head is not None else None  # (B, 2)
        return pretraining_output(hidden, self.mlm_head, mlm_positions, mlm_targets, nsp_logits)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        return count_parameters(self, exclude_embeddings=exclude_embeddings)


# ----------------------------------------------------------------------------- fine-tuning models


def classifier_dropout_p(num_labels: int, classifier_dropout: float | None, default: float) -> float:
    """Validate a classification head's arguments; return its dropout probability
    (``classifier_dropout``, or the encoder's ``default`` dropout when None, as in HF)."""
    if not isinstance(num_labels, int) or isinstance(num_labels, bool) or num_labels <= 0:
        raise ValueError(f"num_labels must be a positive int, got {num_labels!r}")
    p = default if classifier_dropout is None else classifier_dropout
    if not 0.0 <= p < 1.0:
        raise ValueError(f"classifier_dropout must be in [0, 1), got {p!r}")
    return p


class BertForSequenceClassification(nn.Module):
    """BertModel + pooler (dense + tanh on [CLS]) -> dropout -> Linear(C, num_labels).

    ``bert`` is a plain ``BertModel``, so a pretrained encoder transfers with
    ``clf.bert.load_state_dict(pretrained.bert.state_dict())``. Returns logits, never a loss.
    """

    def __init__(self, cfg: BertConfig, num_labels: int, classifier_dropout: float | None = None):
        super().__init__()
        self.cfg = cfg
        self.num_labels = num_labels
        self.bert = BertModel(cfg)
        self.pooler = BertPooler(cfg)
        self.dropout = Dropout(classifier_dropout_p(num_labels, classifier_dropout, cfg.dropout))
        self.classifier = nn.Linear(cfg.d_model, num_labels)
        _init_bert_weights(self, cfg)

    def forward(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
    ) -> ClassifierOutput:
        """Inputs as ``BertModel.forward`` -> logits (B, num_labels)."""
        hidden = self.bert(
            input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask, position_ids=position_ids
        ).hidden  # (B, T, C)
        logits = self.classifier(self.dropout(self.pooler(hidden)))  # (B, C) -> (B, num_labels)
        return ClassifierOutput(hidden=hidden, logits=logits)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        return count_parameters(self, exclude_embeddings=exclude_embeddings)


class BertForTokenClassification(nn.Module):
    """BertModel -> dropout -> Linear(C, num_labels) at every position (tagging, NER).

    Padding never leaks into real positions (attention masks padded keys), so the logits at real
    tokens do not depend on how much padding follows. Returns logits, never a loss.
    """

    def __init__(self, cfg: BertConfig, num_labels: int, classifier_dropout: float | None = None):
        super().__init__()
        self.cfg = cfg
        self.num_labels = num_labels
        self.bert = BertModel(cfg)
        self.dropout = Dropout(classifier_dropout_p(num_labels, classifier_dropout, cfg.dropout))
        self.classifier = nn.Linear(cfg.d_model, num_labels)
        _init_bert_weights(self, cfg)

    def forward(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
    ) -> ClassifierOutput:
        """Inputs as ``BertModel.forward`` -> logits (B, T, num_labels)."""
        hidden = self.bert(
            input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask, position_ids=position_ids
        ).hidden  # (B, T, C)
        logits = self.classifier(self.dropout(hidden))  # (B, T, num_labels)
        return ClassifierOutput(hidden=hidden, logits=logits)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        return count_parameters(self, exclude_embeddings=exclude_embeddings)
