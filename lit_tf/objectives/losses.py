"""Loss helpers shared by every pretraining objective.

Every loss here returns a ``(loss_sum, n)`` pair rather than a mean.  Keeping the
*sum* and the *count* separate lets the caller decide how to normalise: per
micro-batch mean (``loss_sum / n``), an exact token-mean over gradient-accumulation
steps or devices (sum both, then divide), or a weighted mix of several objectives
(:func:`weighted_sum`).

``IGNORE_INDEX`` is defined once here for the whole project: label tensors use it
for positions that carry no target (unmasked tokens, padding, ...).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "IGNORE_INDEX",
    "clm_loss",
    "masked_accuracy",
    "mlm_loss",
    "next_token_targets",
    "nsp_loss",
    "shifted_targets",
    "weighted_sum",
]

#: Label value meaning "no target at this position" (matches PyTorch's default).
IGNORE_INDEX: int = -100


def _flatten(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Flatten ``(..., C)`` logits and ``(...)`` targets to ``(N, C)`` / ``(N,)``."""
    if logits.dim() < 2:
        raise ValueError(f"logits must have shape (..., C); got {tuple(logits.shape)}")
    if logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} disagree: "
            "expected logits.shape[:-1] == targets.shape"
        )
    return logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)


def _sum_cross_entropy(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Summed fp32 cross-entropy over targets != IGNORE_INDEX, and their count."""
    logits, targets = _flatten(logits, targets)
    n = (targets != IGNORE_INDEX).sum()
    if targets.numel() == 0:
        # Keep a graph edge to the logits so backward() works on empty batches.
        return logits.float().sum() * 0.0, n
    loss_sum = F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum")
    return loss_sum, n


def mlm_loss(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Masked-LM loss as ``(loss_sum, n_targets)``.

    Args:
        logits: ``(N, V)`` scores (any leading shape ``(..., V)`` is flattened).
            Upcast to fp32 before the softmax so bf16/fp16 logits stay accurate.
        targets: ``(N,)`` token ids, ``IGNORE_INDEX`` where there is no target.

    Returns:
        ``loss_sum``: scalar fp32 sum of per-token cross-entropies over the
        non-ignored targets (``0`` with a grad path to ``logits`` when there are none);
        ``n_targets``: scalar int64 tensor counting them.
    """
    return _sum_cross_entropy(logits, targets)


def next_token_targets(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """The causal shift, done here and nowhere else: logits at position t score token t + 1.

    Args:
        logits: ``(B, T, V)`` unshifted scores from a causal model.
        labels: ``(B, T)`` the input ids, ``IGNORE_INDEX`` at padding.

    Returns:
        ``(B, T-1, V)`` logits and ``(B, T-1)`` targets, aligned.
    """
    return logits[:, :-1, :], labels[:, 1:]


def shifted_targets(labels: Tensor) -> Tensor:
    """The causal shift on labels instead of logits: (B, T) -> (B, T) with targets[:, t] =
    labels[:, t + 1] and IGNORE_INDEX at the last position (for heads that score given targets)."""
    return torch.cat([labels[:, 1:], labels.new_full((labels.shape[0], 1), IGNORE_INDEX)], dim=1)


def clm_loss(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Causal-LM loss ``(loss_sum, n_targets)`` from unshifted ``(B, T, V)`` logits and ``(B, T)`` labels."""
    return _sum_cross_entropy(*next_token_targets(logits, labels))


def nsp_loss(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Next-sentence-prediction loss as ``(loss_sum, n)``.

    Args:
        logits: ``(B, 2)`` scores (class 1 = "B is a random next sentence").
        labels: ``(B,)`` in ``{0, 1}``; ``IGNORE_INDEX`` entries are skipped.

    Same conventions as :func:`mlm_loss`.
    """
    return _sum_cross_entropy(logits, labels)


@torch.no_grad()
def masked_accuracy(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Arg-max accuracy as ``(n_correct, n)`` over targets != IGNORE_INDEX.

    Both results are scalar int64 tensors; no gradient is tracked.
    """
    logits, targets = _flatten(logits, targets)
    valid = targets != IGNORE_INDEX
    correct = (logits.argmax(dim=-1) == targets) & valid
    return correct.sum(), valid.sum()


def weighted_sum(
    terms: Mapping[str, tuple[Tensor, Tensor | int]],
    weights: Mapping[str, float],
) -> Tensor:
    """Mix several ``(loss_sum, n)`` terms into one scalar loss.

    Computes ``sum_k weights[k] * loss_sum_k / max(n_k, 1)``: each term is first
    reduced to its own mean (so a term with many targets, e.g. MLM tokens, does not
    drown one with few, e.g. NSP pairs), then the means are weighted.

    Only the terms named in ``weights`` contribute; extra entries in ``terms`` (for
    instance terms only logged as metrics) are ignored.

    Raises:
        ValueError: if ``weights`` is empty.
        KeyError: if a weight names a term that is not in ``terms``.
    """
    if not weights:
        raise ValueError("weighted_sum needs at least one weight")
    missing = [k for k in weights if k not in terms]
    if missing:
        raise KeyError(f"loss weight(s) {missing} name no loss term; available terms: {sorted(terms)}")
    total: Tensor | None = None
    for name, w in weights.items():
        loss_sum, n = terms[name]
        n_t = torch.as_tensor(n, device=loss_sum.device).clamp(min=1).to(loss_sum.dtype)
        term = loss_sum / n_t * float(w)
        total = term if total is None else total + term
    assert total is not None
    return total
