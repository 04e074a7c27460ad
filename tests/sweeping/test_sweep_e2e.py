"""`python train.py -m sweep=smoke` end to end, as a user runs it (subprocesses, real storage,
real MLflow store), on the smoke study's tiny quickstart model."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import ROOT, SHARED, sigint_default
from optuna.trial import TrialState

optuna.logging.set_verbosity(optuna.logging.WARNING)


def sweep_cmd(tmp: Path, cache_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), "-m", "sweep=smoke",
            f"paths.log_dir={tmp / 'outputs'}", f"paths.mlruns_dir={tmp / 'mlruns'}",
            f"paths.cache_dir={cache_dir}", f"paths.shared_data={SHARED}", *overrides]


def run_sweep(tmp: Path, cache_dir: Path, *overrides: str, ok: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(sweep_cmd(tmp, cache_dir, *overrides), cwd=ROOT, capture_output=True, text=True, timeout=600)
    if ok and p.returncode != 0:
        raise AssertionError(f"sweep failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}")
    return p


def load(tmp: Path, name: str = "smoke") -> optuna.Study:
    from lit_tf.sweeping.study import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(str(tmp / "outputs/sweeps" / name / "optuna.journal")))


def mlflow_runs(tmp: Path):
    from mlflow import MlflowClient

    c = MlflowClient(f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}")
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("lit_tf.sweep") == "parent"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return c, parents, children


def test_smoke_sweep_stores_study_parent_and_child_runs(tmp_path, cache_dir):
    p = run_sweep(tmp_path, cache_dir)
    study = load(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    assert all(0.0 < t.value < 10.0 for t in study.trials)
    # the sampler's values reached the jobs: each trial's saved config holds its own lr
    for t in study.trials:
        saved = (tmp_path / f"outputs/sweeps/smoke/trial_{t.number}/config.yaml").read_text()
        assert f"lr: {t.params['optim.optimizer.lr']}" in saved
    client, parents, children = mlflow_runs(tmp_path)
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in children) == [0, 1, 2, 3]
    assert {r.data.tags["optuna.state"] for r in children} == {"COMPLETE"}
    assert float(children[0].data.params["optim.optimizer.lr"]) > 0  # sampled values are run params
    best = study.best_trial
    assert parent.data.metrics["best/val/mlm_loss"] == pytest.approx(best.value)
    assert float(parent.data.params["best.optim.optimizer.lr"]) == pytest.approx(best.params["optim.optimizer.lr"])
    arts = {a.path for a in client.list_artifacts(parent.info.run_id, "study")}
    assert {"study/trials.csv", "study/optimization_history.png", "study/param_importances.png",
            "study/parallel_coordinate.png"} <= arts
    assert parent.info.status == "FINISHED"
    # the printed reproduce command repeats the best trial's values
    assert f"best trial #{best.number}" in p.stdout
    assert f"optim.optimizer.lr={best.params['optim.optimizer.lr']!r}" in p.stdout
    # ... and running it as a single run gives the best trial's result again
    line = next(x for x in p.stdout.splitlines() if x.strip().startswith("reproduce:"))
    argv = shlex.split(line.split("reproduce:", 1)[1])
    assert argv[:3] == ["python", "train.py", "sweep=smoke"]
    single = subprocess.run([sys.executable, *argv[1:], "logger=none"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    value = float(next(x for x in single.stdout.splitlines() if "val/mlm_loss =" in x).split("=")[1])
    assert value == pytest.approx(best.value, rel=1e-3)
    # and the summary CLI reads the same storage
    out = subprocess.run([sys.executable, "-m", "lit_tf.cli.study", "summary",
                          str(tmp_path / "outputs/sweeps/smoke/optuna.journal"), "smoke"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "4 complete" in out and f"best: #{best.number}" in out


def test_failing_and_nan_trials_are_recorded_and_the_sweep_goes_on(tmp_path, cache_dir):
    # grid over 4 points: n_heads=3 does not divide d_model=32 (the model refuses the config);
    # lr=1e30 blows the weights up to a non-finite loss. Only (1e-3, 2) is a good trial.
    grid = ["hydra.sweeper.sampler.name=grid", "~hydra.sweeper.sampler.n_startup_trials",
            "~hydra.sweeper.params", "+hydra.sweeper.params={model.n_heads: 'choice(2, 3)', optim.optimizer.lr: 'choice(1e-3, 1e30)'}"]
    # at most 1 of 4 may fail: the sweep stops with a clear error, the study stays in storage
    p = run_sweep(tmp_path, cache_dir, *grid, "hydra.sweeper.max_failure_rate=0.25", ok=False)
    assert p.returncode != 0 and "failed (max_failure_rate=0.25)" in (p.stdout + p.stderr)
    stopped = load(tmp_path)
    assert sum(t.state == TrialState.FAIL for t in stopped.trials) == 2
    # the same command with a looser limit resumes and finishes the grid
    run_sweep(tmp_path, cache_dir, *grid, "hydra.sweeper.max_failure_rate=1.0")
    study = load(tmp_path)
    by_params = {(t.params["model.n_heads"], t.params["optim.optimizer.lr"]): t for t in study.trials}
    assert len(study.trials) == 4 and len(by_params) == 4
    assert by_params[(2, 1e-3)].state == TrialState.COMPLETE
    assert by_params[(2, 1e30)].state == TrialState.FAIL
    assert "not finite" in by_params[(2, 1e30)].user_attrs["lit_tf.fail_reason"]
    for lr in (1e-3, 1e30):
        t = by_params[(3, lr)]
        assert t.state == TrialState.FAIL and "n_heads" in t.user_attrs["lit_tf.fail_reason"]
    _, parents, children = mlflow_runs(tmp_path)
    assert len(parents) == 1  # the resumed sweep reopened the same parent run
    assert sorted(r.data.tags["optuna.state"] for r in children) == ["COMPLETE", "FAIL", "FAIL", "FAIL"]


def test_pruner_stops_a_clearly_worse_trial(tmp_path, cache_dir):
    # trial 0: a working lr; trial 1: lr ~ 0, so its validation loss stays at the initial value
    p = run_sweep(tmp_path, cache_dir, "hydra.sweeper.n_trials=2", "trainer.max_steps=24", "trainer.val_check_interval=4",
                  "hydra.sweeper.pruner={name: median, n_startup_trials: 1, n_warmup_steps: 0}",
                  "hydra.sweeper.enqueue=[{optim.optimizer.lr: 0.01, model.d_ff: 64},"
                  "{optim.optimizer.lr: 1.0e-9, model.d_ff: 64}]")
    study = load(tmp_path)
    good, bad = study.trials
    assert good.state == TrialState.COMPLETE and bad.state == TrialState.PRUNED
    pruned_at = bad.user_attrs["lit_tf.pruned_step"]
    assert pruned_at < 24 and max(bad.intermediate_values) == pruned_at
    assert bad.intermediate_values[pruned_at] > good.intermediate_values[pruned_at]
    assert "pruned at step" in p.stdout
    _, _, children = mlflow_runs(tmp_path)
    tags = {r.data.tags["optuna.trial_number"]: r.data.tags for r in children}
    assert tags["1"]["optuna.state"] == "PRUNED" and tags["1"]["optuna.pruned_step"] == str(pruned_at)


def test_ddp_trials_run_the_trial_config_on_every_rank_and_prune_together(tmp_path, cache_dir):
    # two CPU ranks (gloo) inside each trial; trial 1 is pruned: if rank 1 did not stop at the
    # same step as rank 0, its next collective would hang and the sweep would time out
    stray = ROOT / "mlflow.db"  # MLflow's default store: a rank without a run must not create it
    had_stray = stray.exists()
    p = run_sweep(tmp_path, cache_dir, "+trainer.strategy=ddp", "trainer.devices=2", "hydra.sweeper.n_trials=2",
                  "trainer.max_steps=24", "trainer.val_check_interval=4",
                  "hydra.sweeper.pruner={name: median, n_startup_trials: 1, n_warmup_steps: 0}",
                  "hydra.sweeper.enqueue=[{optim.optimizer.lr: 0.01, model.d_ff: 64},"
                  "{optim.optimizer.lr: 1.0e-9, model.d_ff: 64}]")
    study = load(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert p.stdout.count("running trial(s)") == 2  # rank 1 ran the trial, not a sweep of its own
    assert sorted(q.name for q in (tmp_path / "outputs/sweeps/smoke").glob("trial_*")) == ["trial_0", "trial_1"]
    assert had_stray or not stray.exists()


def interrupt_during_trial_1(tmp_path: Path, cache_dir: Path, sig: int) -> None:
    """Start the smoke sweep, send `sig` to its process group while trial 1 runs, wait for it to end."""
    cmd = sweep_cmd(tmp_path, cache_dir, "trainer.max_steps=30", "trainer.val_check_interval=10")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=sigint_default)
    journal = tmp_path / "outputs/sweeps/smoke/optuna.journal"
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            if journal.is_file():
                trials = load(tmp_path).trials
                if len(trials) >= 2 and trials[1].state == TrialState.RUNNING:
                    break
            time.sleep(0.2)
        else:
            pytest.fail("the sweep never reached trial 1")
        os.killpg(proc.pid, sig)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_ctrl_c_marks_the_running_trial_interrupted_at_once(tmp_path, cache_dir):
    interrupt_during_trial_1(tmp_path, cache_dir, signal.SIGINT)
    trial1 = load(tmp_path).trials[1]
    assert trial1.state == TrialState.FAIL and trial1.user_attrs.get("lit_tf.interrupted") is True
    _, parents, _ = mlflow_runs(tmp_path)
    assert parents[0].info.status == "KILLED"
    run_sweep(tmp_path, cache_dir, "trainer.max_steps=30", "trainer.val_check_interval=10")
    study = load(tmp_path)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 4


def test_killed_sweep_resumes_without_duplicate_numbers(tmp_path, cache_dir):
    interrupt_during_trial_1(tmp_path, cache_dir, signal.SIGKILL)
    assert any(t.state == TrialState.RUNNING for t in load(tmp_path).trials)  # nobody could mark it
    run_sweep(tmp_path, cache_dir, "trainer.max_steps=30", "trainer.val_check_interval=10")
    study = load(tmp_path)
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    interrupted = [t for t in study.trials if t.user_attrs.get("lit_tf.interrupted")]
    assert len(interrupted) == 1 and interrupted[0].state == TrialState.FAIL
    retry = [t for t in study.trials if t.user_attrs.get("lit_tf.retry_of") == interrupted[0].number]
    assert len(retry) == 1 and retry[0].params == interrupted[0].params
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 4  # the 4 planned trials finished (the smoke study's pruner may stop some)
    assert not any(t.state == TrialState.RUNNING for t in study.trials)
    dirs = {p.name for p in (tmp_path / "outputs/sweeps/smoke").glob("trial_*")}
    assert dirs <= {f"trial_{n}" for n in numbers}  # folders are named by trial number: never shared
    assert {f"trial_{t.number}" for t in finished} <= dirs


def test_two_joblib_workers_share_one_storage(tmp_path, cache_dir):
    # trials 0+1 run side by side, then 2+3; trial 2 (lr ~ 0) is pruned inside its joblib worker
    # against the curves of 0 and 1, which it can only see through the shared storage
    run_sweep(tmp_path, cache_dir, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2",
              "hydra.sweeper.gpus=[5,7]", "trainer.max_steps=24", "trainer.val_check_interval=4",
              "hydra.sweeper.enqueue=[{optim.optimizer.lr: 0.01, model.d_ff: 64},{optim.optimizer.lr: 0.005, model.d_ff: 32},"
              "{optim.optimizer.lr: 1.0e-9, model.d_ff: 64}]")
    study = load(tmp_path)
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    states = [t.state for t in study.trials]
    assert states[:3] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    assert states[3] in (TrialState.COMPLETE, TrialState.PRUNED)
    _, parents, children = mlflow_runs(tmp_path)
    assert len(parents) == 1 and len(children) == 4
    # each pair of concurrent trials got the two GPUs of the pool, one each
    gpus = {int(r.data.tags["optuna.trial_number"]): r.data.params["gpu"] for r in children}
    assert {gpus[0], gpus[1]} == {"5", "7"} and {gpus[2], gpus[3]} == {"5", "7"}


def test_multi_objective_study_with_nsgaii_in_an_rdb_storage(tmp_path, cache_dir):
    url = f"sqlite:///{tmp_path / 'studies.db'}"  # the RDB path (PostgreSQL on clusters)
    run_sweep(tmp_path, cache_dir, "hydra.sweeper.n_trials=3", "hydra.sweeper.metric=[val/mlm_loss,val/nsp_loss]",
              "hydra.sweeper.direction=[minimize,minimize]", "~hydra.sweeper.sampler",
              "+hydra.sweeper.sampler={name: nsgaii, population_size: 2}",
              "hydra.sweeper.study_name=pareto", f"hydra.sweeper.storage='{url}'")
    assert not (tmp_path / "outputs/sweeps/pareto/optuna.journal").exists()
    study = optuna.load_study(study_name="pareto", storage=url)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    assert study.metric_names == ["val/mlm_loss", "val/nsp_loss"]
    assert all(t.state == TrialState.COMPLETE and len(t.values) == 2 for t in study.trials)
    assert (tmp_path / "outputs/sweeps/pareto/study/pareto_front.png").is_file()


def test_typo_in_search_space_fails_before_any_trial(tmp_path, cache_dir):
    p = run_sweep(tmp_path, cache_dir, "+hydra.sweeper.params.optim.optimizer.lrr='interval(0.1, 0.2)'", ok=False)
    assert p.returncode != 0
    assert "params.optim.optimizer.lrr: no such config key (did you mean optim.optimizer.lr?)" in p.stderr
    assert not (tmp_path / "outputs/sweeps/smoke/optuna.journal").exists()
