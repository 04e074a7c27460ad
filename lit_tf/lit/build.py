"""Build models and objectives from their config groups (an explicit table, no import-time registry)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from lit_tf.models import BertConfig, BertForPreTraining
from lit_tf.objectives.pretraining import MaskedLMObjective

# family -> (config dataclass, pretraining model class). Later families add a row here.
FAMILIES: dict[str, tuple[type, type]] = {
    "bert": (BertConfig, BertForPreTraining),
}
OBJECTIVES = ("mlm", "mlm_nsp")


def model_config(model_cfg: Mapping[str, Any], vocab_size: int, pad_id: int = 0):
    cfg = dict(model_cfg)
    family = cfg.pop("family", None)
    if family not in FAMILIES:
        raise ValueError(f"model.family={family!r} is not one of {sorted(FAMILIES)}")
    if cfg.get("vocab_size") not in (None, vocab_size):
        raise ValueError(
            f"model.vocab_size={cfg['vocab_size']} disagrees with the tokenizer ({vocab_size}); "
            "leave it unset: it comes from the tokenizer artifact"
        )
    cfg.update(vocab_size=vocab_size, pad_id=pad_id)
    config_cls, _ = FAMILIES[family]
    try:
        return family, config_cls.from_dict(cfg)
    except ValueError as e:
        raise ValueError(f"model: {e}") from e


def build_model(model_cfg: Mapping[str, Any], objective_cfg: Mapping[str, Any], vocab_size: int, pad_id: int = 0):
    family, cfg = model_config(model_cfg, vocab_size, pad_id)
    _, model_cls = FAMILIES[family]
    if family == "bert":
        return BertForPreTraining(cfg, nsp=bool(objective_cfg.get("nsp", False)))
    return model_cls(cfg)  # pragma: no cover - families added later


def build_objective(objective_cfg: Mapping[str, Any]):
    name = objective_cfg.get("name")
    if name not in OBJECTIVES:
        raise ValueError(f"objective.name={name!r} is not one of {list(OBJECTIVES)}")
    nsp = bool(objective_cfg.get("nsp", False))
    weights = dict(objective_cfg.get("weights") or {"mlm": 1.0, **({"nsp": 1.0} if nsp else {})})
    return MaskedLMObjective(nsp=nsp, weights=weights)


def objective_terms(objective: Any) -> tuple[str, ...]:
    return tuple(objective.weights)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    return {
        "n_params": int(model.num_parameters()),
        "n_params_non_embedding": int(model.num_parameters(exclude_embeddings=True)),
    }
