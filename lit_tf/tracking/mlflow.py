"""MLflow tracking: the only MLflow-aware code in lit_tf.

Store layout (default `mlruns/`): `mlruns/mlflow.db` (SQLite backend: runs, params, metrics)
and `mlruns/artifacts/` (artifact root). `make ui` serves that store on 127.0.0.1.

Metrics go through Lightning's MLFlowLogger with `synchronous=False`, so a training step never
waits on the database; params, tags and artifacts are logged once at start/end.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger(__name__)

MAX_PARAM_LEN = 6000  # MLflow's limit on a param value (mlflow.utils.validation.MAX_PARAM_VAL_LENGTH)
MAX_PARAMS_PER_BATCH = 100  # MLflow's limit on params per log_batch call


def store_uris(mlruns_dir: str | os.PathLike) -> tuple[str, str]:
    """(tracking_uri, artifact_root) for a local store directory."""
    root = Path(mlruns_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()


def flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> {"a.b.c": value}; lists are kept as their string form."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def git_commit(cwd: str | os.PathLike | None = None) -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5)
        if sha.returncode == 0:
            return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


class LitTfMLflowLogger(MLFlowLogger):
    """MLFlowLogger with MLflow's real param length limit (Lightning truncates at 250 chars)
    and run resumption (an existing run id is set back to RUNNING)."""

    @rank_zero_only
    def log_hyperparams(self, params: Mapping[str, Any]) -> None:  # type: ignore[override]
        from mlflow.entities import Param

        flat = flatten(dict(params))
        items = [Param(key=k[:250], value=str(v)[:MAX_PARAM_LEN]) for k, v in flat.items()]
        existing = self.experiment.get_run(self.run_id).data.params
        items = [p for p in items if p.key not in existing]  # a resumed run keeps its params
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.experiment.log_batch(run_id=self.run_id, params=items[i : i + MAX_PARAMS_PER_BATCH])

    @rank_zero_only
    def reopen(self) -> None:
        self.experiment.update_run(self.run_id, status="RUNNING")


def make_logger(
    mlruns_dir: str, experiment_name: str, run_name: str | None, tags: Mapping[str, str], run_id: str | None = None,
) -> LitTfMLflowLogger:
    tracking_uri, artifact_root = store_uris(mlruns_dir)
    logger = LitTfMLflowLogger(
        experiment_name=experiment_name, run_name=run_name, tracking_uri=tracking_uri, tags=dict(tags),
        artifact_location=f"{artifact_root}/{experiment_name}", run_id=run_id, synchronous=False,
    )
    if run_id is not None:
        logger.reopen()
        for k, v in tags.items():
            logger.experiment.set_tag(run_id, k, v)
    return logger


@rank_zero_only
def log_text(logger: MLFlowLogger, text: str, artifact_file: str) -> None:
    logger.experiment.log_text(logger.run_id, text, artifact_file)


@rank_zero_only
def log_artifact(logger: MLFlowLogger, path: str | os.PathLike, artifact_path: str | None = None) -> None:
    path = Path(path)
    if path.is_dir():
        logger.experiment.log_artifacts(logger.run_id, str(path), artifact_path)
    elif path.is_file():
        logger.experiment.log_artifact(logger.run_id, str(path), artifact_path)


@rank_zero_only
def log_params_now(logger: MLFlowLogger, params: Mapping[str, Any]) -> None:
    logger.log_hyperparams(params)


@rank_zero_only
def flush(logger: MLFlowLogger) -> None:
    """Wait for queued asynchronous logging to reach the store (rank 0 logs; other DDP ranks have
    no run, and calling MLflow there would create a default `mlflow.db` in the working directory)."""
    try:
        import mlflow

        mlflow.flush_async_logging()
    except Exception as e:  # never lose the run over a flush
        log.warning("mlflow flush failed: %s", e)


def ui_command(mlruns_dir: str | os.PathLike) -> str:
    tracking_uri, artifact_root = store_uris(mlruns_dir)
    return (f"mlflow ui --backend-store-uri {tracking_uri} --default-artifact-root {artifact_root} "
            "--host 127.0.0.1 --port 5000")
