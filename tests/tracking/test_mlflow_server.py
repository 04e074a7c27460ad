"""Logging to a shared MLflow tracking server (`logger.mlflow.tracking_uri=http://...`).

Each test starts a real `mlflow server` (the venv's own executable) on 127.0.0.1 with a free port
and a temporary store (SQLite + proxied artifacts, as `make mlflow-server` runs it), and stops it
afterwards. The training runs are `train.py` subprocesses on the smoke-sized quickstart; what they
logged is read back through `MlflowClient` over HTTP.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT, SHARED, free_port

HERE = Path(__file__).resolve().parent
MLFLOW = Path(sys.executable).with_name("mlflow")  # the venv's mlflow executable


def _wait_for(what: str, condition: Callable[[], object], timeout: float,
              proc: subprocess.Popen | None = None, log: Path | None = None):
    """Poll `condition` until it returns something true (returned), else fail after `timeout` s
    (or as soon as `proc` exits)."""
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"waiting for {what}: the process exited {proc.returncode}\n{tail}")
        if time.monotonic() > end:
            raise AssertionError(f"waiting for {what}: not within {timeout:.0f}s\n{tail}")
        time.sleep(0.1)


class TrackingServer:
    """`mlflow server` on 127.0.0.1:<port> over a store folder: `mlflow.db` + proxied `artifacts/`."""

    def __init__(self, store: Path, port: int | None = None) -> None:
        self.store, self.port = store, port or free_port()
        self.log = store / "server.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def start(self, timeout: float = 120) -> TrackingServer:
        self.store.mkdir(parents=True, exist_ok=True)
        # its own session, so kill()/stop() end its uvicorn workers with it; no job runner (GenAI jobs)
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [str(MLFLOW), "server", "--backend-store-uri", f"sqlite:///{self.store / 'mlflow.db'}",
                 "--default-artifact-root", "mlflow-artifacts:/", "--serve-artifacts",
                 "--artifacts-destination", (self.store / "artifacts").as_uri(),
                 "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        try:
            _wait_for(f"mlflow server on {self.url}", self._healthy, timeout, self.proc, self.log)
        except AssertionError:
            self.stop()
            raise
        return self

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)  # the group this server started (its pid): server and workers
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL, as a crash: no clean shutdown; returns once the port refuses connections."""
        self._signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

        def refused() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return False
            except OSError:
                return True

        _wait_for(f"port {self.port} to close", refused, 30)

    def stop(self) -> None:
        """The end of a test: its temporary store needs no clean shutdown."""
        if self.proc is not None:
            self._signal(signal.SIGKILL)
            self.proc.wait(timeout=30)


@pytest.fixture
def server(tmp_path):
    srv = TrackingServer(tmp_path / "server").start()
    yield srv
    srv.stop()


def _env(cache_dir: Path) -> dict:
    return dict(os.environ, LIT_TF_CACHE=str(cache_dir), LIT_TF_SHARED_DATA=str(SHARED),
                PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))


def _client(url: str):
    from mlflow import MlflowClient

    return MlflowClient(url)


def _artifacts(client, run_id: str, path: str = "") -> set[str]:
    out: set[str] = set()
    for f in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, f.path) if f.is_dir else {f.path}
    return out


def _steps(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def _own_run_dirs(url: str) -> list[Path]:
    """Run folders under the repo's outputs/ that a train.py run logging to `url` made."""
    overrides = (ROOT / "outputs" / "quickstart" / "runs").glob("*/.hydra/overrides.yaml")
    return [f.parent.parent for f in overrides if url in f.read_text(errors="replace")]


def test_training_run_logs_params_metrics_and_artifacts_to_the_server(server, cache_dir):
    """`python train.py debug=smoke logger.mlflow.tracking_uri=http://...` typed at the repo root:
    params, metrics and artifacts go to the server; artifacts are uploaded through it (proxied)."""
    try:
        proc = subprocess.run([sys.executable, "train.py", "debug=smoke", f"logger.mlflow.tracking_uri={server.url}"],
                              cwd=ROOT, env=_env(cache_dir), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        found = re.search(rf"MLflow run: ([0-9a-f]{{32}}) \(experiment 'quickstart', server {re.escape(server.url)}\)",
                          proc.stdout)
        assert found, proc.stdout[-2000:]
        run_id = found.group(1)
        assert f"open it in the MLflow UI:  {server.url}/#/experiments/" in proc.stdout
        assert "make ui" not in proc.stdout  # the local store's hint does not apply

        client = _client(server.url)
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        p = run.data.params
        assert p["model.d_model"] == "32" and p["logger.mlflow.tracking_uri"] == server.url
        assert int(p["model_stats.n_params"]) > 0
        assert run.data.tags["experiment"] == "quickstart"
        assert _steps(client, run_id, "train/loss") == list(range(6))  # debug=smoke: 6 steps, each logged
        assert _steps(client, run_id, "val/mlm_loss") == [2, 5]
        # artifacts: proxied by the server into its own artifact folder, not written by the client
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
        arts = _artifacts(client, run_id)
        assert {"config.yaml", "tokenizer/tokenizer.json"} <= arts
        (ckpt,) = [a for a in arts if a.startswith("checkpoints/") and a.endswith(".ckpt")]
        stored = server.store / "artifacts" / run.info.experiment_id / run_id / "artifacts"
        assert (stored / "config.yaml").is_file() and (stored / ckpt).is_file()
    finally:  # the run folder this test made in the repo's outputs/ (found by this server's URL)
        for d in _own_run_dirs(server.url):
            shutil.rmtree(d)


def _gate(name: str, step: int, folder: Path) -> tuple[list[str], Path, Path]:
    marker, release = folder / f"{name}_reached", folder / f"{name}_release"
    return ([f"+callbacks.{name}._target_=tracking_helpers.Gate", f"+callbacks.{name}.step={step}",
             f"+callbacks.{name}.marker={marker}", f"+callbacks.{name}.release={release}"], marker, release)


def test_server_restart_mid_run_loses_no_metric(tmp_path, cache_dir):
    """The server is killed (SIGKILL) once the run's first metrics are in; the run logs steps 4-9
    while it is down; it comes back on the same port and store; the run ends FINISHED with every
    step's train/loss point. Gates hold the run at steps 4 and 10, so the order is fixed."""
    server = TrackingServer(tmp_path / "server").start()
    gate1, reached1, release1 = _gate("gate1", 4, tmp_path)
    gate2, reached2, release2 = _gate("gate2", 10, tmp_path)
    log = tmp_path / "train.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), "debug=smoke", "trainer.max_steps=16",
             "trainer.val_check_interval=8", f"logger.mlflow.tracking_uri={server.url}",
             # MLflow's HTTP retries wait 0, 2, 4, 8, ... s (default factor 2: 0, 4, 8, ...): a shorter test
             "logger.mlflow.http_backoff_factor=1", f"paths.root_dir={tmp_path}",
             "hydra.job.chdir=false", *gate1, *gate2],
            cwd=tmp_path, env=_env(cache_dir), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_for("the run to reach step 4", reached1.exists, 240, proc, log)
        (sidecar,) = tmp_path.glob("outputs/quickstart/runs/*/run.json")
        run_id = json.loads(sidecar.read_text())["mlflow_run_id"]
        client = _client(server.url)
        _wait_for("the first train/loss points on the server", lambda: _steps(client, run_id, "train/loss"), 60,
                  proc, log)

        server.kill()
        release1.touch()  # steps 4-9 (and the validation after step 8) are logged while the server is down
        _wait_for("the run to reach step 10", reached2.exists, 120, proc, log)
        server.start()  # same port, same store
        release2.touch()
        assert proc.wait(timeout=300) == 0, log.read_text(errors="replace")[-3000:]

        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert _steps(client, run_id, "train/loss") == list(range(16))  # one point per step, none lost or doubled
        assert _steps(client, run_id, "val/mlm_loss") == [7, 15]
        assert not list(tmp_path.glob("outputs/quickstart/runs/*/mlflow_unsent_metrics.jsonl"))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        server.stop()


def test_unreachable_server_fails_fast_with_one_line(tmp_path):
    """Nothing listens at the URL: the run stops at once (no retries, no data work) with one error
    line naming the key and the URL, and a hint."""
    from lit_tf.errors import LitTfError
    from lit_tf.tracking.mlflow import check_server

    url = f"http://127.0.0.1:{free_port()}"  # a free port: nothing listens there
    cache = tmp_path / "cache"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "debug=smoke", f"logger.mlflow.tracking_uri={url}",
         f"paths.root_dir={tmp_path}", "hydra.job.chdir=false"],
        cwd=tmp_path, env=dict(_env(cache), LIT_TF_CACHE=str(cache)), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-2] == f"error: logger.mlflow.tracking_uri={url}: cannot reach an MLflow tracking server there " \
                        "(connection refused)", proc.stderr[-2000:]
    assert lines[-1].startswith("hint: ") and "make mlflow-server" in lines[-1]
    assert not cache.exists()  # stopped before any tokenizer or shard work
    assert not (tmp_path / "mlruns").exists()  # and nothing local was used instead

    t0 = time.monotonic()
    with pytest.raises(LitTfError, match="cannot reach"):
        check_server(url)
    assert time.monotonic() - t0 < 10  # MLflow's own retries would take about 4 minutes


def test_points_outliving_the_retry_budget_are_held_then_sent_or_saved(tmp_path, monkeypatch, caplog):
    """With no HTTP retries at all (`logger.mlflow.http_retries=0`), points logged while the server
    is down are held and sent once it is back; points it never takes are saved to the run's
    unsent file and reported, never dropped silently."""
    import mlflow

    from lit_tf.tracking.mlflow import make_logger, open_store

    server = TrackingServer(tmp_path / "server").start()
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")  # open_store sets it; restored afterwards
    tracking_before = mlflow.get_tracking_uri()
    try:
        store = open_store({"tracking_uri": server.url, "http_retries": 0}, check=True)
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
        unsent = tmp_path / "unsent.jsonl"
        logger = make_logger(store, "held", "held", {}, unsent_file=unsent)
        client = _client(server.url)
        logger.log_metrics({"m": 0.0}, step=0)
        logger.flush_metrics()
        assert _steps(client, logger.run_id, "m") == [0]

        server.kill()
        for step in range(1, 5):
            logger.log_metrics({"m": float(step)}, step=step)
        _wait_for("the sender to notice the outage", lambda: logger._sender.outage, 30)
        t0 = time.monotonic()
        logger.before_checkpoint()  # a checkpoint during the outage does not wait for the store ...
        assert time.monotonic() - t0 < 5
        assert not logger._sender._failed  # ... and gives none of the held points up (all 4 arrive below)
        server.start()
        logger.flush_metrics()  # one attempt now, instead of after the sender's pause
        assert _steps(client, logger.run_id, "m") == [0, 1, 2, 3, 4] and logger.unsent == 0

        server.kill()  # ... and it never comes back: the end of the run saves and reports what is left
        logger.log_metrics({"m": 5.0}, step=5)
        logger.flush_metrics()
        assert logger.unsent == 1
        (saved,) = [json.loads(line) for line in unsent.read_text().splitlines()]
        assert (saved["run_id"], saved["key"], saved["step"], saved["value"]) == (logger.run_id, "m", 5, 5.0)
        assert "did not answer" in saved["reason"]
        assert any("were NOT logged" in r.getMessage() and str(unsent) in r.getMessage() for r in caplog.records)
    finally:
        server.stop()
        mlflow.set_tracking_uri(tracking_before)
