"""The job's side of a sweep: find this job's Optuna trial through the shared study storage
and report validation metrics to it, stopping early when the pruner says so.

The sweeper passes only `trial.number`, `trial.study`, `trial.prune` (and `gpu` with a
GPU pool) on the job's command line; storage, metric and pruner come from the job's own Hydra
config (`hydra.sweeper.*`), so the lookup works the same in the sweeper's process, in a joblib worker
or on another SLURM node. Nothing is passed through globals.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import lightning as L

from lit_tf.lit.parallel import process_rank

if TYPE_CHECKING:  # Optuna is imported by sweep jobs only: a plain run does not pay for it
    import optuna

log = logging.getLogger(__name__)


class OptunaPruning(L.Callback):
    """Report `monitor` after every validation; when the trial should be pruned, stop training.

    Under DDP only rank 0 talks to the storage; its decision is broadcast so every rank stops
    at the same step. `pruned_step` is the global step of the decision (None: not pruned).
    """

    def __init__(self, trial: optuna.Trial | None, monitor: str | None):
        self.trial = trial
        self.monitor = monitor
        self.pruned_step: int | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        prune = False
        step = trainer.global_step
        if trainer.is_global_zero and self.trial is not None:
            if self.monitor not in trainer.callback_metrics:
                logged = sorted(k for k in trainer.callback_metrics if k.startswith("val"))
                raise KeyError(f"sweep metric '{self.monitor}' is not logged by this run; validation logs {logged}")
            value = float(trainer.callback_metrics[self.monitor])
            if math.isfinite(value):  # Optuna's pruners compare finite values only
                self.trial.report(value, step)
                prune = self.trial.should_prune()
        prune = trainer.strategy.broadcast(prune, src=0)
        if prune:
            self.pruned_step = step
            trainer.should_stop = True
            if self.trial is not None:
                log.info("trial %d pruned at step %d (%s)", self.trial.number, step, self.monitor)


@dataclass
class JobTrial:
    """This job's trial, its study and what the sweeper configured for it."""

    number: int
    study: optuna.Study | None  # None on DDP ranks > 0: they only follow rank 0's decisions
    metrics: list[str]
    pruning: bool

    def callback(self) -> OptunaPruning | None:
        if not self.pruning:
            return None
        if self.study is None:
            return OptunaPruning(None, None)
        import optuna

        from lit_tf.sweeping import study as st

        trial = optuna.trial.Trial(self.study, st.trial_id(self.study, self.number))
        return OptunaPruning(trial, self.metrics[0])

    def tags(self) -> dict[str, str]:
        """MLflow tags that make this run a child of the study's parent run."""
        if self.study is None:
            return {}
        tags = {"optuna.study_name": self.study.study_name, "optuna.trial_number": str(self.number)}
        from lit_tf.sweeping.study import STUDY_ATTR_PARENT_RUN

        parent = self.study.user_attrs.get(STUDY_ATTR_PARENT_RUN)
        if parent:
            tags["mlflow.parentRunId"] = parent
        return tags


def job_trial(cfg) -> JobTrial | None:
    """The trial this job runs for (None outside an Optuna sweep)."""
    tcfg = cfg.get("trial") or {}
    number = tcfg.get("number")
    if number is None:
        return None
    pruning = bool(tcfg.get("prune"))
    if process_rank() > 0:  # DDP ranks re-launched by Lightning: no storage access, follow rank 0
        return JobTrial(int(number), None, [], pruning)
    from hydra.core.hydra_config import HydraConfig

    from lit_tf.sweeping import study as st

    sweeper = HydraConfig.get().sweeper if HydraConfig.initialized() else None
    if sweeper is None or "study_name" not in sweeper:
        raise ValueError("trial.number is set but hydra.sweeper is not lit_tf's Optuna sweeper: "
                         "trial.* is filled in by `python train.py -m sweep=<name>`; leave it null")
    metrics, _ = st.objectives(sweeper.get("metric"), sweeper.get("direction"))
    spec = st.resolve_storage_spec(sweeper.get("storage"), HydraConfig.get().sweep.dir)
    study = st.load_existing_study(spec, str(tcfg.get("study") or sweeper.study_name),
                                   pruner=st.build_pruner(sweeper.get("pruner")))
    return JobTrial(int(number), study, metrics, pruning)
