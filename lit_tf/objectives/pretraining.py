"""Pretraining objectives as plain callables: `objective(model, batch) -> ObjectiveOutput`.

An objective knows which model outputs its terms need and how to score them; the trainer
(`lit_tf.lit`) only sums the weighted loss, logs the terms and accumulates the counts. Each term
is reported as `(loss_sum, n_targets)` so averages are exact across accumulation and devices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from lit_tf.objectives.losses import IGNORE_INDEX, masked_accuracy, mlm_loss, nsp_loss, weighted_sum

Count = tuple[Tensor, Tensor]  # (sum, n)


@dataclass
class ObjectiveOutput:
    loss: Tensor  # the weighted scalar to back-propagate
    terms: dict[str, Count]  # per-term (loss_sum, n_targets), e.g. {"mlm": ..., "nsp": ...}
    accuracy: dict[str, Count] = field(default_factory=dict)  # per-term (n_correct, n)


@dataclass
class MaskedLMObjective:
    """MLM, optionally with BERT's next-sentence prediction (`nsp=True`).

    Expects batches from `lit_tf.data.collate.MLMCollator`: `input_ids` (already masked),
    `attention_mask`, `token_type_ids`, `mlm_labels` (IGNORE_INDEX where not predicted) and,
    with NSP, `nsp_labels`.
    """

    nsp: bool = True
    weights: Mapping[str, float] = field(default_factory=lambda: {"mlm": 1.0, "nsp": 1.0})

    def __post_init__(self) -> None:
        expected = {"mlm", "nsp"} if self.nsp else {"mlm"}
        extra = set(self.weights) - expected
        if extra:
            raise ValueError(f"objective.weights: unknown terms {sorted(extra)}; this objective has {sorted(expected)}")
        self.weights = {k: float(self.weights.get(k, 1.0)) for k in sorted(expected)}

    def __call__(self, model: nn.Module, batch: Mapping[str, Tensor]) -> ObjectiveOutput:
        labels = batch["mlm_labels"]
        positions = labels != IGNORE_INDEX  # (B, T) bool
        out = model(
            batch["input_ids"],
            token_type_ids=batch.get("token_type_ids"),
            attention_mask=batch["attention_mask"],
            mlm_positions=positions,
        )
        targets = labels[positions]  # (N,) same row-major order as the gathered logits
        terms = {"mlm": mlm_loss(out.mlm_logits, targets)}
        acc = {"mlm": masked_accuracy(out.mlm_logits.detach(), targets)}
        if self.nsp:
            if out.nsp_logits is None or "nsp_labels" not in batch:
                raise ValueError("objective.nsp=true needs a model with an NSP head and batches with nsp_labels")
            terms["nsp"] = nsp_loss(out.nsp_logits, batch["nsp_labels"])
            acc["nsp"] = masked_accuracy(out.nsp_logits.detach(), batch["nsp_labels"])
        return ObjectiveOutput(loss=weighted_sum(terms, self.weights), terms=terms, accuracy=acc)


def count_tokens(batch: Mapping[str, Tensor]) -> Tensor:
    """Real (non-padding) tokens in a batch."""
    return batch["attention_mask"].sum() if "attention_mask" in batch else torch.tensor(batch["input_ids"].numel())
