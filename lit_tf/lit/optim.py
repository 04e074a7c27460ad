"""Optimizer parameter groups and learning-rate schedules (warmup + linear/cosine/constant decay),
and the typed `optim` config group."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from lit_tf.objectives.config import Config

SCHEDULES = ("linear", "cosine", "constant")


@dataclass(frozen=True)
class OptimConfig(Config):
    """The `optim` group (conf/optim/*.yaml): the optimizer and its learning-rate schedule."""

    group: ClassVar[str] = "optim"

    optimizer: dict[str, Any] = field(default_factory=dict)  # a Hydra partial (`_target_`, `_partial_: true`, lr, ...)
    weight_decay: float = 0.01  # applied to >= 2-D weights only (not biases or norms)
    schedule: str = "linear"  # decay after warmup: linear | cosine | constant
    warmup_steps: int | None = None  # warmup length in optimizer steps; null: warmup_ratio
    warmup_ratio: float = 0.0  # warmup length as a share of the run's steps
    min_lr_ratio: float = 0.0  # LR floor as a fraction of the peak

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule={self.schedule!r} is not one of {list(SCHEDULES)}")

    def lr_lambda(self, total_steps: int) -> Callable[[int], float]:
        """The LR multiplier by optimizer step of a run of `total_steps` steps."""
        warmup = warmup_steps_for(total_steps, self.warmup_steps, self.warmup_ratio)
        return lr_lambda(total_steps, warmup, self.schedule, self.min_lr_ratio)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay only matrices (>= 2-D weights); biases, norms and other vectors are not decayed."""
    decay, no_decay, seen = [], [], set()
    for _, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))  # tied weights appear once
        (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_lambda(total_steps: int, warmup_steps: int, schedule: str, min_lr_ratio: float) -> Callable[[int], float]:
    """Multiplier of the peak LR at optimizer step `step` (0-based)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"optim.schedule={schedule!r} is not one of {list(SCHEDULES)}")
    total_steps = max(1, total_steps)
    warmup_steps = min(max(0, warmup_steps), total_steps)

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        shape = 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return min_lr_ratio + (1.0 - min_lr_ratio) * shape

    return f


def build_optimizer(
    model: nn.Module, optimizer_factory: Callable[..., torch.optim.Optimizer], weight_decay: float
) -> torch.optim.Optimizer:
    return optimizer_factory(param_groups(model, weight_decay))


def warmup_steps_for(total_steps: int, warmup_steps: int | None, warmup_ratio: float) -> int:
    """`warmup_steps` when set (>= 0), else `warmup_ratio` of the run."""
    if warmup_steps is not None and warmup_steps >= 0:
        return int(warmup_steps)
    return int(round(warmup_ratio * total_steps))


def trainable(params: Iterable[nn.Parameter]) -> int:
    return sum(p.numel() for p in params if p.requires_grad)
