"""One entry per model family: everything the rest of lit_tf needs to know about it.

`FAMILIES` is an explicit table (no registry filled by imports). Code that needs to know a family
asks its spec: how to build its config and its models (pretraining, bare encoder, a head per
fine-tuning task), where the encoder sits in those models, whether it reads language ids, which
block is the unit of FSDP wrapping and activation checkpointing, its HF mapping, and how a
checkpoint's metadata rebuilds its pretraining model. Adding a family is its model file, its HF
mapping module, one entry here, its objective and its YAML.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from lit_tf.models.bert import (
    BertBlock,
    BertConfig,
    BertForPreTraining,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
)
from lit_tf.models.electra import (
    ElectraConfig,
    ElectraForPreTraining,
    ElectraForSequenceClassification,
    ElectraForTokenClassification,
    ElectraModel,
)
from lit_tf.models.gpt import GPTBlock, GPTConfig, GPTForCausalLM, GPTModel
from lit_tf.models.hf import bert as hf_bert
from lit_tf.models.hf import electra as hf_electra
from lit_tf.models.hf import gpt as hf_gpt
from lit_tf.models.hf import seq2seq as hf_seq2seq
from lit_tf.models.hf import xlm as hf_xlm
from lit_tf.models.hf.core import HFMapping
from lit_tf.models.seq2seq import Seq2SeqBlock, Seq2SeqConfig, Seq2SeqModel, Seq2SeqStack, init_from_xlm
from lit_tf.models.xlm import (
    XLMConfig,
    XLMForPreTraining,
    XLMForSequenceClassification,
    XLMForTokenClassification,
    XLMModel,
)


def _no_derived(objective: Mapping[str, Any], languages: Sequence[str]) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class FamilySpec:
    """What lit_tf knows about one model family; see the module docstring."""

    name: str
    config: type  # its config dataclass (with `from_dict` / `to_dict`)
    encoder: type  # the bare backbone, e.g. BertModel
    encoder_attr: str  # the attribute of its pretraining and head models that holds the encoder
    # its pretraining models by task name (the HF mapping's names), e.g. {"pretraining": MLM+NSP, "mlm": MLM}
    pretraining: Mapping[str, Callable[[Any], nn.Module]]
    pretraining_class: type  # the class every pretraining variant is an instance of
    objectives: tuple[str, ...]  # the pretraining objectives (`objective.name`) that train it
    heads: Mapping[str, type] = field(default_factory=dict)  # fine-tuning task -> head model class
    block: type = nn.Module  # its transformer block: the unit of FSDP wrapping and activation checkpointing
    lang_ids: bool = False  # its forward reads language ids (`lang_ids`) instead of segment ids
    causal_lm: bool = False  # a causal LM: it generates text
    masked_lm: bool = False  # its pretraining model returns masked-LM logits (a distillation teacher's)
    hf: HFMapping | None = None  # its HF correspondence (lit_tf.models.hf.<family>)
    # the pretraining variant an objective config trains (checkpoint metadata keeps that config)
    variant: Callable[[Mapping[str, Any]], str] | None = None
    # the variant name of a built pretraining model (when a family has several)
    variant_of: Callable[[nn.Module], str] | None = None
    # config fields the data decides: (objective config, languages) -> {field: value}
    derived: Callable[[Mapping[str, Any], Sequence[str]], dict[str, Any]] = _no_derived
    # matmul weights its pretraining heads apply per token on average, (config, objective config,
    # sequence length) -> weights (MFU's FLOPs count: lit_tf.lit.perf)
    head_weights: Callable[[Any, Mapping[str, Any], int], float] = lambda cfg, objective, seq_len: 0.0
    # a run of this family started from another family's checkpoint (`init_from`, e.g. seq2seq from XLM):
    # (model config fields, objective config, the source (lit_tf.lit.init_from.InitSource), the run's
    # DataModule, copy weights?) -> (the model, its languages); None: only fine-tuning takes init_from
    warm_start: Callable[[Mapping[str, Any], Mapping[str, Any], Any, Any, bool], tuple[nn.Module, list[str]]] | None = None
    warm_start_from: tuple[str, ...] = ()  # the families whose lit_tf checkpoints `warm_start` takes

    # ------------------------------------------------------------------ building
    def make_config(self, fields: Mapping[str, Any]):
        return self.config.from_dict(dict(fields))

    def pretraining_model(self, cfg: Any, objective: Mapping[str, Any]) -> nn.Module:
        """The pretraining model an objective config trains (also how a checkpoint is rebuilt:
        its metadata keeps the objective config)."""
        name = self.variant(objective) if self.variant else next(iter(self.pretraining))
        return self.pretraining[name](cfg)

    def build(self, task: str, cfg: Any, num_labels: int | None = None,
              classifier_dropout: float | None = None) -> nn.Module:
        """The model for `task`: "encoder", a pretraining variant, or a fine-tuning head."""
        if task == "encoder":
            return self.encoder(cfg)
        if task in self.pretraining:
            return self.pretraining[task](cfg)
        if task in self.heads:
            return self.heads[task](cfg, num_labels, classifier_dropout=classifier_dropout)
        raise ValueError(f"the {self.name!r} family has no {task!r} model; it has "
                         f"{['encoder', *self.pretraining, *self.heads]}")

    # ------------------------------------------------------------------ reading models
    def task_of(self, model: nn.Module) -> str | None:
        """The task name of one of this family's models, or None when it is not one of them."""
        if isinstance(model, self.encoder):
            return "encoder"
        for task, cls in self.heads.items():
            if isinstance(model, cls):
                return task
        if isinstance(model, self.pretraining_class):
            return self.variant_of(model) if self.variant_of else next(iter(self.pretraining))
        return None

    def encoder_of(self, model: nn.Module) -> nn.Module:
        """The encoder inside one of this family's models (the model itself when it is bare)."""
        return model if isinstance(model, self.encoder) else getattr(model, self.encoder_attr)

    def inputs(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor | None]:
        """The keyword inputs besides `input_ids` its models take from a fine-tuning batch."""
        side = {"lang_ids": batch.get("lang_ids")} if self.lang_ids else {"token_type_ids": batch.get("token_type_ids")}
        return {"attention_mask": batch.get("attention_mask"), **side}


def _bert_variant(objective: Mapping[str, Any]) -> str:
    return "pretraining" if objective.get("nsp") else "mlm"


def _mlm_head_weights(cfg: Any, objective: Mapping[str, Any], seq_len: int) -> float:
    """BERT's MLM head (dense + decoder) on the masked share of tokens, + the NSP pooler per sequence."""
    mlm_head = cfg.d_model * cfg.d_model + cfg.d_model * cfg.vocab_size
    if getattr(cfg, "causal", False):
        return mlm_head  # CLM (XLM's causal variant): every position predicts
    weights = float(objective.get("mlm_probability", 0.15)) * mlm_head
    if objective.get("nsp"):
        weights += (cfg.d_model * cfg.d_model + 2 * cfg.d_model) / seq_len  # pooler + NSP, once per sequence
    return weights


def _electra_head_weights(cfg: ElectraConfig, objective: Mapping[str, Any], seq_len: int) -> float:
    """ELECTRA's extra work per token beyond the discriminator's blocks: the generator tower (its
    blocks and attention), both embedding projections, the generator's MLM head on the masked share
    and the discriminator's head on every token."""
    g, E, V = cfg.generator_config(), cfg.embedding_size, cfg.vocab_size
    generator = g.n_layers * (4 * g.d_model * g.d_model + 2 * g.d_model * g.d_ff + 2 * seq_len * g.d_model)
    projections = (E * cfg.d_model if E != cfg.d_model else 0) + (E * g.d_model if E != g.d_model else 0)
    gen_head = float(objective.get("mlm_probability", 0.15)) * (g.d_model * E + E * V)
    return generator + projections + gen_head + cfg.d_model * cfg.d_model + cfg.d_model


# the model keys a warm start takes from its source checkpoint (a value given for them is ignored)
_SHAPE_KEYS = ("vocab_size", "tgt_vocab_size", "d_model", "n_layers", "n_decoder_layers", "n_heads", "d_ff",
               "max_seq_len", "pre_ln", "n_langs", "layer_norm_eps", "init_std", "activation")


def _seq2seq_from_xlm(fields: Mapping[str, Any], objective: Mapping[str, Any], init: Any, dm: Any,
                      copy: bool) -> tuple[nn.Module, list[str]]:
    """An encoder-decoder warm-started from an XLM checkpoint (Lample & Conneau, 2019): its shapes,
    layout, vocabulary and language embeddings; the data's source and target languages take the
    XLM's language ids. `copy`: load the XLM's weights (not when resuming)."""
    languages = list(init.languages or [])
    for key, lang in (("data.src_lang", dm.src_lang), ("data.tgt_lang", dm.tgt_lang)):
        if init.config.use_lang_emb and lang not in languages:
            raise ValueError(f"{key}={lang!r} is not a language the XLM was pretrained on ({languages})")
    ids = {"src_lang_id": languages.index(dm.src_lang), "tgt_lang_id": languages.index(dm.tgt_lang)} \
        if init.config.use_lang_emb else {}
    kept = {k: v for k, v in fields.items() if k not in ("family", *_SHAPE_KEYS)}
    cfg = Seq2SeqConfig.from_xlm(init.config, **kept, **ids)
    model = Seq2SeqModel(cfg)
    if copy:
        init_from_xlm(model, init.model if init.model is not None else init.encoder)
    return model, languages or [dm.src_lang, dm.tgt_lang]


def _seq2seq_head_weights(cfg: Seq2SeqConfig, objective: Mapping[str, Any], seq_len: int) -> float:
    """Beyond the encoder's blocks (what `perf.flops_per_token` counts per token): the decoder's
    blocks (self- and cross-attention projections, FFN) and the tied output layer on every target token."""
    C = cfg.d_model
    decoder = cfg.decoder_layers * (8 * C * C + 2 * C * cfg.d_ff + 4 * seq_len * C)
    return decoder + C * cfg.target_vocab_size


def _xlm_derived(objective: Mapping[str, Any], languages: Sequence[str]) -> dict[str, Any]:
    # the data decides the language count and whether attention is causal
    return {"n_langs": max(1, len(languages)), "causal": objective.get("mono_term", "mlm") == "clm"}


FAMILIES: dict[str, FamilySpec] = {
    "bert": FamilySpec(
        name="bert", config=BertConfig, encoder=BertModel, encoder_attr="bert",
        pretraining={"pretraining": lambda c: BertForPreTraining(c, nsp=True),
                     "mlm": lambda c: BertForPreTraining(c, nsp=False)},
        pretraining_class=BertForPreTraining, objectives=("mlm", "mlm_nsp"),
        heads={"seq_cls": BertForSequenceClassification, "token_cls": BertForTokenClassification},
        block=BertBlock, hf=hf_bert.MAPPING, variant=_bert_variant,
        variant_of=lambda m: "pretraining" if m.nsp_head is not None else "mlm", head_weights=_mlm_head_weights,
        masked_lm=True,
    ),
    "gpt": FamilySpec(
        name="gpt", config=GPTConfig, encoder=GPTModel, encoder_attr="transformer",
        pretraining={"clm": GPTForCausalLM}, pretraining_class=GPTForCausalLM, objectives=("clm",),
        block=GPTBlock, causal_lm=True, hf=hf_gpt.MAPPING,
        head_weights=lambda cfg, objective, seq_len: cfg.d_model * cfg.vocab_size,  # tied LM head on every position
    ),
    "xlm": FamilySpec(
        name="xlm", config=XLMConfig, encoder=XLMModel, encoder_attr="xlm",
        pretraining={"pretraining": XLMForPreTraining}, pretraining_class=XLMForPreTraining, objectives=("xlm",),
        heads={"seq_cls": XLMForSequenceClassification, "token_cls": XLMForTokenClassification},
        block=BertBlock,  # XLM stacks BERT's post-LN block
        lang_ids=True, hf=hf_xlm.MAPPING, derived=_xlm_derived, head_weights=_mlm_head_weights, masked_lm=True,
    ),
    "electra": FamilySpec(
        name="electra", config=ElectraConfig, encoder=ElectraModel, encoder_attr="electra",
        pretraining={"pretraining": ElectraForPreTraining}, pretraining_class=ElectraForPreTraining,
        objectives=("electra",),
        heads={"seq_cls": ElectraForSequenceClassification, "token_cls": ElectraForTokenClassification},
        block=BertBlock, hf=hf_electra.MAPPING, head_weights=_electra_head_weights,
    ),
    "seq2seq": FamilySpec(
        name="seq2seq", config=Seq2SeqConfig, encoder=Seq2SeqStack, encoder_attr="encoder",
        pretraining={"translation": Seq2SeqModel}, pretraining_class=Seq2SeqModel, objectives=("translation",),
        block=Seq2SeqBlock,  # its EncoderBlock and DecoderBlock both derive from it
        hf=hf_seq2seq.MAPPING, head_weights=_seq2seq_head_weights, warm_start=_seq2seq_from_xlm,
        warm_start_from=("xlm",),
    ),
}


def family(name: Any, key: str = "model.family") -> FamilySpec:
    """The spec of family `name`; a ValueError naming `key` and the known families otherwise."""
    if name not in FAMILIES:
        raise ValueError(f"{key}={name!r} is not one of {sorted(FAMILIES)}")
    return FAMILIES[name]


def family_of(model: nn.Module) -> FamilySpec:
    """The spec of the family a built model belongs to."""
    for spec in FAMILIES.values():
        if spec.task_of(model) is not None:
            return spec
    raise TypeError(f"{type(model).__name__} is not a model of any lit_tf family ({sorted(FAMILIES)})")


def encoder_families() -> list[str]:
    """The families that can be fine-tuned (those with heads)."""
    return [name for name, spec in FAMILIES.items() if spec.heads]
