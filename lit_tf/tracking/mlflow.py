"""MLflow tracking: the only MLflow-aware code in lit_tf.

Store layout (default `mlruns/`): `mlruns/mlflow.db` (SQLite backend: runs, params, metrics)
and `mlruns/artifacts/` (artifact root). `make ui` serves that store on 127.0.0.1.

Metrics go through Lightning's MLFlowLogger with `synchronous=False`, so a training step never
waits on the database; params, tags and artifacts are logged once at start/end.

Several processes may share one store (parallel runs, sweep jobs): creating the store's tables
(schema migration of a fresh `mlflow.db`), the experiment and the run happen under a file lock
(`mlruns/.lock`); MLflow gives each SQLite session a 20 s busy timeout, and lit_tf's own
synchronous calls retry with back-off when the store still reports it is locked.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger(__name__)

MAX_PARAM_LEN = 6000  # MLflow's limit on a param value (mlflow.utils.validation.MAX_PARAM_VAL_LENGTH)
MAX_PARAMS_PER_BATCH = 100  # MLflow's limit on params per log_batch call


T = TypeVar("T")


def store_uris(mlruns_dir: str | os.PathLike) -> tuple[str, str]:
    """(tracking_uri, artifact_root) for a local store directory."""
    root = Path(mlruns_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()


@contextlib.contextmanager
def store_lock(mlruns_dir: str | os.PathLike) -> Iterator[None]:
    """Exclusive inter-process lock on a store folder (`<mlruns>/.lock`), for one-time work:
    creating/migrating the database tables and creating an experiment."""
    root = Path(mlruns_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a+") as f:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; SQLite's busy timeout still applies
            yield
            return
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def with_retry(fn: Callable[..., T], *args: Any, attempts: int = 6, **kwargs: Any) -> T:
    """fn(*args, **kwargs), retried with back-off (0.5 s, 1 s, 2 s, ...) while the store reports a
    transient lock; any other error, or the last attempt's, is raised."""
    for i in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if i == attempts - 1 or "locked" not in str(e).lower():
                raise
            log.info("MLflow store busy (%s): retrying in %.1fs", str(e).splitlines()[0][:200], 0.5 * 2**i)
            time.sleep(0.5 * 2**i)
    raise AssertionError("unreachable")


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
    and run resumption: an existing run id is set back to RUNNING, and metric points at steps the
    run already holds are not logged again (a run resumed from a checkpoint written before a crash
    recomputes the steps between that checkpoint and the crash; on CPU bit for bit, so the first
    values stand and each metric's history keeps one point per step)."""

    _logged_until: dict[str, int] | None = None

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:  # type: ignore[override]
        if self._logged_until:
            metrics = {k: v for k, v in metrics.items() if (step or 0) > self._logged_until.get(k, -1)}
            if not metrics:
                return
        super().log_metrics(metrics, step)

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
        client = self.experiment
        with_retry(client.update_run, self.run_id, status="RUNNING")
        keys = client.get_run(self.run_id).data.metrics
        self._logged_until = {k: max(m.step for m in client.get_metric_history(self.run_id, k)) for k in keys}


def make_logger(
    mlruns_dir: str, experiment_name: str, run_name: str | None, tags: Mapping[str, str], run_id: str | None = None,
) -> LitTfMLflowLogger:
    tracking_uri, artifact_root = store_uris(mlruns_dir)
    # The first process to open a fresh store creates its tables (MlflowClient does, in the logger's
    # constructor), then the experiment: concurrent processes doing either at once fail ("duplicate
    # column", "UNIQUE constraint failed"), so they take turns.
    with store_lock(mlruns_dir):
        logger = with_retry(
            LitTfMLflowLogger, experiment_name=experiment_name, run_name=run_name, tracking_uri=tracking_uri,
            tags=dict(tags), artifact_location=f"{artifact_root}/{experiment_name}", run_id=run_id, synchronous=False,
        )
        with_retry(lambda: logger.experiment)  # gets/creates the experiment, creates (or finds) the run
    if run_id is not None:
        logger.reopen()
        for k, v in tags.items():
            with_retry(logger.experiment.set_tag, run_id, k, v)
    return logger


@rank_zero_only
def end_run(logger: MLFlowLogger, exc: BaseException, status: str) -> None:
    """Record how a run ended on an exception: status FAILED or KILLED, the message as the tag
    `lit_tf.error` (FAILED) or `lit_tf.stopped` (KILLED: Ctrl-C, preemption), and for FAILED the
    traceback as the artifact `error/traceback.txt`. Never raises (the original error matters more)."""
    try:
        client, run_id = logger.experiment, logger.run_id
        message = f"{type(exc).__name__}: {exc}"[:5000]
        with_retry(client.set_tag, run_id, "lit_tf.error" if status == "FAILED" else "lit_tf.stopped", message)
        if status == "FAILED":
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            with_retry(client.log_text, run_id, text, "error/traceback.txt")
        flush(logger)
        with_retry(client.set_terminated, run_id, status)
    except Exception as e:
        log.warning("could not record the end of MLflow run %s: %s", getattr(logger, "run_id", None), e)


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
