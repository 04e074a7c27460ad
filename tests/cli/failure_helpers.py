"""Test-only callbacks loaded by `train.py` subprocesses through `+callbacks.<name>._target_=...`
(tests/cli is put on PYTHONPATH): they make a run stop at a known step, so the tests can kill or
signal it there."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch


class BlockAt(L.Callback):
    """At the start of training step `step`, write `marker` and wait (up to `timeout_s`) for a
    signal: SIGKILL ends the process here; SIGTERM/SIGUSR1 let it finish this batch (then
    lit_tf's Preemption callback checkpoints and stops); SIGINT raises KeyboardInterrupt here."""

    def __init__(self, step: int, marker: str, timeout_s: float = 120.0) -> None:
        self.step, self.marker, self.timeout_s = int(step), Path(marker), float(timeout_s)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        if trainer.global_step != self.step:
            return
        self.marker.write_text(str(trainer.global_step))
        pre = next(cb for cb in trainer.callbacks if type(cb).__name__ == "Preemption")
        end = time.monotonic() + self.timeout_s
        while time.monotonic() < end and not (trainer.received_sigterm or pre.signame):
            time.sleep(0.02)


class NaNGradAt(L.Callback):
    """Make one parameter's gradient NaN at the given training steps (a transient bad batch), on
    every rank or (`rank`) on one rank only, after DDP has averaged the gradients."""

    def __init__(self, steps: list[int], rank: int | None = None) -> None:
        self.steps = {int(s) for s in steps}
        self.rank = rank

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step in self.steps and self.rank in (None, trainer.global_rank):
            p = next(p for p in pl_module.parameters() if p.grad is not None)
            p.grad.view(-1)[0] = torch.nan


class CrashAt(L.Callback):
    """Raise RuntimeError("simulated crash") at the start of training step `step` (in-process runs)."""

    def __init__(self, step: int) -> None:
        self.step = int(step)

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


class SlowStore(L.Callback):
    """Every metric batch takes `delay_s` longer to reach the MLflow store (a busy shared store or
    a distant server): the sender thread then still holds points when the process is killed."""

    def __init__(self, delay_s: float = 0.5) -> None:
        self.delay_s = float(delay_s)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        client = trainer.logger.experiment
        send = client.log_batch

        def slow_log_batch(*args, **kwargs):
            time.sleep(self.delay_s)
            return send(*args, **kwargs)

        client.log_batch = slow_log_batch
