"""Optuna studies on a real PostgreSQL shared by several sweeper processes
(`hydra.sweeper.storage=postgresql://...`), on a throw-away server that scripts/local_postgres.sh
starts on 127.0.0.1 (the script is what `make postgres` runs, so it is tested here too)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from conftest import ROOT, SHARED
from optuna.trial import TrialState
from pg_server import free_port, no_driver, no_server

optuna.logging.set_verbosity(optuna.logging.WARNING)

SCRIPT = ROOT / "scripts" / "local_postgres.sh"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class Postgres:
    url: str
    env: dict[str, str]  # what points scripts/local_postgres.sh at this server

    def script(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(SCRIPT), *args], env=self.env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL started by scripts/local_postgres.sh on 127.0.0.1 and a free port, in a temp
    folder under /tmp (run as root, the server runs as user postgres, which cannot enter pytest's
    root-only tmp_path); stopped and deleted afterwards."""
    reason = no_server()
    if reason:
        pytest.skip(reason)
    folder = Path(tempfile.mkdtemp(prefix="lit_tf_pg_"))
    pg = Postgres("", {**os.environ, "LIT_TF_PG_DIR": str(folder), "LIT_TF_PG_PORT": str(free_port())})
    try:
        up = pg.script("up")
        assert up.returncode == 0, up.stdout + up.stderr
        pg.url = pg.script("url").stdout.strip()
        assert pg.url == f"postgresql://postgres@127.0.0.1:{pg.env['LIT_TF_PG_PORT']}/optuna"
        assert f"storage URL: {pg.url}" in up.stdout and "make postgres-stop" in up.stdout
        yield pg
    finally:
        down = pg.script("down")
        shutil.rmtree(folder, ignore_errors=True)
    assert down.returncode == 0 and "stopped" in down.stdout, down.stdout + down.stderr


def sweep_cmd(tmp: Path, cache_dir: Path, *overrides: str) -> list[str]:
    """`python train.py -m sweep=smoke ...` run from the repository root, its outputs under tmp."""
    return [sys.executable, "train.py", "-m", "sweep=smoke", *overrides,
            f"paths.log_dir={tmp / 'outputs'}", f"paths.mlruns_dir={tmp / 'mlruns'}",
            f"paths.cache_dir={cache_dir}", f"paths.shared_data={SHARED}"]


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as f:  # a file, not a pipe: a full pipe would stall the sweeper
        return subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def wait(procs: list[subprocess.Popen], logs: list[Path], timeout: float = 400) -> None:
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, f"sweeper failed ({p.returncode}):\n{log.read_text()[-4000:]}"


def load(url: str, name: str) -> optuna.Study:
    from lit_tf.sweeping.study import open_storage  # picks the installed driver (psycopg2 or psycopg)

    return optuna.load_study(study_name=name, storage=open_storage(url))


def mlflow_runs(tmp: Path, study_name: str):
    from mlflow import MlflowClient

    c = MlflowClient(f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}")
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()], max_results=1000)
    runs = [r for r in runs if r.data.tags.get("optuna.study_name") == study_name]
    parents = [r for r in runs if r.data.tags.get("lit_tf.sweep") == "parent"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def check_study_done(study: optuna.Study, n_trials: int) -> list[optuna.trial.FrozenTrial]:
    """n_trials finished, each once; interrupted ones re-run exactly once with the same params."""
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert numbers == list(range(len(trials)))  # unique, none skipped
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == n_trials
    interrupted = [t for t in trials if t.user_attrs.get("lit_tf.interrupted")]
    retries = [t for t in trials if "lit_tf.retry_of" in t.user_attrs]
    assert sorted(t.user_attrs["lit_tf.retry_of"] for t in retries) == sorted(t.number for t in interrupted)
    for r in retries:
        assert r.params == trials[r.user_attrs["lit_tf.retry_of"]].params
    fresh = [t for t in trials if "lit_tf.retry_of" not in t.user_attrs]
    assert len({tuple(sorted(t.params.items())) for t in fresh}) == len(fresh)  # every sampled point is new
    assert len(trials) == n_trials + len(interrupted)
    return trials


def test_local_postgres_script_is_idempotent(postgres):
    again = postgres.script("up")
    assert again.returncode == 0 and "already running" in again.stdout and postgres.url in again.stdout
    status = postgres.script("status")
    assert status.returncode == 0 and status.stdout.startswith("running on 127.0.0.1:")


def test_two_sweepers_drive_one_study(postgres, tmp_path, cache_dir):
    name = f"pg-{uuid.uuid4().hex[:8]}"
    n_trials = 4
    cmd = sweep_cmd(tmp_path, cache_dir, f"hydra.sweeper.storage={postgres.url}", f"hydra.sweeper.study_name={name}",
                    f"hydra.sweeper.n_trials={n_trials}", "trainer.max_steps=4", "trainer.val_check_interval=2")
    logs = [tmp_path / f"sweeper{i}.log" for i in range(2)]
    wait([start(cmd, log) for log in logs], logs)

    study = load(postgres.url, name)
    trials = check_study_done(study, n_trials)
    assert len(trials) == n_trials  # nobody was interrupted
    assert len({t.user_attrs["lit_tf.owner"] for t in trials}) == 2  # both sweepers ran trials
    assert study.user_attrs["lit_tf.sweepers"] == 2
    for log in logs:  # each printed the study with its storage, and the whole study at the end
        text = log.read_text()
        assert f"study '{name}' in {postgres.url}" in text
        assert sum(f"trial {t.number} " in text for t in trials) >= 1
        assert f"{sum(t.state == TrialState.COMPLETE for t in trials)} complete, " in text
    # one parent run for the study, one child per trial under it
    parents, children = mlflow_runs(tmp_path, name)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in children) == list(range(n_trials))
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert {r.data.tags["optuna.state"] for r in children} <= {"COMPLETE", "PRUNED"}
    # outputs where they belong: one folder per trial number in the study's folder, nothing in the repo
    sweep_dir = tmp_path / "outputs" / "sweeps" / name
    assert sorted(p.name for p in sweep_dir.glob("trial_*")) == [f"trial_{n}" for n in range(n_trials)]
    assert (sweep_dir / "study" / "trials.csv").is_file() and (sweep_dir / "multirun.yaml").is_file()
    assert not list(sweep_dir.glob(".*.tmp")) and not list((sweep_dir / "study").glob(".*.tmp"))
    assert not (ROOT / "outputs" / "sweeps" / name).exists()


def test_a_dead_sweepers_trials_are_run_again_once_by_another(postgres):
    # in-process, on the real server: sweeper "node-a" is alive (its heartbeat runs), "node-b" died
    # on another machine (no heartbeat); two other sweepers recover the study at the same time
    from lit_tf.sweeping import study as st

    name = f"pg-{uuid.uuid4().hex[:8]}"
    storage = st.open_storage(postgres.url)
    study = optuna.create_study(study_name=name, storage=storage)
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    live, dead = study.ask(dist), study.ask(dist)
    for t, owner in ((live, "node-a:11"), (dead, "node-b:22")):
        t.set_user_attr(st.ATTR_OWNER, owner)
        study._storage.set_trial_system_attr(t._trial_id, st.SYS_OWNER_NS, f"{owner}-machine")
    watchers = [st.StaleWatcher(after_s=1.0), st.StaleWatcher(after_s=1.0)]
    requeued: list[int] = []
    with st.Heartbeat(study, "node-a:11", interval_s=0.1):
        deadline = time.monotonic() + 60
        while dead.number not in requeued:
            assert time.monotonic() < deadline, "the dead sweeper's trial was never recovered"
            for w in watchers:  # two sweepers' loops, each under the study lock
                with st.study_lock(postgres.url, storage, name):
                    requeued += st.recover(optuna.load_study(study_name=name, storage=storage), own="me:1", watcher=w)
            time.sleep(0.2)
    assert requeued == [dead.number]  # queued once, not once per sweeper
    trials = study.trials
    assert trials[live.number].state == TrialState.RUNNING  # alive: never stolen
    assert trials[dead.number].state == TrialState.FAIL and trials[dead.number].user_attrs["lit_tf.interrupted"]
    assert "heartbeat" in trials[dead.number].user_attrs["lit_tf.fail_reason"]
    retry = study.ask(dist)
    assert retry.params == dead.params and retry.user_attrs["lit_tf.retry_of"] == dead.number


@pytest.mark.slow
def test_a_killed_sweepers_trial_is_taken_over(postgres, tmp_path, cache_dir):
    # sweeper A is killed (-9) in the middle of a trial while sweeper B runs; B re-runs A's trial
    # once and the study still ends at n_trials
    name = f"pg-{uuid.uuid4().hex[:8]}"
    cmd = sweep_cmd(tmp_path, cache_dir, f"hydra.sweeper.storage={postgres.url}", f"hydra.sweeper.study_name={name}",
                    "trainer.max_steps=20", "trainer.val_check_interval=10")
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    a = start(cmd, logs[0])
    b = None
    try:
        deadline = time.monotonic() + 300
        while True:  # both sweepers have a trial running
            assert time.monotonic() < deadline and a.poll() is None, logs[0].read_text()[-3000:]
            from lit_tf.sweeping.study import open_storage

            if name in optuna.get_all_study_names(open_storage(postgres.url)):
                running = {t.user_attrs.get("lit_tf.owner")
                           for t in load(postgres.url, name).get_trials(states=(TrialState.RUNNING,))}
                if b is None and running:
                    b = start(cmd, logs[1])
                if len(running - {None}) == 2:
                    break
            time.sleep(0.2)
        os.killpg(a.pid, signal.SIGKILL)
        a.wait()
        wait([b], logs[1:])
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    study = load(postgres.url, name)
    trials = check_study_done(study, 4)
    interrupted = [t for t in trials if t.user_attrs.get("lit_tf.interrupted")]
    assert len(interrupted) == 1 and "process exited" in interrupted[0].user_attrs["lit_tf.fail_reason"]


def test_unreachable_database_is_one_clear_error(tmp_path, cache_dir):
    reason = no_driver()
    if reason:
        pytest.skip(reason)
    port = free_port()  # nothing listens there
    name = f"pg-{uuid.uuid4().hex[:8]}"
    t0 = time.monotonic()
    p = subprocess.run(sweep_cmd(tmp_path, cache_dir, f"hydra.sweeper.storage=postgresql://lit:s3cret-pw@127.0.0.1:{port}/optuna",
                                 f"hydra.sweeper.study_name={name}"),
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - t0
    assert p.returncode == 2, p.stderr[-3000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert lines[0].startswith(f"error: hydra.sweeper.storage: cannot use the postgresql database 'optuna' at 127.0.0.1:{port}: ")
    assert lines[1].startswith("hint: start a local PostgreSQL with `make postgres`")
    assert "s3cret-pw" not in p.stdout + p.stderr  # the password is never shown
    assert not (tmp_path / "outputs" / "sweeps" / name).exists()  # nothing written
    assert elapsed < 60
