"""MLflow tracking: the only MLflow-aware code in lit_tf.

Where runs go (`Store`, from the `logger.mlflow` config by `open_store`):

- `logger.mlflow.tracking_uri: null` (default): the local store in `logger.mlflow.dir`
  (`mlruns/`): `mlruns/mlflow.db` (SQLite: runs, params, metrics) and `mlruns/artifacts/`.
  `make ui` serves it on 127.0.0.1. Several processes may share it (parallel runs, sweep jobs):
  creating the store's tables, the experiment and the run happen under a file lock
  (`mlruns/.lock`); MLflow gives each SQLite session a 20 s busy timeout, and lit_tf's own
  synchronous calls retry with back-off while the store still reports it is locked.
- `logger.mlflow.tracking_uri: http(s)://host:port`: an MLflow tracking server (`make
  mlflow-server`). Nothing local applies (no lock, no SQLite retry); the server picks each new
  experiment's artifact location, which under `mlflow server --serve-artifacts` is proxied
  (`mlflow-artifacts:/<id>`), so clients upload artifacts through the server. Requests retry on
  their own (MLflow's HTTP retries: `logger.mlflow.http_*`), and a run checks at its start that the
  server answers, failing in seconds with one line instead of after minutes of retries.

Metrics are sent by `lit_tf.tracking.sender.MetricSender` from a background thread, so a training
step never waits on the store, and a point that cannot be sent during an outage is held and sent
again (never dropped silently); params, tags and artifacts are logged once at start/end.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only

from lit_tf.errors import LitTfError

log = logging.getLogger(__name__)

MAX_PARAM_LEN = 6000  # MLflow's limit on a param value (mlflow.utils.validation.MAX_PARAM_VAL_LENGTH)
MAX_PARAMS_PER_BATCH = 100  # MLflow's limit on params per log_batch call
# MLflow 3 records what an experiment is for in its `mlflow.experimentKind` tag (the UI's
# experiment-kind selector shows it; without it the UI infers one). lit_tf's experiments are model
# training. Which page the 3.17 UI opens an experiment on is decided by its GenAI / Model training
# switch instead (see UI_MODEL_TRAINING).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
NOTE_TAG = "mlflow.note.content"  # the description the UI shows on an experiment's (or run's) page


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


# --------------------------------------------------------------------------------------------
# where runs go: the local store or a tracking server
# --------------------------------------------------------------------------------------------
SERVER_CHECK_TIMEOUT_S = 5.0  # the start-of-run check: how long a tracking server may take to answer
UNSENT_FILE = "mlflow_unsent_metrics.jsonl"  # in a run's output folder: metric points the store never took
SERVER_HINT = "start one with `make mlflow-server` (it prints the override to use), or correct the host and port"
# logger.mlflow key -> (the MLflow environment variable it sets, smallest, largest value). MLflow reads
# them on every HTTP request (mlflow.utils.rest_utils.http_request); it refuses more than 10 retries.
HTTP_SETTINGS = {
    "http_retries": ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", 0, 10),
    "http_backoff_factor": ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", 0, 120),
    "http_timeout": ("MLFLOW_HTTP_REQUEST_TIMEOUT", 1, 3600),
}


@dataclass(frozen=True)
class Store:
    """Where MLflow runs go: a local store folder (SQLite + artifacts) or a tracking server."""

    tracking_uri: str
    local_dir: Path | None = None  # the local store's folder; None for a tracking server

    @property
    def remote(self) -> bool:
        return self.local_dir is None

    def __str__(self) -> str:
        return self.tracking_uri if self.remote else str(self.local_dir)

    def artifact_location(self, experiment_name: str) -> str | None:
        """A new experiment's artifact location: `<dir>/artifacts/<name>` locally; None for a server,
        which picks its own (proxied `mlflow-artifacts:/<id>` under `mlflow server --serve-artifacts`)."""
        return None if self.local_dir is None else f"{(self.local_dir / 'artifacts').as_uri()}/{experiment_name}"

    def creating(self) -> contextlib.AbstractContextManager:
        """Around one-time work (tables, experiment, run): the local store's file lock; a server
        serialises requests itself."""
        return contextlib.nullcontext() if self.local_dir is None else store_lock(self.local_dir)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """fn(*args, **kwargs); on the local store retried while SQLite reports it is locked. A server's
        requests need nothing more: MLflow retries them (`logger.mlflow.http_*`)."""
        return fn(*args, **kwargs) if self.local_dir is None else with_retry(fn, *args, **kwargs)


def open_store(mlflow_cfg: Mapping, *, check: bool = False) -> Store:
    """The store that `logger.mlflow` names: `tracking_uri` (a server), else the folder `dir`.

    For a server, its `http_*` keys are applied (they set MLflow's MLFLOW_HTTP_REQUEST_* variables
    for every request of this process and the processes it starts; null keeps the variable or
    MLflow's default), and with `check` the server must answer within SERVER_CHECK_TIMEOUT_S,
    else a LitTfError naming `logger.mlflow.tracking_uri` (not after minutes of retries).
    """
    uri = mlflow_cfg.get("tracking_uri")
    if uri is None or not str(uri).strip():
        folder = Path(mlflow_cfg["dir"]).resolve()  # created by the first run that logs (store.creating())
        return Store(f"sqlite:///{folder / 'mlflow.db'}", folder)
    uri = str(uri).strip().rstrip("/")
    try:
        parts = urlsplit(uri)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or 0) >= 0
    except ValueError:  # a port that is not a number
        ok = False
    if not ok:
        raise LitTfError(
            f"logger.mlflow.tracking_uri={uri}: expected the http://host:port (or https://) URL of an MLflow "
            "tracking server, or null for the local store in logger.mlflow.dir",
            hint="`make mlflow-server` starts a server; a database is served with "
                 "`mlflow server --backend-store-uri <database URL>`")
    for key, (env, lo, hi) in HTTP_SETTINGS.items():
        value = mlflow_cfg.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise LitTfError(f"logger.mlflow.{key}={value!r}: expected a whole number from {lo} to {hi} "
                             f"(or null: MLflow's default / ${env})")
        os.environ[env] = str(value)
    if check:
        check_server(uri)
    return Store(uri)


def check_server(uri: str, timeout: float = SERVER_CHECK_TIMEOUT_S) -> None:
    """An MLflow tracking server answers `GET <uri>/health` within `timeout` s, else a one-line LitTfError."""
    import requests  # MLflow's own HTTP client library

    where = f"logger.mlflow.tracking_uri={uri}"
    # TLS as MLflow's client does it: a CA bundle, or no verification when asked for
    insecure = os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("1", "true")
    verify = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or not insecure
    try:
        answer = requests.get(f"{uri}/health", timeout=timeout, verify=verify)
    except requests.exceptions.Timeout:
        raise LitTfError(f"{where}: no MLflow tracking server answered within {timeout:.0f}s",
                         hint=SERVER_HINT) from None
    except requests.exceptions.RequestException as e:
        raise LitTfError(f"{where}: cannot reach an MLflow tracking server there ({_connection_problem(e)})",
                         hint=SERVER_HINT) from None
    if answer.status_code != 200:
        raise LitTfError(f"{where}: GET /health answered HTTP {answer.status_code}: not an MLflow tracking "
                         "server (or not at this path)", hint=SERVER_HINT)


def _connection_problem(e: Exception) -> str:
    text = str(e)
    for needle, what in (("refused", "connection refused"), ("Name or service not known", "unknown host"),
                         ("nodename nor servname", "unknown host"), ("name resolution", "unknown host"),
                         ("No route to host", "no route to host"), ("SSL", "TLS error")):
        if needle in text:
            return what
    return type(e).__name__


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
    """MLFlowLogger with MLflow's real param length limit (Lightning truncates at 250 chars),
    metric points sent by a MetricSender (a step never waits on the store; nothing is dropped
    during an outage; what the store never takes is saved to `unsent_file` and reported), and run
    resumption: an existing run id is set back to RUNNING, and metric points at steps the
    run already holds are not logged again (a run resumed from a checkpoint written before a crash
    recomputes the steps between that checkpoint and the crash; on CPU bit for bit, so the first
    values stand and each metric's history keeps one point per step)."""

    _logged_until: dict[str, int] | None = None
    _sender = None  # MetricSender, made with the first metric point (rank 0 only)
    store: Store | None = None  # set by make_logger
    unsent_file: Path | None = None  # where points the store never took are saved (set by make_logger)
    unsent: int = 0  # how many were saved there
    system_metrics = None  # MLflow's SystemMetricsMonitor while it samples (start_system_metrics)
    _drain_next = False  # a checkpoint was just written: the next points logged are sent before going on

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:  # type: ignore[override]
        if self._logged_until:
            metrics = {k: v for k, v in metrics.items() if (step or 0) > self._logged_until.get(k, -1)}
            if not metrics:
                return
        points = self._points(metrics, step)
        if points:
            if self._sender is None:
                from lit_tf.tracking.sender import MetricSender

                self._sender = MetricSender(self.experiment, self.run_id, str(self.store or self._tracking_uri))
            self._sender.put(points)
            if self._drain_next:  # the step a checkpoint was written at: its points are logged after the save
                self._drain_next = False
                self._sender.drain()

    @rank_zero_only
    def before_checkpoint(self) -> None:
        """A checkpoint is about to be written: the points logged so far go to the store first, and
        the step's own points (Lightning logs them after its checkpoint callbacks) right after
        they are logged. A kill -9 once training has gone past the checkpoint's step then loses
        only points the resumed run recomputes. Does not wait during an outage, nor more than a few
        seconds for a store that does not answer (the points stay queued and are sent once it does)."""
        drained = self._sender is None or self._sender.drain()
        if not drained and self._sender.outage is None:  # (an outage was reported when it began)
            log.warning("MLflow at %s has not taken the metric points logged before this checkpoint yet; training "
                        "goes on and they are sent once it answers", self.store or self._tracking_uri)
        self._drain_next = drained  # a store that is slow or away now is not waited for twice

    def _points(self, metrics: Mapping[str, float], step: int | None) -> list:
        """Lightning's conversion (prefix, MLflow's allowed characters in names, no strings) to MLflow points."""
        from lightning.fabric.utilities.logger import _add_prefix
        from mlflow.entities import Metric

        timestamp_ms = int(time.time() * 1000)
        points = []
        for k, v in _add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR).items():
            if isinstance(v, str):
                log.warning("Discarding metric with string value %s=%s.", k, v)
                continue
            key = re.sub("[^a-zA-Z0-9_/. -]+", "", k)
            if key != k:
                log.warning("MLflow only allows '_', '/', '.' and ' ' special characters in metric names: "
                            "%s logged as %s", k, key)
            points.append(Metric(key=key, value=float(v), timestamp=timestamp_ms, step=step or 0))
        return points

    @rank_zero_only
    def flush_metrics(self) -> None:
        """Wait until every metric point logged so far is in the store; save and report the ones it
        never took (the server stayed away through the last attempt, or refused them)."""
        if self._sender is None:
            return
        failed = self._sender.flush()
        if not failed:
            return
        import json

        self.unsent += len(failed)
        if self.unsent_file is not None:
            self.unsent_file.parent.mkdir(parents=True, exist_ok=True)
            with open(self.unsent_file, "a") as f:
                for m, why in failed:
                    f.write(json.dumps({"run_id": self.run_id, "key": m.key, "value": m.value, "step": m.step,
                                        "timestamp": m.timestamp, "reason": why}) + "\n")
        steps = sorted({m.step for m, _ in failed})
        log.error("%d metric points (steps %d-%d) of MLflow run %s were NOT logged to %s: %s; %s", len(failed),
                  steps[0], steps[-1], self.run_id, self.store or self._tracking_uri, failed[0][1],
                  f"they are saved in {self.unsent_file}" if self.unsent_file else "they are lost")

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        self.stop_system_metrics()
        self.flush_metrics()  # every point in the store (or saved) before the run is marked ended
        super().finalize(status)

    def stop_system_metrics(self) -> None:
        """Stop MLflow's system-metrics sampler. A run shorter than one sampling interval still
        gets the sample taken at its start (the sampler itself publishes only full intervals)."""
        monitor, self.system_metrics = self.system_metrics, None
        if monitor is None:
            return
        first_step = getattr(monitor, "_logging_step", None)  # MLflow keeps no public count
        monitor.finish()
        try:
            if first_step is not None and monitor._logging_step == first_step and monitor.aggregate_metrics():
                monitor.publish_metrics(monitor.aggregate_metrics())
                monitor.mlflow_logger.flush()
        except Exception as e:  # system metrics are a courtesy: never fail a run over them
            log.warning("could not log the last system metrics of MLflow run %s: %s", self.run_id, e)

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
        self.store.call(client.update_run, self.run_id, status="RUNNING")
        keys = client.get_run(self.run_id).data.metrics
        self._logged_until = {k: max(m.step for m in client.get_metric_history(self.run_id, k)) for k in keys}


def experiment_description(config_dir: str | os.PathLike, name: str) -> str | None:
    """The header comment of `<config_dir>/experiment/<name>.yaml` (its leading `#` lines, without
    Hydra's `# @package` directive) as one paragraph, or None when there is no such file or comment."""
    path = Path(config_dir) / "experiment" / f"{name}.yaml"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    words = []
    for line in lines:
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if not text.startswith("@package"):
            words.append(text)
    return " ".join(w for w in words if w) or None


def mark_experiment(store: Store, client: Any, experiment_id: str, description: str | None = None) -> None:
    """Tag an experiment lit_tf creates or reuses as model training and give it `description` when
    it has none. Tags a user has set are kept."""
    tags = store.call(client.get_experiment, experiment_id).tags
    if EXPERIMENT_KIND_TAG not in tags:
        store.call(client.set_experiment_tag, experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    if description and not tags.get(NOTE_TAG):
        store.call(client.set_experiment_tag, experiment_id, NOTE_TAG, description)


def make_logger(
    store: Store, experiment_name: str, run_name: str | None, tags: Mapping[str, str], run_id: str | None = None,
    unsent_file: str | os.PathLike | None = None, description: str | None = None,
) -> LitTfMLflowLogger:
    """The run's logger on `store` (see open_store): a new run, or `run_id` reopened. Metric points the
    store never takes are saved to `unsent_file` (JSON lines) and reported. The experiment is marked
    as model training, with `description` if it has none (`mark_experiment`)."""
    # The first process to open a fresh local store creates its tables (MlflowClient does, in the
    # logger's constructor), then the experiment: concurrent processes doing either at once fail
    # ("duplicate column", "UNIQUE constraint failed"), so they take turns (store.creating()).
    with store.creating():
        logger = store.call(
            LitTfMLflowLogger, experiment_name=experiment_name, run_name=run_name, tracking_uri=store.tracking_uri,
            tags=dict(tags), artifact_location=store.artifact_location(experiment_name), run_id=run_id,
        )
        try:
            store.call(lambda: logger.experiment)  # gets/creates the experiment, creates (or finds) the run
            _mark_logger_experiment(logger, store, description)
        except Exception as e:
            if run_id is None or getattr(e, "error_code", None) != "RESOURCE_DOES_NOT_EXIST":
                raise
            raise LitTfError(f"ckpt_path: the checkpoint's run was logged as MLflow run {run_id}, which {store} "
                             "does not hold", hint="resume with the logger.mlflow.tracking_uri (or "
                             "logger.mlflow.dir) that run was logged to") from e
    logger.store = store
    logger.unsent_file = Path(unsent_file) if unsent_file is not None else None
    if store.remote:
        _warn_local_artifacts(logger)
    if run_id is not None:
        logger.reopen()
        for k, v in tags.items():
            store.call(logger.experiment.set_tag, run_id, k, v)
    return logger


@rank_zero_only
def _mark_logger_experiment(logger: LitTfMLflowLogger, store: Store, description: str | None) -> None:
    mark_experiment(store, logger.experiment, logger.experiment_id, description)


@rank_zero_only
def _warn_local_artifacts(logger: LitTfMLflowLogger) -> None:
    """A server run of an experiment made by local runs (artifact location `file://...`) writes its
    artifacts straight to that path on this machine, not through the server: say so."""
    location = logger.experiment.get_experiment(logger.experiment_id).artifact_location
    if location.startswith("file:"):
        log.warning("MLflow experiment '%s' on %s keeps its artifacts at %s (it was created by a local run): "
                    "this run writes them there directly, which only works on a machine that sees that folder; "
                    "from other machines, log to a new experiment (name=... or logger.mlflow.experiment_name=...)",
                    logger._experiment_name, logger.store, location)


@rank_zero_only
def start_system_metrics(logger: LitTfMLflowLogger, interval_s: float, resumed: bool) -> None:
    """Sample CPU, memory, disk, network and (with nvidia-ml-py and an NVIDIA GPU) GPU utilisation
    and memory every `interval_s` seconds into the run's `system/*` metrics, with MLflow's own
    sampler in a background thread, until the run ends. A resumed run continues its step count."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # no start/stop chatter
    monitor = SystemMetricsMonitor(logger.run_id, sampling_interval=interval_s, resume_logging=resumed,
                                   tracking_uri=logger.store.tracking_uri)
    monitor.start()
    logger.system_metrics = monitor


@rank_zero_only
def end_run(logger: LitTfMLflowLogger, exc: BaseException, status: str) -> None:
    """Record how a run ended on an exception: status FAILED or KILLED, the message as the tag
    `lit_tf.error` (FAILED) or `lit_tf.stopped` (KILLED: Ctrl-C, preemption), and for FAILED the
    traceback as the artifact `error/traceback.txt`. Never raises (the original error matters more)."""
    try:
        logger.stop_system_metrics()
        client, run_id = logger.experiment, logger.run_id
        message = f"{type(exc).__name__}: {exc}"[:5000]
        logger.store.call(client.set_tag, run_id, "lit_tf.error" if status == "FAILED" else "lit_tf.stopped", message)
        if status == "FAILED":
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            logger.store.call(client.log_text, run_id, text, "error/traceback.txt")
        flush(logger)
        logger.store.call(client.set_terminated, run_id, status)
    except Exception as e:
        log.warning("could not record the end of MLflow run %s: %s", getattr(logger, "run_id", None), e)


@rank_zero_only
def log_datasets(logger: LitTfMLflowLogger, records: list) -> None:
    """Log `lit_tf.data.records.DatasetRecord`s as the run's MLflow dataset inputs: name, the
    cache's content digest, source, the split as `mlflow.data.context`, rows and tokens as profile.
    The run page's Datasets box lists them; an input the run already has is not added again."""
    import json

    from mlflow.entities import Dataset, DatasetInput, InputTag

    client, run_id = logger.experiment, logger.run_id
    have = {(d.dataset.name, d.dataset.digest, next((t.value for t in d.tags if t.key == "mlflow.data.context"), None))
            for d in (store_call(logger, client.get_run, run_id).inputs.dataset_inputs or [])}
    inputs = [
        DatasetInput(Dataset(name=r.name, digest=r.digest, source_type=r.source_type, source=json.dumps(r.source),
                             profile=json.dumps({"num_rows": r.rows, "num_tokens": r.tokens})),
                     tags=[InputTag("mlflow.data.context", r.context)])
        for r in records if (r.name, r.digest, r.context) not in have
    ]
    if inputs:
        store_call(logger, client.log_inputs, run_id, datasets=inputs)


def store_call(logger: LitTfMLflowLogger, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return logger.store.call(fn, *args, **kwargs) if logger.store is not None else fn(*args, **kwargs)


@rank_zero_only
def set_tag(logger: LitTfMLflowLogger, key: str, value: str) -> None:
    logger.store.call(logger.experiment.set_tag, logger.run_id, key, value)


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
    """Wait until the metric points logged so far are in the store, saving (and reporting) any it
    never took (rank 0 logs; other DDP ranks have no run, and calling MLflow there would create a
    default `mlflow.db` in the working directory)."""
    try:
        if isinstance(logger, LitTfMLflowLogger):
            logger.flush_metrics()
    except Exception as e:  # never lose the run over a flush
        log.warning("mlflow flush failed: %s", e)


def ui_command(mlruns_dir: str | os.PathLike) -> str:
    """`make ui` spelled out: the local store, also serving the artifacts of runs logged through
    `make mlflow-server` (proxied `mlflow-artifacts:/` locations resolve to the same folder)."""
    tracking_uri, artifact_root = store_uris(mlruns_dir)
    return (f"mlflow ui --backend-store-uri {tracking_uri} --default-artifact-root {artifact_root} "
            f"--artifacts-destination {artifact_root} --host 127.0.0.1 --port 5000")


# MLflow 3's UI has a GenAI / Model training switch per browser (stored in its local storage,
# GenAI by default); an experiment opened in GenAI mode lands on its traces overview. The page's
# `workflowType` parameter overrides the switch, so lit_tf's links carry it.
UI_MODEL_TRAINING = "workflowType=machine_learning"


def run_page(experiment_id: str, run_id: str | None = None) -> str:
    """The UI page (relative to its root) of an experiment's runs, or of one run, in model-training mode."""
    tail = f"/runs/{run_id}" if run_id else ""
    return f"#/experiments/{experiment_id}{tail}?{UI_MODEL_TRAINING}"


def summary_lines(logger: LitTfMLflowLogger, experiment_name: str) -> list[str]:
    """The end-of-run lines saying where the run is and how to look at it."""
    store = logger.store
    page = run_page(logger.experiment_id, logger.run_id)
    if store is not None and store.remote:
        lines = [f"  MLflow run: {logger.run_id} (experiment '{experiment_name}', server {store})",
                 f"  open it in the MLflow UI:  {store}/{page}"]
    else:
        folder = store.local_dir if store is not None else "mlruns"
        lines = [f"  MLflow run: {logger.run_id} (experiment '{experiment_name}', store {folder})",
                 "  open the MLflow UI:  make ui   (serves http://127.0.0.1:5000)",
                 f"            or run:  {ui_command(folder)}",
                 f"  this run's page:    http://127.0.0.1:5000/{page}"]
    if logger.unsent:
        lines.append(f"  NOT in MLflow: {logger.unsent} metric points the store never took, saved in {logger.unsent_file}")
    return lines
