"""Pretraining objectives as plain callables: `objective(model, batch, step) -> ObjectiveOutput`.

An objective knows which model outputs its terms need and how to score them; the trainer
(`lit_tf.lit`) only back-propagates the weighted loss, logs the terms and accumulates the
counts. Each term is reported as `(loss_sum, n_targets)` so averages are exact across
accumulation and devices.

- `MaskedLMObjective`: BERT's MLM (+ NSP).
- `CausalLMObjective`: next-token prediction (GPT).
- `CrossLingualObjective`: XLM's weighted mix of MLM/CLM on monolingual streams and TLM on
  parallel pairs, weights optionally scheduled over steps, plus an optional
  language-adversarial term through gradient reversal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lit_tf.models.xlm import mean_pool
from lit_tf.objectives.crosslingual import PiecewiseLinear, language_adversarial_loss
from lit_tf.objectives.losses import (
    IGNORE_INDEX,
    clm_loss,
    masked_accuracy,
    mlm_loss,
    next_token_targets,
    nsp_loss,
    shifted_targets,
    weighted_sum,
)

Count = tuple[Tensor, Tensor]  # (sum, n)


@dataclass
class ObjectiveOutput:
    loss: Tensor  # the weighted scalar to back-propagate
    terms: dict[str, Count]  # per-term (loss_sum, n_targets), e.g. {"mlm": ..., "nsp": ...}
    accuracy: dict[str, Count] = field(default_factory=dict)  # per-term (n_correct, n)
    # per-term (predicted ids, gold ids) for evaluation metrics (fine-tuning objectives)
    predictions: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)


def _mean(c: Count) -> Tensor:
    s, n = c
    return s / n.clamp(min=1).to(s.dtype)


class OneTermObjective:
    """An objective whose loss is the mean of its single term (`terms[0]`)."""

    terms: tuple[str, ...]

    def combine(self, terms: Mapping[str, Count], step: int = 0) -> Tensor:
        """The loss of per-term `(sum, n)` counts: of one batch, or summed over a whole evaluation."""
        return _mean(terms[self.terms[0]])


def _check_weights(weights: Mapping[str, object], expected: set[str], where: str = "objective.weights") -> None:
    extra = set(weights) - expected
    if extra:
        raise ValueError(f"{where}: unknown terms {sorted(extra)}; this objective has {sorted(expected)}")


def attention_mask(batch: Mapping[str, Tensor]) -> Tensor | None:
    """The batch's attention mask, or None when the collator found no padding in it (packed
    blocks): attention then runs without a mask, which lets SDPA pick its flash kernels."""
    return None if batch.get("no_padding") else batch["attention_mask"]


def mlm_positions(batch: Mapping[str, Tensor]) -> Tensor:
    """Where MLM predictions are needed: the collator's flat indices when it gave them (no
    device-to-host sync in the step), else the bool mask of the labels."""
    return batch["mlm_index"] if "mlm_index" in batch else batch["mlm_labels"] != IGNORE_INDEX


def _accuracy(model: nn.Module, logits: Tensor, targets: Tensor) -> Count | None:
    """Arg-max accuracy counts for evaluation; None in training (an arg-max over the logits that no
    training metric uses)."""
    return None if model.training else masked_accuracy(logits.detach(), targets)


def mlm_targets(batch: Mapping[str, Tensor]) -> Tensor:
    """The (N,) MLM targets in the row-major order of `mlm_positions`: the collator's, else gathered."""
    if "mlm_targets" in batch:
        return batch["mlm_targets"]
    labels = batch["mlm_labels"]
    return labels[labels != IGNORE_INDEX]


def masked_lm_forward(model: nn.Module, batch: Mapping[str, Tensor], fused: bool, **inputs) -> tuple[Any, Count, Count | None]:
    """The model's forward on an MLM (or TLM) batch and that term's (loss, accuracy counts).

    fused: the head scores the targets fused into the cross-entropy (`mlm_targets=`), no (N, V)
    logits; else logits, then the loss. No accuracy in training (an arg-max over N x V that no
    training metric uses)."""
    targets = mlm_targets(batch)
    if fused:
        out = model(batch["input_ids"], mlm_positions=mlm_positions(batch), mlm_targets=targets, **inputs)
        return out, out.mlm_nll, out.mlm_hits
    out = model(batch["input_ids"], mlm_positions=mlm_positions(batch), **inputs)
    return out, mlm_loss(out.mlm_logits, targets), _accuracy(model, out.mlm_logits, targets)


@dataclass
class MaskedLMObjective:
    """MLM, optionally with BERT's next-sentence prediction (`nsp=True`).

    Expects batches from `lit_tf.data.pretraining.MLMCollator`: `input_ids` (already masked),
    `attention_mask`, `token_type_ids`, `mlm_labels` (IGNORE_INDEX where not predicted) and,
    with NSP, `nsp_labels`.
    """

    nsp: bool = True
    weights: Mapping[str, float] = field(default_factory=lambda: {"mlm": 1.0, "nsp": 1.0})
    fused_loss: bool = True  # the MLM decoder fused into the cross-entropy (`BertForPreTraining(mlm_targets=)`)

    def __post_init__(self) -> None:
        expected = {"mlm", "nsp"} if self.nsp else {"mlm"}
        _check_weights(self.weights, expected)
        self.weights = {k: float(self.weights.get(k, 1.0)) for k in sorted(expected)}

    @property
    def terms(self) -> tuple[str, ...]:
        return tuple(self.weights)

    val_terms = terms

    def __call__(self, model: nn.Module, batch: Mapping[str, Tensor], step: int = 0) -> ObjectiveOutput:
        out, loss_c, acc_c = masked_lm_forward(model, batch, self.fused_loss, token_type_ids=batch.get("token_type_ids"),
                                               attention_mask=attention_mask(batch))
        terms, acc = {"mlm": loss_c}, {} if acc_c is None else {"mlm": acc_c}
        if self.nsp:
            if out.nsp_logits is None or "nsp_labels" not in batch:
                raise ValueError("objective.nsp=true needs a model with an NSP head and batches with nsp_labels")
            terms["nsp"] = nsp_loss(out.nsp_logits, batch["nsp_labels"])
            if (hits := _accuracy(model, out.nsp_logits, batch["nsp_labels"])) is not None:
                acc["nsp"] = hits
        return ObjectiveOutput(loss=self.combine(terms), terms=terms, accuracy=acc)

    def combine(self, terms: Mapping[str, Count], step: int = 0) -> Tensor:
        """The loss of per-term `(sum, n)` counts: of one batch, or summed over a whole evaluation."""
        return weighted_sum(terms, self.weights)


@dataclass
class CausalLMObjective(OneTermObjective):
    """Next-token prediction. Batches: `input_ids`, `attention_mask`, `labels` (IGNORE_INDEX at padding).

    fused_loss: the model scores the shifted targets with its head fused into the cross-entropy
    (`GPTForCausalLM.forward(targets=...)`), so the (B, T, V) logits never exist; False: full
    logits, then the loss (same value within fp32 rounding)."""

    fused_loss: bool = True

    @property
    def terms(self) -> tuple[str, ...]:
        return ("clm",)

    val_terms = terms

    def __call__(self, model: nn.Module, batch: Mapping[str, Tensor], step: int = 0) -> ObjectiveOutput:
        labels = batch["labels"]
        if self.fused_loss:
            out = model(batch["input_ids"], attention_mask=attention_mask(batch), targets=shifted_targets(labels))
            term, hits = out.nll, out.hits
        else:
            out = model(batch["input_ids"], attention_mask=attention_mask(batch))
            term = clm_loss(out.lm_logits, labels)
            hits = _accuracy(model, *next_token_targets(out.lm_logits, labels))
        acc = {} if hits is None else {"clm": hits}
        return ObjectiveOutput(loss=self.combine({"clm": term}), terms={"clm": term}, accuracy=acc)


class CrossLingualObjective(nn.Module):
    """XLM pretraining: a weighted sum over the sub-batches of one step.

    A batch maps a *name* to a sub-batch: training steps carry one sub-batch per term
    (`{"mlm": ..., "tlm": ...}`, the language drawn by alpha sampling), validation batches one
    per stream (`{"es/mlm": ...}`), so metrics come out per language. Each sub-batch says its
    `term` ("mlm", "tlm" or "clm") and carries `input_ids`, `lang_ids`, `position_ids`,
    `attention_mask` and `mlm_labels` (MLM/TLM) or `labels` (CLM).

    Args:
        weights: per term type (`mlm`, `tlm`, `clm`, `adv`), optionally per stream (`mlm/es`,
            `tlm/en-es`, overriding the term's weight for that stream): a float or an XLM-style
            schedule string "step:value,..." (piecewise linear, e.g. "0:1,2000:0.1").
            Terms with weight 0 still get metrics.
        stream_names: validation stream names (e.g. ["en", "es", "en-es"]) for the metric list.
        discriminator: optional `LanguageDiscriminator`; with `weights["adv"]` it adds a
            language-adversarial term on mean-pooled monolingual states (gradient reversal).
        adv_lambda: gradient-reversal scale.
        fused_loss: MLM/TLM heads fused into the cross-entropy (`mlm_targets=`), as `MaskedLMObjective`.
    """

    TERMS = ("mlm", "tlm", "clm", "adv")

    def __init__(
        self, weights: Mapping[str, float | str], stream_terms: Mapping[str, str],
        discriminator: nn.Module | None = None, adv_lambda: float = 1.0, fused_loss: bool = True,
    ) -> None:
        super().__init__()
        self.fused_loss = bool(fused_loss)
        _check_weights({k.split("/")[0]: v for k, v in weights.items()}, set(self.TERMS))
        self.schedules = {k: PiecewiseLinear.parse(v) for k, v in weights.items()}
        if discriminator is None and "adv" in self.schedules:
            raise ValueError("objective.weights.adv needs objective.adversarial.enabled=true")
        self.discriminator = discriminator
        self.adv_lambda = float(adv_lambda)
        self.stream_terms = dict(stream_terms)  # stream name -> its term, e.g. {"en": "mlm", "en-es": "tlm"}

    @property
    def terms(self) -> tuple[str, ...]:
        return tuple(k for k in self.TERMS if k in self.schedules or any(s.startswith(k + "/") for s in self.schedules))

    @property
    def val_terms(self) -> tuple[str, ...]:
        return tuple(f"{s}/{t}" for s, t in self.stream_terms.items())

    def weight(self, term: str, step: int, stream: str | None = None) -> float:
        """The weight of `term` at `step`; a `term/stream` entry overrides the term's own."""
        for key in (f"{term}/{stream}", term):
            if key in self.schedules:
                return self.schedules[key](step)
        return 0.0

    def forward(self, model: nn.Module, batch: Mapping[str, Mapping[str, Tensor]], step: int = 0) -> ObjectiveOutput:
        terms: dict[str, Count] = {}
        acc: dict[str, Count] = {}
        weighted: dict[str, Count] = {}  # "<stream>/<term>" (and "adv") -> counts: what the loss mixes
        for name, sub in batch.items():
            term = sub["term"]
            if term == "clm":
                out = model(sub["input_ids"], lang_ids=sub.get("lang_ids"), attention_mask=attention_mask(sub),
                            position_ids=sub.get("position_ids"))
                terms[name] = clm_loss(out.mlm_logits, sub["labels"])
                hits = _accuracy(model, *next_token_targets(out.mlm_logits, sub["labels"]))
            else:
                out, terms[name], hits = masked_lm_forward(model, sub, self.fused_loss, lang_ids=sub.get("lang_ids"),
                                                           attention_mask=attention_mask(sub),
                                                           position_ids=sub.get("position_ids"))
            if hits is not None:
                acc[name] = hits
            weighted[f"{sub.get('stream')}/{term}" if sub.get("stream") else term] = terms[name]
            if self.discriminator is not None and term in ("mlm", "clm") and self.training:
                pooled = mean_pool(out.hidden, sub["attention_mask"])  # (B, C)
                adv_logits = self.discriminator(pooled, self.adv_lambda)
                langs = sub["lang_ids"][:, 0]
                terms["adv"] = weighted["adv"] = language_adversarial_loss(adv_logits, langs)
                acc["adv"] = masked_accuracy(adv_logits.detach(), langs)  # training only: cheap (B, L)
        loss = self.combine(weighted, step)
        return ObjectiveOutput(loss=loss, terms=terms, accuracy=acc)

    def combine(self, terms: Mapping[str, Count], step: int = 0) -> Tensor:
        """The weighted loss of `(sum, n)` counts named `<stream>/<term>` (validation's names), a
        bare term, or `adv`: of one batch, or summed over a whole evaluation."""
        loss: Tensor | float = 0.0
        for name, count in terms.items():
            stream, _, term = name.rpartition("/")
            w = self.weight(term, step, stream or None)
            if w:
                loss = loss + w * _mean(count)
        if not torch.is_tensor(loss):  # every weight is 0 at this step: keep a graph for backward
            loss = sum(_mean(t) for t in terms.values()) * 0.0
        return loss

