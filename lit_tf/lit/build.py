"""Build models and objectives from their config groups (explicit tables, no import-time registry)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from torch import nn

from lit_tf.errors import LitTfError
from lit_tf.models import (
    BertBlock,
    BertConfig,
    BertForPreTraining,
    BertForSequenceClassification,
    BertForTokenClassification,
    GPTBlock,
    GPTConfig,
    GPTForCausalLM,
    LanguageDiscriminator,
    XLMConfig,
    XLMForPreTraining,
    XLMForSequenceClassification,
    XLMForTokenClassification,
)
from lit_tf.objectives.finetune import SequenceClassificationObjective, TokenClassificationObjective
from lit_tf.objectives.pretraining import CausalLMObjective, CrossLingualObjective, MaskedLMObjective


class Family(NamedTuple):
    """What the trainer needs to know about a model family."""

    config: type  # its config dataclass
    pretraining: type  # its pretraining model class
    objectives: tuple[str, ...]  # the pretraining objectives it can train
    block: type  # its transformer block: the unit of FSDP wrapping and activation checkpointing


FAMILIES: dict[str, Family] = {
    "bert": Family(BertConfig, BertForPreTraining, ("mlm", "mlm_nsp"), BertBlock),
    "gpt": Family(GPTConfig, GPTForCausalLM, ("clm",), GPTBlock),
    "xlm": Family(XLMConfig, XLMForPreTraining, ("xlm",), BertBlock),  # XLM stacks BERT's post-LN block
}
OBJECTIVES = ("mlm", "mlm_nsp", "clm", "xlm", "seq_cls", "token_cls")
# (family, fine-tuning task) -> (model class, attribute holding the encoder)
HEADS: dict[tuple[str, str], tuple[type, str]] = {
    ("bert", "seq_cls"): (BertForSequenceClassification, "bert"),
    ("bert", "token_cls"): (BertForTokenClassification, "bert"),
    ("xlm", "seq_cls"): (XLMForSequenceClassification, "xlm"),
    ("xlm", "token_cls"): (XLMForTokenClassification, "xlm"),
}


def model_config(model_cfg: Mapping[str, Any], vocab_size: int, pad_id: int = 0, **derived: Any):
    """(family, config dataclass) with `vocab_size` (and e.g. `n_langs`) taken from the data."""
    cfg = dict(model_cfg)
    family = cfg.pop("family", None)
    if family not in FAMILIES:
        raise LitTfError(f"model.family={family!r} is not one of {sorted(FAMILIES)}")
    if cfg.get("vocab_size") not in (None, vocab_size):
        raise LitTfError(
            f"model.vocab_size={cfg['vocab_size']} disagrees with the tokenizer ({vocab_size}); "
            "leave it unset: it comes from the tokenizer artifact"
        )
    cfg.update(vocab_size=vocab_size, pad_id=pad_id, **derived)
    config_cls = FAMILIES[family].config
    try:
        return family, config_cls.from_dict(cfg)
    except (TypeError, ValueError) as e:
        raise LitTfError(f"model: {e}") from e


def build_model(
    model_cfg: Mapping[str, Any], objective_cfg: Mapping[str, Any], vocab_size: int, pad_id: int = 0,
    languages: Sequence[str] = (),
) -> nn.Module:
    family = model_cfg.get("family")
    obj = objective_cfg.get("name")
    if family in FAMILIES and obj not in FAMILIES[family].objectives:
        raise ValueError(
            f"objective={obj!r} does not train model.family={family!r}; it takes objective in {list(FAMILIES[family].objectives)}"
        )
    derived = {}
    if family == "xlm":  # the data decides the language count and whether attention is causal
        derived = {"n_langs": max(1, len(languages)), "causal": objective_cfg.get("mono_term", "mlm") == "clm"}
    family, cfg = model_config(model_cfg, vocab_size, pad_id, **derived)
    if family == "bert":
        return BertForPreTraining(cfg, nsp=bool(objective_cfg.get("nsp", False)))
    return FAMILIES[family].pretraining(cfg)


def build_objective(
    objective_cfg: Mapping[str, Any], model: nn.Module | None = None, streams: Mapping[str, str] | None = None,
    n_langs: int = 2, fused_lm_loss: bool = True,
):
    """The objective callable for `objective_cfg`; `streams` maps XLM validation streams to their term;
    `fused_lm_loss`: language-model heads (causal LM, MLM/TLM) score their targets fused into the loss
    (`speed.fused_lm_loss`)."""
    name = objective_cfg.get("name")
    if name not in OBJECTIVES:
        raise ValueError(f"objective.name={name!r} is not one of {list(OBJECTIVES)}")
    if name == "clm":
        return CausalLMObjective(fused_loss=fused_lm_loss)
    if name == "seq_cls":
        return SequenceClassificationObjective()
    if name == "token_cls":
        return TokenClassificationObjective()
    if name == "xlm":
        adv = dict(objective_cfg.get("adversarial") or {})
        disc = None
        if adv.get("enabled"):
            if model is None:
                raise ValueError("objective.adversarial needs the model (for its d_model)")
            disc = LanguageDiscriminator(model.cfg.d_model, n_langs, hidden=adv.get("hidden"),
                                         dropout=float(adv.get("dropout", 0.1)))
        weights = dict(objective_cfg.get("weights") or {})
        if not adv.get("enabled"):
            weights.pop("adv", None)
        return CrossLingualObjective(weights, dict(streams or {}), discriminator=disc, adv_lambda=float(adv.get("lambda", 1.0)),
                                     fused_loss=fused_lm_loss)
    nsp = bool(objective_cfg.get("nsp", False))
    weights = dict(objective_cfg.get("weights") or {"mlm": 1.0, **({"nsp": 1.0} if nsp else {})})
    return MaskedLMObjective(nsp=nsp, weights=weights, fused_loss=fused_lm_loss)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    return {
        "n_params": int(model.num_parameters()),
        "n_params_non_embedding": int(model.num_parameters(exclude_embeddings=True)),
    }
