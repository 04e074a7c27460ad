"""ELECTRA (Clark et al., 2020): a small MLM generator corrupts the input, a BERT-layout encoder
(the discriminator) learns to tell which tokens were replaced.

Read top to bottom: config -> embeddings (shared by both towers) -> encoder -> generator head ->
discriminator head -> pre-training model (generator + discriminator) -> fine-tuning models.

The encoder blocks are BERT's post-LN ``BertBlock``. Unlike BERT, the embeddings have their own
width E (``embedding_size``), projected by a Linear to each tower's width when it differs. The
generator is a narrower ElectraModel (``generator_size`` times the discriminator's width) built
on the very same embedding module, and its MLM decoder is tied to the shared word embeddings
(paper §3.2). After pre-training only the discriminator (``ElectraForPreTraining.electra``) is kept.
The replaced-token-detection objective itself lives in ``lit_tf.objectives.electra``.

Shapes use B = batch, T = sequence length, E = embedding_size, C = d_model (discriminator),
Cg = the generator's d_model, V = vocab_size, N = number of masked positions selected for prediction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from lit_tf.models.bert import (
    BertBlock,
    BertConfig,
    _init_bert_weights,
    classifier_dropout_p,
    pretraining_output,
)
from lit_tf.models.layers import (
    ConfigMixin,
    Dropout,
    count_parameters,
    linear_cross_entropy,
    make_activation,
    select_positions,
)
from lit_tf.models.outputs import ClassifierOutput, EncoderOutput, PreTrainingOutput


def _scaled(n: int, fraction: float) -> int:
    """floor(n * fraction), tolerant of float error (768 * (1/3) is 255.99999999999997 in floats: 256)."""
    return math.floor(n * fraction + 1e-6)


@dataclass
class ElectraConfig(ConfigMixin):
    vocab_size: int  # number of tokens in the vocabulary (V)
    d_model: int = 256  # discriminator hidden size (C); ELECTRA-Small's 256
    n_layers: int = 12  # number of Transformer blocks of the discriminator
    n_heads: int = 4  # attention heads per block; must divide d_model
    d_ff: int = 1024  # inner size of the feed-forward MLP
    max_seq_len: int = 128  # number of learned position embeddings = longest accepted input
    dropout: float = 0.1  # dropout on embeddings and on both residual branches
    attn_dropout: float = 0.1  # dropout on the attention probabilities
    type_vocab_size: int = 2  # number of token types (segments A/B)
    layer_norm_eps: float = 1e-12  # epsilon of every LayerNorm
    init_std: float = 0.02  # std of the normal init of Linear and Embedding weights
    pad_id: int = 0  # id of the padding token; its embedding row is zero-initialised
    activation: str = "gelu"  # feed-forward / head activation: "gelu" (erf) or "gelu_tanh"
    # width E of the token / position / type embeddings that generator and discriminator share;
    # a Linear projects them to each tower's width when it differs
    embedding_size: int = 128
    # the generator's d_model, d_ff and heads as a fraction of the discriminator's (paper: 1/4 - 1/2
    # works best; ELECTRA-Small uses 1/4): d_model and d_ff are floored, heads rounded (at least 1)
    generator_size: float = 0.25
    generator_layers: int | None = None  # the generator's number of blocks (None: n_layers)

    def __post_init__(self) -> None:
        self.validate(positive=("type_vocab_size", "embedding_size"))
        name = type(self).__name__
        gs = self.generator_size
        if isinstance(gs, bool) or not isinstance(gs, (int, float)) or not 0.0 < gs <= 1.0:
            raise ValueError(f"{name}.generator_size must be in (0, 1], got {gs!r}")
        gl = self.generator_layers
        if gl is not None and (not isinstance(gl, int) or isinstance(gl, bool) or gl <= 0):
            raise ValueError(f"{name}.generator_layers must be a positive int or None, got {gl!r}")
        d, ff, h = self._generator_sizes()
        if d < 1 or ff < 1:
            raise ValueError(
                f"{name}.generator_size={gs} gives the generator d_model={d}, d_ff={ff}; both must be >= 1 "
                f"(d_model={self.d_model}, d_ff={self.d_ff})"
            )
        if d % h != 0:
            raise ValueError(
                f"{name}.generator_size={gs} gives the generator d_model={d} and n_heads={h} "
                f"(round({self.n_heads} * {gs})), which does not divide it; pick another generator_size"
            )

    def _generator_sizes(self) -> tuple[int, int, int]:
        """(d_model, d_ff, n_heads) of the generator tower."""
        gs = float(self.generator_size)
        return _scaled(self.d_model, gs), _scaled(self.d_ff, gs), max(1, round(self.n_heads * gs))

    def generator_config(self) -> ElectraConfig:
        """The generator tower's own config: this one with the generator's width, heads and depth
        (and generator_size=1.0: it describes itself). It shares embedding_size, the vocabulary and
        everything else, since it runs on the same embedding module."""
        d, ff, h = self._generator_sizes()
        return replace(self, d_model=d, d_ff=ff, n_heads=h, n_layers=self.generator_layers or self.n_layers,
                       generator_size=1.0, generator_layers=None)

    def as_bert_config(self) -> BertConfig:
        """The ``BertConfig`` holding the fields ELECTRA shares with BERT, used to build the reused
        ``BertBlock`` and the shared init policy."""
        shared = ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_seq_len", "dropout", "attn_dropout",
                  "type_vocab_size", "layer_norm_eps", "init_std", "pad_id", "activation")
        return BertConfig(**{f: getattr(self, f) for f in shared})


def _init_weights(module: nn.Module, cfg: ElectraConfig) -> None:
    """ELECTRA's single init policy is BERT's: normal(0, init_std) Linear/Embedding weights, zero
    biases, identity LayerNorms, zeroed padding row (last, so a tied decoder keeps it zero).
    Delegated so the policy is written once."""
    _init_bert_weights(module, cfg.as_bert_config())


class ElectraEmbeddings(nn.Module):
    """word + learned position + token-type embeddings of width E, then LayerNorm and dropout."""

    def __init__(self, cfg: ElectraConfig):
        super().__init__()
        E = cfg.embedding_size
        self.word_embeddings = nn.Embedding(cfg.vocab_size, E, padding_idx=cfg.pad_id)
        self.position_embeddings = nn.Embedding(cfg.max_seq_len, E)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, E)
        self.norm = nn.LayerNorm(E, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.dropout)

    def forward(
        self, input_ids: Tensor, token_type_ids: Tensor | None = None, position_ids: Tensor | None = None
    ) -> Tensor:
        """input_ids (B, T) -> (B, T, E)."""
        T = input_ids.shape[1]
        x = self.word_embeddings(input_ids)  # (B, T, E)
        if position_ids is None:
            x = x + self.position_embeddings.weight[:T]  # (T, E), broadcast over B
        else:
            x = x + self.position_embeddings(position_ids)  # (B, T, E)
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]  # (E,): every token is of type 0
        else:
            x = x + self.token_type_embeddings(token_type_ids)  # (B, T, E)
        return self.dropout(self.norm(x))


class ElectraModel(nn.Module):
    """The ELECTRA encoder: embeddings (own, or a module shared with another tower), an optional
    E -> C projection, then n_layers post-LN BERT blocks."""

    def __init__(self, cfg: ElectraConfig, embeddings: ElectraEmbeddings | None = None):
        super().__init__()
        self.cfg = cfg
        if embeddings is not None:
            we = embeddings.word_embeddings
            if (we.num_embeddings, we.embedding_dim) != (cfg.vocab_size, cfg.embedding_size):
                raise ValueError(
                    f"shared embeddings are {we.num_embeddings} x {we.embedding_dim}, the config expects "
                    f"vocab_size x embedding_size = {cfg.vocab_size} x {cfg.embedding_size}"
                )
        self.embeddings = embeddings if embeddings is not None else ElectraEmbeddings(cfg)
        E, C = cfg.embedding_size, cfg.d_model
        self.embeddings_project = nn.Linear(E, C) if E != C else None
        block_cfg = cfg.as_bert_config()
        self.blocks = nn.ModuleList([BertBlock(block_cfg) for _ in range(cfg.n_layers)])
        _init_weights(self, cfg)

    def forward(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
    ) -> EncoderOutput:
        """input_ids (B, T) long; token_type_ids (B, T) long (default all 0);
        attention_mask (B, T) bool/int with 1 = real token, 0 = padding (default: all real);
        position_ids (B, T) long (default 0..T-1) -> hidden (B, T, C)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
        T = input_ids.shape[1]
        if T > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {T} exceeds max_seq_len={self.cfg.max_seq_len}")
        key_padding_mask = None if attention_mask is None else attention_mask.bool()  # (B, T), True = real

        x = self.embeddings(input_ids, token_type_ids=token_type_ids, position_ids=position_ids)  # (B, T, E)
        if self.embeddings_project is not None:
            x = self.embeddings_project(x)  # (B, T, C)
        for block in self.blocks:
            x = block(x, key_padding_mask=key_padding_mask)  # (B, T, C)
        return EncoderOutput(hidden=x)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        return count_parameters(self, exclude_embeddings=exclude_embeddings)


class ElectraGeneratorHead(nn.Module):
    """The generator's MLM head: dense (Cg -> E) -> activation -> LayerNorm(E) -> decoder to V, the
    decoder weight tied to the shared word embeddings (so it is E wide); the head owns only the
    output bias. Same interface as ``BertMLMHead`` (``transform`` / ``forward`` / ``score``), so
    ``bert.pretraining_output`` drives it."""

    def __init__(self, cfg_gen: ElectraConfig, word_embeddings: nn.Embedding):
        super().__init__()
        E, V = cfg_gen.embedding_size, cfg_gen.vocab_size
        self.dense = nn.Linear(cfg_gen.d_model, E)
        self.act = make_activation(cfg_gen.activation)
        self.norm = nn.LayerNorm(E, eps=cfg_gen.layer_norm_eps)
        self.decoder = nn.Linear(E, V, bias=False)
        self.decoder.weight = word_embeddings.weight  # tied: same Parameter, (V, E)
        self.bias = nn.Parameter(torch.zeros(V))

    def transform(self, hidden: Tensor) -> Tensor:
        """dense -> activation -> LayerNorm: (..., Cg) -> (..., E), what the decoder projects."""
        return self.norm(self.act(self.dense(hidden)))

    def forward(self, hidden: Tensor) -> Tensor:
        """hidden (..., Cg), e.g. (N, Cg) -> logits (..., V)."""
        return self.decoder(self.transform(hidden)) + self.bias  # (..., V)

    def score(self, hidden: Tensor, targets: Tensor) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor] | None]:
        """hidden (N, Cg), targets (N,) -> (nll, hits), the decoder fused into the cross-entropy
        (no (N, V) logits); hits (arg-max accuracy counts) in eval mode only."""
        return linear_cross_entropy(self.transform(hidden), self.decoder.weight, targets, bias=self.bias,
                                    count_hits=not self.training)


class ElectraDiscriminatorHead(nn.Module):
    """Replaced-token detection: dense(C, C) -> activation -> Linear(C, 1) at every position
    (HF's ``discriminator_predictions``: its activation is the config's ``hidden_act``)."""

    def __init__(self, cfg: ElectraConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.d_model, cfg.d_model)
        self.act = make_activation(cfg.activation)
        self.dense_prediction = nn.Linear(cfg.d_model, 1)

    def forward(self, hidden: Tensor) -> Tensor:
        """hidden (B, T, C) -> logits (B, T); > 0 means "replaced"."""
        return self.dense_prediction(self.act(self.dense(hidden))).squeeze(-1)  # (B, T, 1) -> (B, T)


@dataclass
class ReplacedTokenOutput:
    """Output of ``ElectraForPreTraining.forward`` (the discriminator)."""

    hidden: Tensor  # (B, T, C) final-layer hidden states of the discriminator
    rtd_logits: Tensor  # (B, T) replaced-token logits: sigmoid > 0.5 means "this token was replaced"


class ElectraForPreTraining(nn.Module):
    """Generator (a narrow ElectraModel + tied MLM head) and discriminator (ElectraModel + RTD head)
    sharing one embedding module. ``generate`` runs the generator's MLM pass; ``forward`` runs the
    discriminator. Returns logits, never a loss: the sampling and both losses are the objective's
    (``lit_tf.objectives.electra.ReplacedTokenDetectionObjective``)."""

    def __init__(self, cfg: ElectraConfig):
        super().__init__()
        self.cfg = cfg
        # Registration order matters for tied names: the discriminator's come first, so the shared
        # embeddings' canonical state-dict keys are `electra.embeddings.*` (the generator's are aliases).
        self.electra = ElectraModel(cfg)
        gen_cfg = cfg.generator_config()
        self.generator = ElectraModel(gen_cfg, embeddings=self.electra.embeddings)  # same module object
        self.generator_head = ElectraGeneratorHead(gen_cfg, self.electra.embeddings.word_embeddings)
        self.discriminator_head = ElectraDiscriminatorHead(cfg)
        # Re-apply the same policy to the whole model so the heads are covered too.
        _init_weights(self, cfg)

    def generate(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        mlm_positions: Tensor | None = None,
        mlm_targets: Tensor | None = None,
        position_ids: Tensor | None = None,
    ) -> PreTrainingOutput:
        """The generator's MLM pass on the masked input_ids (B, T), with the semantics of
        ``BertForPreTraining.forward``: mlm_logits (N, V) at mlm_positions ((B, T) bool or flat
        indices), or (B, T, V) without them; with mlm_targets (N,) the head is fused into the loss
        (mlm_nll, and mlm_hits in eval mode; no logits). hidden is the generator's (B, T, Cg)."""
        hidden = self.generator(
            input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask, position_ids=position_ids
        ).hidden  # (B, T, Cg)
        return pretraining_output(hidden, self.generator_head, mlm_positions, mlm_targets)

    def generator_logits(self, hidden: Tensor, mlm_positions: Tensor) -> Tensor:
        """The generator head's logits (N, V) at mlm_positions of generator hidden states (B, T, Cg)
        (e.g. ``generate(...).hidden`` of a fused pass, to sample replacements from)."""
        return self.generator_head(select_positions(hidden, mlm_positions))  # (N, V)

    def forward(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
    ) -> ReplacedTokenOutput:
        """The discriminator on (corrupted) input_ids (B, T) -> rtd_logits (B, T)."""
        hidden = self.electra(
            input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask, position_ids=position_ids
        ).hidden  # (B, T, C)
        return ReplacedTokenOutput(hidden=hidden, rtd_logits=self.discriminator_head(hidden))

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        return count_parameters(self, exclude_embeddings=exclude_embeddings)


# ----------------------------------------------------------------------------- fine-tuning models


class ElectraClassificationHead(nn.Module):
    """On the first token: dropout -> dense(C, C) -> GELU -> dropout -> out_proj(C, num_labels).

    HF's ``ElectraClassificationHead`` layout. Its GELU is the exact (erf) one whatever the config's
    activation (HF hard-codes it too), so every config exports exactly. Both dropouts are one module."""

    def __init__(self, cfg: ElectraConfig, num_labels: int, dropout: float):
        super().__init__()
        self.dropout = Dropout(dropout)
        self.dense = nn.Linear(cfg.d_model, cfg.d_model)
        self.act = nn.GELU()
        self.out_proj = nn.Linear(cfg.d_model, num_labels)

    def forward(self, hidden: Tensor) -> Tensor:
        x = self.dropout(hidden[:, 0])  # (B, T, C) -> (B, C)
        x = self.dropout(self.act(self.dense(x)))  # (B, C)
        return self.out_proj(x)  # (B, num_labels)


class ElectraForSequenceClassification(nn.Module):
    """ElectraModel + ``ElectraClassificationHead`` on the first token. ``electra`` is a plain
    ``ElectraModel``: a pre-trained discriminator transfers with
    ``clf.electra.load_state_dict(pretrained.electra.state_dict())``. Returns logits, never a loss."""

    def __init__(self, cfg: ElectraConfig, num_labels: int, classifier_dropout: float | None = None):
        super().__init__()
        self.cfg = cfg
        self.num_labels = num_labels
        self.electra = ElectraModel(cfg)
        self.classifier = ElectraClassificationHead(
            cfg, num_labels, classifier_dropout_p(num_labels, classifier_dropout, cfg.dropout)
        )
        _init_weights(self, cfg)

    @property
    def dropout(self) -> Dropout:
        """The classifier's dropout (applied before and after its dense layer)."""
        return self.classifier.dropout

    def forward(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
    ) -> ClassifierOutput:
        """Inputs as ``ElectraModel.forward`` -> logits (B, num_labels)."""
        hidden = self.electra(
            input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask, position_ids=position_ids
        ).hidden  # (B, T, C)
        return ClassifierOutput(hidden=hidden, logits=self.classifier(hidden))

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        return count_parameters(self, exclude_embeddings=exclude_embeddings)


class ElectraForTokenClassification(nn.Module):
    """ElectraModel -> dropout -> Linear(C, num_labels) at every position (HF's layout).
    Returns logits, never a loss."""

    def __init__(self, cfg: ElectraConfig, num_labels: int, classifier_dropout: float | None = None):
        super().__init__()
        self.cfg = cfg
        self.num_labels = num_labels
        self.electra = ElectraModel(cfg)
        self.dropout = Dropout(classifier_dropout_p(num_labels, classifier_dropout, cfg.dropout))
        self.classifier = nn.Linear(cfg.d_model, num_labels)
        _init_weights(self, cfg)

    def forward(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
    ) -> ClassifierOutput:
        """Inputs as ``ElectraModel.forward`` -> logits (B, T, num_labels)."""
        hidden = self.electra(
            input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask, position_ids=position_ids
        ).hidden  # (B, T, C)
        return ClassifierOutput(hidden=hidden, logits=self.classifier(self.dropout(hidden)))  # (B, T, num_labels)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        return count_parameters(self, exclude_embeddings=exclude_embeddings)
