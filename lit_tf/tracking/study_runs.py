"""MLflow runs of an Optuna study: one parent run per study, one child run per trial.

The trial's own training run is the child (train() tags it with `mlflow.parentRunId`, read from
the study's storage); the sweeper adds the trial's outcome (state, value, pruned step, error)
once Optuna knows it, and creates a small child run itself for a trial that never got as far
as starting training (a config error), so every trial has its row in the UI.

The runs go where the study's `logger.mlflow` says (`open_store`): the local store or a tracking
server, the same place as the trials' own runs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from lit_tf.tracking.mlflow import MAX_PARAM_LEN, Store, mark_experiment

log = logging.getLogger(__name__)


class StudyRuns:
    def __init__(self, store: Store, experiment_name: str, description: str | None = None):
        self.store = store
        self.client = MlflowClient(store.tracking_uri)
        with store.creating():
            exp = store.call(self.client.get_experiment_by_name, experiment_name)
            self.experiment_id = exp.experiment_id if exp else store.call(
                self.client.create_experiment, experiment_name,
                artifact_location=store.artifact_location(experiment_name))
            mark_experiment(store, self.client, self.experiment_id, description)
        self.parent_id: str | None = None

    # ----------------------------------------------------------------------------- parent
    def open_parent(self, existing_id: str | None, study_name: str, tags: Mapping[str, str]) -> str:
        """Reopen the study's parent run after a resume, or start it."""
        if existing_id:
            try:
                self.client.update_run(existing_id, status="RUNNING")
                self.parent_id = existing_id
                return existing_id
            except Exception as e:  # deleted run or another store: start a new parent
                log.warning("parent run %s not reusable (%s); starting a new one", existing_id, e)
        run = self.client.create_run(self.experiment_id, run_name=f"study-{study_name}",
                                     tags={"lit_tf.sweep": "parent", "optuna.study_name": study_name, **tags})
        self.parent_id = run.info.run_id
        return self.parent_id

    def close_parent(self, status: str = "FINISHED") -> None:
        if self.parent_id:
            self.client.set_terminated(self.parent_id, status=status)

    def log_study_result(self, best: Mapping[str, Any], files: list[Path]) -> None:
        """best: {"params": {...}, "values": {metric: value}, "number": n} (empty when no trial completed)."""
        pid = self.parent_id
        if not pid:
            return
        if best:
            logged = self.client.get_run(pid).data.params
            for k, v in best["params"].items():
                key, value = f"best.{k}", str(v)[:MAX_PARAM_LEN]
                if key not in logged:
                    self.client.log_param(pid, key, value)
                elif logged[key] != value:  # a resumed study found a better trial: params are immutable
                    self.client.set_tag(pid, key, value)
            for m, v in best["values"].items():
                self.client.log_metric(pid, f"best/{m}", float(v))
            self.client.set_tag(pid, "optuna.best_trial", str(best["number"]))
        for f in files:
            self.client.log_artifact(pid, str(f), "study")

    # ----------------------------------------------------------------------------- children
    def find_child(self, number: int) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id],
            f"tags.`mlflow.parentRunId` = '{self.parent_id}' and tags.`optuna.trial_number` = '{number}'",
            max_results=5,
        )
        return runs[0].info.run_id if runs else None

    def record_trial(self, number: int, study_name: str, state: str, params: Mapping[str, Any],
                     values: Mapping[str, float], extra_tags: Mapping[str, str]) -> str | None:
        """Tag the trial's child run with its outcome; create the child if the job made none."""
        if not self.parent_id:
            return None
        tags = {"optuna.state": state, **{k: str(v) for k, v in extra_tags.items()}}
        run_id = self.find_child(number)
        if run_id is None:
            run = self.client.create_run(
                self.experiment_id, run_name=f"trial-{number}",
                tags={"mlflow.parentRunId": self.parent_id, "optuna.study_name": study_name,
                      "optuna.trial_number": str(number)},
            )
            run_id = run.info.run_id
            for k, v in params.items():
                self.client.log_param(run_id, k, str(v)[:MAX_PARAM_LEN])
            self.client.set_terminated(run_id, status="FAILED" if state == "FAIL" else "FINISHED")
        for k, v in tags.items():
            self.client.set_tag(run_id, k, v[:5000])
        for m, v in values.items():
            self.client.log_metric(run_id, f"optuna/{m}", float(v))
        return run_id
