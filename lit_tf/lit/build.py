"""Build models and objectives from their config groups: the family table (lit_tf.models.families),
the task table (lit_tf.lit.tasks) and the pretraining objective table below (explicit tables, no
import-time registry)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from lit_tf.errors import LitTfError
from lit_tf.lit.metrics import ReplacedTokenMetrics
from lit_tf.lit.tasks import TASKS
from lit_tf.models import LanguageDiscriminator
from lit_tf.models.families import FAMILIES, family
from lit_tf.objectives.electra import ReplacedTokenDetectionObjective
from lit_tf.objectives.pretraining import CausalLMObjective, CrossLingualObjective, MaskedLMObjective
from lit_tf.objectives.translation import TranslationObjective


@dataclass(frozen=True)
class ObjectiveContext:
    """What a pretraining objective may need besides its config."""

    model: nn.Module | None = None  # the model it trains (e.g. for d_model)
    streams: Mapping[str, str] = field(default_factory=dict)  # XLM validation stream -> its term
    n_langs: int = 2
    fused_lm_loss: bool = True  # language-model heads score their targets fused into the loss (`speed.fused_lm_loss`)


def _masked_lm(cfg: Mapping[str, Any], ctx: ObjectiveContext) -> MaskedLMObjective:
    nsp = bool(cfg.get("nsp", False))
    weights = dict(cfg.get("weights") or {"mlm": 1.0, **({"nsp": 1.0} if nsp else {})})
    return MaskedLMObjective(nsp=nsp, weights=weights, fused_loss=ctx.fused_lm_loss)


def _cross_lingual(cfg: Mapping[str, Any], ctx: ObjectiveContext) -> CrossLingualObjective:
    adv = dict(cfg.get("adversarial") or {})
    disc = None
    if adv.get("enabled"):
        if ctx.model is None:
            raise ValueError("objective.adversarial needs the model (for its d_model)")
        disc = LanguageDiscriminator(ctx.model.cfg.d_model, ctx.n_langs, hidden=adv.get("hidden"),
                                     dropout=float(adv.get("dropout", 0.1)))
    weights = dict(cfg.get("weights") or {})
    if not adv.get("enabled"):
        weights.pop("adv", None)
    return CrossLingualObjective(weights, dict(ctx.streams), discriminator=disc, adv_lambda=float(adv.get("lambda", 1.0)),
                                 fused_loss=ctx.fused_lm_loss)


@dataclass(frozen=True)
class ObjectiveSpec:
    """A pretraining objective: how to build it, and the evaluation metric it feeds (if any)."""

    build: Callable[[Mapping[str, Any], ObjectiveContext], Any]
    data: str = "masked"  # the batches it reads (lit_tf.data.datamodule.build_datamodule): masked, causal, crosslingual, parallel
    metric: Callable[[], nn.Module] | None = None  # fed with the objective's `predictions` at validation


# Pretraining objectives by `objective.name`; fine-tuning ones come from the task table (lit_tf.lit.tasks).
OBJECTIVES: dict[str, ObjectiveSpec] = {
    "mlm": ObjectiveSpec(_masked_lm),
    "mlm_nsp": ObjectiveSpec(_masked_lm),
    "clm": ObjectiveSpec(lambda cfg, ctx: CausalLMObjective(fused_loss=ctx.fused_lm_loss), data="causal"),
    "xlm": ObjectiveSpec(_cross_lingual, data="crosslingual"),
    "electra": ObjectiveSpec(  # ELECTRA's replaced-token detection (Clark et al., 2020) on masked-LM batches
        lambda cfg, ctx: ReplacedTokenDetectionObjective(  # keys left null keep the objective's own defaults
            **{k: float(cfg[k]) for k in ("rtd_weight", "gen_weight", "temperature") if cfg.get(k) is not None},
            fused_loss=ctx.fused_lm_loss),
        metric=ReplacedTokenMetrics),
    "translation": ObjectiveSpec(  # label-smoothed cross-entropy of an encoder-decoder on parallel pairs
        lambda cfg, ctx: TranslationObjective(
            **{k: float(cfg[k]) for k in ("label_smoothing",) if cfg.get(k) is not None}),
        data="parallel"),
}


def model_config(model_cfg: Mapping[str, Any], vocab_size: int, pad_id: int = 0, **derived: Any):
    """(family, config dataclass) with `vocab_size` (and e.g. `n_langs`) taken from the data."""
    cfg = dict(model_cfg)
    name = cfg.pop("family", None)
    try:
        spec = family(name)
    except ValueError as e:
        raise LitTfError(str(e)) from None
    if cfg.get("vocab_size") not in (None, vocab_size):
        raise LitTfError(
            f"model.vocab_size={cfg['vocab_size']} disagrees with the tokenizer ({vocab_size}); "
            "leave it unset: it comes from the tokenizer artifact"
        )
    cfg.update(vocab_size=vocab_size, pad_id=pad_id, **derived)
    try:
        return name, spec.make_config(cfg)
    except (TypeError, ValueError) as e:
        raise LitTfError(f"model: {e}") from e


def build_model(
    model_cfg: Mapping[str, Any], objective_cfg: Mapping[str, Any], vocab_size: int, pad_id: int = 0,
    languages: Sequence[str] = (),
) -> nn.Module:
    """The pretraining model of `model.family` that `objective` trains."""
    name, obj = model_cfg.get("family"), objective_cfg.get("name")
    if name in FAMILIES and obj not in FAMILIES[name].objectives:
        raise ValueError(
            f"objective={obj!r} does not train model.family={name!r}; it takes objective in {list(FAMILIES[name].objectives)}"
        )
    derived = FAMILIES[name].derived(objective_cfg, languages) if name in FAMILIES else {}
    name, cfg = model_config(model_cfg, vocab_size, pad_id, **derived)
    return FAMILIES[name].pretraining_model(cfg, objective_cfg)


def objective_names() -> list[str]:
    return [*OBJECTIVES, *TASKS]


def build_objective(objective_cfg: Mapping[str, Any], ctx: ObjectiveContext | None = None):
    """The objective callable for `objective_cfg`: a fine-tuning task's, or a pretraining one's
    built with `ctx`."""
    name = objective_cfg.get("name")
    if name in TASKS:
        return TASKS[name].objective()
    if name not in OBJECTIVES:
        raise ValueError(f"objective.name={name!r} is not one of {objective_names()}")
    return OBJECTIVES[name].build(objective_cfg, ctx or ObjectiveContext())


def parameter_counts(model: nn.Module) -> dict[str, int]:
    return {
        "n_params": int(model.num_parameters()),
        "n_params_non_embedding": int(model.num_parameters(exclude_embeddings=True)),
    }
