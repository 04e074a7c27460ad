"""Multiruns and Optuna sweeps as SLURM jobs (`hydra/launcher=slurm`) on a real one-node cluster
that scripts/local_slurm.sh starts for this module (tests/cluster/slurm_cluster.py).

The commands run as a user types them, from the repository root, with `SLURM_CONF` exported;
outputs and the MLflow store go to the test's folder (`paths.log_dir`, `paths.mlruns_dir`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from conftest import sigint_default
from optuna.trial import TrialState
from slurm_cluster import ROOT, Slurm, local_cluster, poll

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def slurm():
    """One real cluster for the module (scripts/local_slurm.sh up ... down)."""
    with local_cluster() as cluster:
        yield cluster


def train_cmd(tmp: Path, cache_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "train.py", "-m", *overrides, "hydra/launcher=slurm",
            f"paths.log_dir={tmp / 'outputs'}", f"paths.mlruns_dir={tmp / 'mlruns'}", f"paths.cache_dir={cache_dir}"]


def run(slurm: Slurm, cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, cwd=ROOT, env=slurm.env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd[1:])} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}")
    return p


def job_ids(sweep_dir: Path) -> list[str]:
    """SLURM ids of the jobs submitit submitted from this sweep folder ("7", or "5_0" for array tasks)."""
    return sorted(p.name[: -len("_submitted.pkl")] for p in sweep_dir.glob(".submitit/*/*/*_submitted.pkl"))


def job_of(output_dir: Path) -> str:
    """The SLURM job that ran this output folder (Hydra records submitit's job id as hydra.job.id)."""
    from omegaconf import OmegaConf

    return str(OmegaConf.load(output_dir / ".hydra" / "hydra.yaml").hydra.job.id)


def all_completed(slurm: Slurm, ids: list[str]):
    """sacct's final state of each job once all read COMPLETED (accounting may lag a moment)."""
    states = {}
    for job in ids:
        rows = slurm.sacct(job)
        states[job] = rows[-1][1] if rows else "?"
    return states if all(s == "COMPLETED" for s in states.values()) else None


def mlflow_runs(tmp: Path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}")
    return client, client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)


def load_study(tmp: Path, name: str = "smoke") -> optuna.Study:
    from lit_tf.sweeping.study import open_storage

    journal = tmp / "outputs" / "sweeps" / name / "optuna.journal"
    return optuna.load_study(study_name=name, storage=open_storage(str(journal)))


# ------------------------------------------------------------------ without a cluster
def test_requeued_checkpoint_is_the_earlier_attempts_own(tmp_path, monkeypatch):
    from lit_tf.lit.resume import requeued_checkpoint

    out = tmp_path / "multirun" / "0"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.ckpt").write_bytes(b"x")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    assert requeued_checkpoint(out) is None  # a first attempt (or no SLURM) starts as configured
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    assert requeued_checkpoint(out) is None
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert requeued_checkpoint(out) == out / "checkpoints" / "last.ckpt"
    # an attempt that resumed another run's checkpoint wrote beside it: run.json says where
    elsewhere = tmp_path / "runs" / "old" / "checkpoints"
    elsewhere.mkdir(parents=True)
    (elsewhere / "last.ckpt").write_bytes(b"y")
    (out / "run.json").write_text(json.dumps({"checkpoint_dir": str(elsewhere)}))
    assert requeued_checkpoint(out) == elsewhere / "last.ckpt"
    # stopped before its first checkpoint: a fresh start
    assert requeued_checkpoint(tmp_path / "multirun" / "1") is None


def test_requeue_outside_slurm_does_nothing(monkeypatch):
    from lit_tf.lit.failure import requeue_slurm_job

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert requeue_slurm_job() is False


def test_slurm_launcher_config_follows_the_trainer():
    from lit_tf.resolvers import slurm_gpus, slurm_tasks

    assert [slurm_tasks(d, "cpu") for d in (1, 2, "2", "auto", -1, [0, 1], "0,1")] == [1, 2, 2, 1, 1, 2, 2]
    assert slurm_tasks(4, "gpu") == 4 and slurm_gpus(4, "gpu") == 4 and slurm_gpus(2, "cpu") is None
    for bad in (-1, "auto"):
        with pytest.raises(ValueError, match="trainer.devices=<GPUs per node>"):
            slurm_tasks(bad, "gpu")
    with pytest.raises(ValueError, match="trainer.devices=0"):
        slurm_tasks(0, "cpu")


@pytest.mark.parametrize("overrides, nodes, tasks, gpus", [
    ([], 1, 1, None),
    (["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"], 2, 4, 4),
])
def test_slurm_launcher_composes(overrides, nodes, tasks, gpus):
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from lit_tf.cli.train import compose_config

    try:
        cfg = compose_config(["hydra/launcher=slurm", *overrides])
        launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    finally:
        GlobalHydra.instance().clear()
    assert launcher["_target_"] == "hydra_plugins.lit_tf_sweeper.slurm_launcher.SlurmLauncher"
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (nodes, tasks, gpus)
    assert launcher["additional_parameters"] == {"requeue": True, "open-mode": "append"}
    assert re.search(r"/\.submitit/[0-9_-]+/%j$", launcher["submitit_folder"])


# ------------------------------------------------------------------ on the cluster
@pytest.mark.slow  # the README's `python train.py -m seed=1,2 hydra/launcher=slurm` runs by default
def test_multirun_jobs_run_as_slurm_jobs(slurm, tmp_path, cache_dir):
    run(slurm, train_cmd(tmp_path, cache_dir, "debug=smoke", "seed=1,2"))
    (sweep,) = tmp_path.glob("outputs/quickstart/multiruns/*")
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")) == ["0", "1"]
    for num, seed in (("0", 1), ("1", 2)):
        assert (sweep / num / "checkpoints" / "last.ckpt").is_file()
        assert f"seed: {seed}" in (sweep / num / "config.yaml").read_text()
    ids = job_ids(sweep)
    assert len(ids) == 2 and len({i.split("_")[0] for i in ids}) == 1  # one array job, a task per job
    poll("both jobs COMPLETED in sacct", lambda: all_completed(slurm, ids), timeout=60)
    _, runs = mlflow_runs(tmp_path)
    assert sorted(Path(r.data.tags["output_dir"]).name for r in runs) == ["0", "1"]
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_sweep_trials_are_slurm_jobs_that_report_and_get_pruned(slurm, tmp_path, cache_dir):
    # two good trials first, then two with lr ~ 0 that the median pruner stops (from inside their jobs)
    enqueue = ("hydra.sweeper.enqueue=[{optim.optimizer.lr: 0.01, model.d_ff: 64}, {optim.optimizer.lr: 0.01, "
               "model.d_ff: 32}, {optim.optimizer.lr: 1.0e-9, model.d_ff: 64}, {optim.optimizer.lr: 1.0e-9, model.d_ff: 32}]")
    p = run(slurm, train_cmd(tmp_path, cache_dir, "sweep=smoke", "hydra.sweeper.n_jobs=2", "trainer.max_steps=24",
                             "trainer.val_check_interval=4", enqueue))
    study = load_study(tmp_path)
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2 + [TrialState.PRUNED] * 2
    for t in study.trials[2:]:
        step = t.user_attrs["lit_tf.pruned_step"]
        assert step < 24 and max(t.intermediate_values) == step  # reported by the job, up to the pruning
    assert p.stdout.count("pruned at step") == 2
    sweep = tmp_path / "outputs" / "sweeps" / "smoke"
    assert sorted(q.name for q in sweep.glob("trial_*")) == [f"trial_{i}" for i in range(4)]
    ids = job_ids(sweep)
    assert len(ids) == 4 and len({i.split("_")[0] for i in ids}) == 2  # two launches of two jobs
    poll("the four jobs COMPLETED in sacct", lambda: all_completed(slurm, ids), timeout=60)
    _, runs = mlflow_runs(tmp_path)
    (parent,) = [r for r in runs if r.data.tags.get("lit_tf.sweep") == "parent"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in children) == [0, 1, 2, 3]
    assert sorted(r.data.tags["optuna.state"] for r in children) == ["COMPLETE", "COMPLETE", "PRUNED", "PRUNED"]
    assert parent.info.status == "FINISHED"


def test_preempted_trial_requeues_itself_and_resumes_in_the_same_run(slurm, tmp_path, cache_dir):
    steps = 60
    cmd = train_cmd(tmp_path, cache_dir, "sweep=smoke", "hydra.sweeper.n_trials=1", f"trainer.max_steps={steps}",
                    "trainer.val_check_interval=20", "callbacks.last_checkpoint.every_n_train_steps=2")
    sweep = tmp_path / "outputs" / "sweeps" / "smoke"
    trial = sweep / "trial_0"
    with open(tmp_path / "sweep.log", "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=slurm.env, stdout=out, stderr=subprocess.STDOUT)
        try:
            # preempt it as SLURM does (SIGTERM to the job's processes) once it has trained a little
            poll("the trial's first checkpoint", lambda: (trial / "checkpoints" / "last.ckpt").is_file()
                 and (trial / "run.json").is_file(), timeout=300, every=0.1)
            job = job_of(trial)
            slurm.run("scancel", "--signal=TERM", job)
            run_id = json.loads((trial / "run.json").read_text())["mlflow_run_id"]
            assert proc.wait(timeout=400) == 0, (tmp_path / "sweep.log").read_text()[-5000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    log = "\n".join(p.read_text() for p in sweep.glob(f".submitit/*/{job}/*_log.*"))
    # in a training batch: last.ckpt at the end of that batch; during a validation: the periodic one
    stopped = re.search(r"stopped by SIGTERM (after step (\d+)|outside a training batch)", log)
    assert stopped, f"training ended before the signal reached it:\n{log[-3000:]}"
    assert stopped.group(2) is None or 2 <= int(stopped.group(2)) < steps
    assert f"SLURM job {job} requeued" in log and "Restored all states from the checkpoint" in log
    # SLURM ran the job twice: the preempted attempt, then the requeued one to completion
    poll("sacct: REQUEUED then COMPLETED",
         lambda: [s for _, s in slurm.sacct(job, duplicates=True)] == ["REQUEUED", "COMPLETED"], timeout=60)
    # the sweeper got the requeued attempt's result
    (t,) = load_study(tmp_path).trials
    assert t.state == TrialState.COMPLETE
    # one MLflow run across both attempts, every step trained once, the last checkpoint at max_steps
    assert json.loads((trial / "run.json").read_text())["mlflow_run_id"] == run_id
    client, runs = mlflow_runs(tmp_path)
    (child,) = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert child.info.run_id == run_id and child.info.status == "FINISHED"
    logged = [m.step for m in client.get_metric_history(run_id, "train/loss")]
    assert sorted(logged) == list(range(steps))
    assert t.value == pytest.approx(child.data.metrics["val/mlm_loss"])
    ckpt = torch.load(trial / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == steps


@pytest.mark.slow
def test_cancelled_job_and_ctrl_c_lose_no_finished_trial_and_the_rerun_resumes(slurm, tmp_path, cache_dir):
    cmd = train_cmd(tmp_path, cache_dir, "sweep=smoke", "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=2",
                    "trainer.max_steps=60", "trainer.val_check_interval=20", "callbacks.last_checkpoint.every_n_train_steps=2")
    sweep = tmp_path / "outputs" / "sweeps" / "smoke"

    def started(n: int) -> bool:
        return (sweep / f"trial_{n}" / "checkpoints" / "last.ckpt").is_file()

    def states() -> list[TrialState]:
        return [t.state for t in load_study(tmp_path).trials] if (sweep / "optuna.journal").is_file() else []

    with open(tmp_path / "sweep.log", "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=slurm.env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=sigint_default)
        try:
            poll("trial 1 training", lambda: started(1), timeout=300, every=0.1)
            first = job_ids(sweep)  # one array job, a task per trial
            cancelled = job_of(sweep / "trial_1")
            assert len(first) == 2 and cancelled in first
            slurm.run("scancel", cancelled)  # the user cancels trial 1's job while it trains: it must not come back
            poll("trial 0 told, trial 1 failed", lambda: states()[:2] == [TrialState.COMPLETE, TrialState.FAIL],
                 timeout=300)
            poll("trial 2's job running", lambda: (sweep / "trial_2" / ".hydra" / "hydra.yaml").is_file(),
                 timeout=300, every=0.1)
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C of the sweeper while trial 2's job runs
            assert proc.wait(timeout=120) != 0
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    study = load_study(tmp_path)
    t0, t1, t2 = study.trials
    assert t0.state == TrialState.COMPLETE
    assert t1.state == TrialState.FAIL and not t1.user_attrs.get("lit_tf.interrupted")
    assert f"SLURM job {cancelled} ended CANCELLED" in t1.user_attrs["lit_tf.fail_reason"]
    assert t2.state == TrialState.FAIL and t2.user_attrs.get("lit_tf.interrupted") is True
    attempts = [s for _, s in slurm.sacct(cancelled, duplicates=True)]
    assert len(attempts) == 1 and attempts[0].startswith("CANCELLED"), attempts  # not requeued
    log = "\n".join(p.read_text() for p in sweep.glob(f".submitit/*/{cancelled}/*_log.err"))
    assert "lit_tf: SLURM job" in log and "not requeued: it is COMPLETING" in log, log[-3000:]
    third = job_of(sweep / "trial_2")
    poll("the launcher's cancel of trial 2's job", lambda: not slurm.queue()
         and slurm.sacct(third)[-1][1].startswith("CANCELLED"), timeout=120)
    # the same command again: trial 0 stays as it was, the interrupted trial 2 runs again (as trial 3)
    run(slurm, cmd)
    again = load_study(tmp_path)
    assert len(again.trials) == 4
    assert again.trials[0].state == TrialState.COMPLETE and again.trials[0].value == t0.value
    # each sweeper process keeps submitit's files apart: a restarted cluster reuses job ids
    assert len(list(sweep.glob(".submitit/*"))) == 2
    retry = again.trials[3]
    assert retry.user_attrs.get("lit_tf.retry_of") == 2 and retry.params == t2.params
    assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
