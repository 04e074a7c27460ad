"""What a run does when something goes wrong: non-finite steps, preemption signals, crashes.

- `NonFiniteGuard`: a non-finite loss or gradient norm either stops the run with an error naming
  the step (`trainer.nonfinite: stop`) or skips that optimizer step (`skip`: gradients dropped, so
  the weights and the optimizer state stay as they were; the count is logged as
  `train/nonfinite_skipped`). A checkpoint holding non-finite weights is never written, so the
  last good `last.ckpt` survives.
- `Preemption`: SIGTERM (flagged by Lightning's own handler), SIGUSR1 or SIGUSR2 (SLURM's `--signal`
  before the time limit; submitit's is USR2) writes `last.ckpt` at the end of the current batch,
  lets that batch's metrics reach the logger and stops with `Preempted` (exit status 128 + signal
  number); `ckpt_path=last` continues from it. It also records the exception that
  ended `fit` (Lightning turns Ctrl-C into `SystemExit(1)`), for the run's final status.
- `requeue_slurm_job`: in a SLURM batch job that was stopped that way, put the job back in the
  queue; the requeued job resumes from the checkpoint (lit_tf.lit.resume.requeued_checkpoint).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import lightning as L
import torch

from lit_tf.lit.parallel import holds_full_gradients

log = logging.getLogger("lit_tf")

NONFINITE_MODES = ("stop", "skip")
# Preemption notices besides SIGTERM (which Lightning itself flags): SLURM's `--signal` before the time limit
NOTICE_SIGNALS = ("SIGUSR1", "SIGUSR2")


class NonFiniteError(FloatingPointError):
    """A non-finite loss, gradient or weight in training (trainer.nonfinite=stop)."""


class Preempted(SystemExit):
    """Training stopped on a preemption signal after writing a checkpoint to resume from."""

    def __init__(self, signame: str, step: int, ckpt: str) -> None:
        signum = int(getattr(signal, signame, 15))
        super().__init__(128 + signum)  # the shell's "killed by signal" status: a job script sees non-zero
        self.signame, self.step, self.ckpt = signame, step, ckpt

    def __str__(self) -> str:
        return (f"stopped by {self.signame} after step {self.step}; checkpoint {self.ckpt} "
                "(resume with ckpt_path=last)")


def last_checkpoint_path(trainer: L.Trainer) -> str:
    cb = trainer.checkpoint_callback
    folder = getattr(cb, "dirpath", None) or Path(trainer.default_root_dir) / "checkpoints"
    name = getattr(cb, "CHECKPOINT_NAME_LAST", "last") + getattr(cb, "FILE_EXTENSION", ".ckpt")
    return str(Path(folder) / name)


def run_status(exc: BaseException, fit_exception: BaseException | None = None) -> str:
    """MLflow status of a run that ended with `exc`: KILLED for Ctrl-C and preemption, else FAILED.

    `fit_exception` is what ended `Trainer.fit` (`Preemption.exception`): Lightning turns Ctrl-C
    into `SystemExit(1)` and SIGTERM into `SIGTERMException`, so `exc` alone does not say.
    """
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    cause = fit_exception if isinstance(exc, SystemExit) and fit_exception is not None else exc
    return "KILLED" if isinstance(cause, (KeyboardInterrupt, Preempted, SIGTERMException)) else "FAILED"


class NonFiniteGuard(L.Callback):
    """Stop on (or skip) optimizer steps whose loss or gradient norm is NaN/inf.

    One device->host sync per optimizer step. With `precision=16-mixed` the GradScaler already
    skips steps with overflowing gradients, so only the loss is checked there. With several ranks
    the decision is one for all (any rank's bad loss or gradient counts), and under sharded
    strategies (FSDP) the norm is that of the whole gradient, not of this rank's shard. A finite gradient
    norm is logged as `train/grad_norm` and left on the module (`step_grad_norm`) for clipping.
    """

    def __init__(self, mode: str = "stop") -> None:
        if mode not in NONFINITE_MODES:
            raise ValueError(f"trainer.nonfinite={mode!r}: expected one of {', '.join(NONFINITE_MODES)}")
        self.mode = mode
        self.skipped = 0
        self._loss_ok: torch.Tensor | None = None
        self._loss: torch.Tensor | None = None

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        ok = torch.isfinite(loss.detach()).all()  # no sync here: checked once per optimizer step
        if self._loss_ok is None:
            self._loss_ok, self._loss = ok, loss.detach()
        else:
            self._loss_ok = self._loss_ok & ok
            self._loss = torch.where(ok, self._loss, loss.detach())

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        loss_ok, loss = self._loss_ok, self._loss
        self._loss_ok = self._loss = None
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        check_grads = bool(grads) and not str(trainer.precision).startswith("16")
        norm = torch.nn.utils.get_total_norm(grads, error_if_nonfinite=False) if check_grads else None
        if norm is not None and not holds_full_gradients(trainer.strategy):  # a shard on each rank: the norm of all
            norm = trainer.strategy.reduce(norm.pow(2), reduce_op="sum").sqrt()
        ok = torch.ones((), dtype=torch.bool, device=pl_module.device)
        if loss_ok is not None:
            ok = ok & loss_ok.to(ok.device)
        if norm is not None:
            ok = ok & torch.isfinite(norm).to(ok.device)
        if trainer.world_size > 1:  # one decision for all ranks (a rank's own loss may be the bad one)
            ok = torch.tensor(trainer.strategy.reduce_boolean_decision(bool(ok), all=True))
        if bool(ok):  # the one sync
            if norm is not None:
                # LitModule clips with this norm instead of computing it a second time, and it is logged
                pl_module.step_grad_norm = norm
                pl_module.log("train/grad_norm", norm, on_step=True, on_epoch=False)
            return
        step = trainer.global_step
        what = (f"loss ({float(loss):g})" if loss_ok is not None and not bool(loss_ok)
                else f"gradient norm ({float(norm):g})")
        if self.mode == "stop":
            raise NonFiniteError(
                f"{what} is not finite at training step {step} (trainer.nonfinite=stop): training stopped before "
                f"this step's update; the last checkpoint ({last_checkpoint_path(trainer)}, if any) is from an "
                "earlier step. Lower optim.optimizer.lr or raise optim.warmup_steps, or set trainer.nonfinite=skip"
            )
        optimizer.zero_grad(set_to_none=True)  # parameters without a grad are left alone by torch optimizers
        self.skipped += 1
        log.warning("%s is not finite at training step %d: step skipped (%d so far)", what, step, self.skipped)
        pl_module.log("train/nonfinite_skipped", float(self.skipped), on_step=True, on_epoch=False)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        for name, t in checkpoint.get("state_dict", {}).items():
            if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise NonFiniteError(
                    f"weights in {name} are not finite at training step {trainer.global_step}: checkpoint not written, "
                    f"the previous one ({last_checkpoint_path(trainer)}) is kept"
                )

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))


class Preemption(L.Callback):
    """Checkpoint and stop at the end of the current batch on SIGTERM, SIGUSR1 or SIGUSR2.

    Lightning already catches SIGTERM (it sets `trainer.received_sigterm` and, without this
    callback, would exit after the batch *without* a checkpoint). In a SLURM job this callback
    owns SIGUSR1/SIGUSR2 while training runs and does not chain the handlers it replaces:
    Lightning's auto-requeue (SIGUSR1: a checkpoint taken inside the signal handler, mid-step,
    then a requeue) and submitit's (SIGUSR2: requeue and exit at once, no checkpoint) would both
    cut the step short; the job is requeued once the checkpoint is written (`requeue_slurm_job`).
    Outside SLURM a handler that was there before still runs (it is chained).
    """

    def __init__(self) -> None:
        self.signame: str | None = None
        self.saved: tuple[str, int, str] | None = None  # (signal, step, checkpoint) once written
        self.exception: BaseException | None = None  # what ended fit, for the run's final status
        self._previous: dict[int, Any] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after Lightning registered its own handlers (Trainer._run), so we see (and may chain) them
        if threading.current_thread() is not threading.main_thread():
            return
        for name in NOTICE_SIGNALS:
            signum = getattr(signal, name, None)
            if signum is not None:
                self._previous[signum] = signal.getsignal(signum)
                signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signame = signal.Signals(signum).name
        previous = self._previous.get(signum)
        if callable(previous) and not os.environ.get("SLURM_JOB_ID"):
            previous(signum, frame)

    def _restore(self) -> None:
        if self._previous and threading.current_thread() is threading.main_thread():
            for signum, handler in self._previous.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
            self._previous = {}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        signame = self.signame or ("SIGTERM" if trainer.received_sigterm else None)
        if signame is None or self.saved is not None:
            return
        # the same point of the loop as ModelCheckpoint(every_n_train_steps), so it resumes exactly;
        # the run stops once this batch's metrics are logged (next hook below, or Lightning's SIGTERM exit)
        path = last_checkpoint_path(trainer)
        trainer.save_checkpoint(path)
        self.saved = (signame, trainer.global_step, path)

    def _stop_if_saved(self) -> None:
        if self.saved is not None:
            raise Preempted(*self.saved)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._stop_if_saved()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop_if_saved()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.exception = self.exception or exception
        self._restore()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore()


def requeue_slurm_job() -> bool:
    """Put this process's SLURM job back in the queue after a preemption notice (checkpoint written).

    The requeued job runs the same submission again (`SLURM_RESTART_COUNT` >= 1) and resumes from
    the checkpoint its earlier attempt left in its output folder. Only a job that SLURM still
    counts as RUNNING is requeued: that is the case for `scancel --signal=...`, for the `--signal`
    sent before the time limit and for a preemption notice. A job the user cancelled (plain
    `scancel`: it is already COMPLETING), one SLURM requeues itself, one submitted with
    `--no-requeue`, or an interactive `srun` is left as it is. Only the job's first task asks.
    Returns whether the job was requeued; every outcome is printed to stderr (the job's log).
    """
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id or os.environ.get("SLURM_PROCID", "0") != "0" or shutil.which("scontrol") is None:
        return False

    def scontrol(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=60)

    try:
        shown = scontrol("show", "job", "-o", job_id)
        state = next((w.split("=", 1)[1] for w in shown.stdout.split() if w.startswith("JobState=")), "UNKNOWN")
        if state != "RUNNING":
            print(f"lit_tf: SLURM job {job_id} not requeued: it is {state} (cancelled or ending)",
                  file=sys.stderr, flush=True)
            return False
        done = scontrol("requeue", job_id)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"lit_tf: SLURM job {job_id} not requeued: scontrol failed: {e}", file=sys.stderr, flush=True)
        return False
    if done.returncode != 0:
        print(f"lit_tf: SLURM job {job_id} not requeued: {done.stderr.strip() or done.stdout.strip()}",
              file=sys.stderr, flush=True)
        return False
    print(f"lit_tf: SLURM job {job_id} requeued: its next attempt resumes from the checkpoint",
          file=sys.stderr, flush=True)
    return True
