"""Failure model: what survives kill -9, preemption signals, NaN steps, a kill during a checkpoint
write and several processes sharing one MLflow store. Runs `train.py` as a user does
(subprocesses, real store, real checkpoints) on the smoke-sized quickstart model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, SHARED, sigint_default
from failure_helpers import NaNGradAt

HERE = Path(__file__).resolve().parent
# 12 steps, validation at 4 and 8, last.ckpt also every 3 steps; dropout on so the RNG state matters
RUN = ["debug=smoke", "trainer.max_steps=12", "trainer.val_check_interval=4", "model.dropout=0.1",
       "callbacks.last_checkpoint.every_n_train_steps=3", "hydra.job.chdir=false"]


def _env(cache_dir: Path) -> dict:
    return dict(os.environ, LIT_TF_CACHE=str(cache_dir), LIT_TF_SHARED_DATA=str(SHARED),
                PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))


def _cmd(root: Path, *overrides: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), *RUN, f"paths.root_dir={root}", *overrides]


def _block(step: int, marker: Path) -> list[str]:
    return ["+callbacks.block._target_=failure_helpers.BlockAt", f"+callbacks.block.step={step}",
            f"+callbacks.block.marker={marker}"]


def _train(root: Path, cache_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(root, *overrides), cwd=root, env=_env(cache_dir), capture_output=True, text=True,
                          timeout=300)


def _start_and_wait(root: Path, cache_dir: Path, marker: Path, *overrides: str) -> subprocess.Popen:
    """Start train.py and return once it sits at the BlockAt step (its marker file exists)."""
    proc = subprocess.Popen(_cmd(root, *overrides), cwd=root, env=_env(cache_dir), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default)
    end = time.monotonic() + 240
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            _, err = proc.communicate()
            raise AssertionError(f"train.py never reached the blocking step (rc={proc.returncode}):\n{err[-3000:]}")
        time.sleep(0.05)
    return proc


def _ckpt(root: Path) -> dict:
    (path,) = root.glob("outputs/quickstart/runs/*/checkpoints/last.ckpt")
    return torch.load(path, map_location="cpu", weights_only=True)


def _run_id(root: Path) -> str:
    import json

    (sidecar,) = {p for p in root.glob("outputs/quickstart/runs/*/run.json")
                  if (p.parent / "checkpoints").is_dir()}
    return json.loads(sidecar.read_text())["mlflow_run_id"]


def _client(root: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"] == 12
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k  # bitwise: CPU kernels are deterministic here


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
    """The uninterrupted run: final weights and the train/loss history."""
    root = tmp_path_factory.mktemp("reference")
    p = _train(root, cache_dir)
    assert p.returncode == 0, p.stderr[-3000:]
    run_id = _run_id(root)
    return _ckpt(root), _history(_client(root), run_id, "train/loss")


def test_kill_9_mid_epoch_then_resume_is_the_uninterrupted_run(tmp_path, cache_dir, reference):
    ref_ckpt, ref_loss = reference
    marker = tmp_path / "at_step"
    # a slow store: points logged before the step 6 checkpoint are still queued in the sender when
    # the kill comes, unless the checkpoint waited for them
    slow = ["+callbacks.slow_store._target_=failure_helpers.SlowStore", "+callbacks.slow_store.delay_s=0.5"]
    proc = _start_and_wait(tmp_path, cache_dir, marker, *_block(7, marker), *slow)
    proc.send_signal(signal.SIGKILL)  # no handler, no cleanup: the process is gone at step 7
    proc.communicate(timeout=60)
    assert _ckpt(tmp_path)["global_step"] == 6  # the periodic last.ckpt (every 3 steps)
    run_id = _run_id(tmp_path)
    assert _client(tmp_path).get_run(run_id).info.status == "RUNNING"  # kill -9 leaves no chance to say more

    p = _train(tmp_path, cache_dir, "ckpt_path=last")
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"MLflow run: {run_id}" in p.stdout  # the same run continues
    _assert_same_weights(ref_ckpt, _ckpt(tmp_path))
    client = _client(tmp_path)
    assert client.get_run(run_id).info.status == "FINISHED"
    # steps 6-7 ran twice (before the kill and after the resume) but are recorded once, with the
    # uninterrupted run's values: no repeated and no skipped batch
    assert _history(client, run_id, "train/loss") == ref_loss
    assert [s for s, _ in ref_loss] == list(range(12))


@pytest.mark.parametrize("sig", ["SIGTERM", pytest.param("SIGUSR1", marks=pytest.mark.slow)])
def test_preemption_signal_checkpoints_then_resume_is_the_uninterrupted_run(tmp_path, cache_dir, reference, sig):
    ref_ckpt, ref_loss = reference
    marker = tmp_path / "at_step"
    proc = _start_and_wait(tmp_path, cache_dir, marker, *_block(6, marker))
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=120)
    signum = int(getattr(signal, sig))
    assert proc.returncode == 128 + signum, err[-3000:]
    assert f"stopped by {sig} after step 7" in err and "ckpt_path=last" in err
    assert _ckpt(tmp_path)["global_step"] == 7  # written at the end of the batch the signal arrived in
    run_id = _run_id(tmp_path)
    run = _client(tmp_path).get_run(run_id)
    assert run.info.status == "KILLED" and sig in run.data.tags["lit_tf.stopped"]

    p = _train(tmp_path, cache_dir, "ckpt_path=last")
    assert p.returncode == 0, p.stderr[-3000:]
    _assert_same_weights(ref_ckpt, _ckpt(tmp_path))
    client = _client(tmp_path)
    assert client.get_run(run_id).info.status == "FINISHED"
    assert _history(client, run_id, "train/loss") == ref_loss


def test_ctrl_c_ends_the_run_killed(tmp_path, cache_dir):
    marker = tmp_path / "at_step"
    proc = _start_and_wait(tmp_path, cache_dir, marker, *_block(5, marker))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, err[-3000:]
    run = _client(tmp_path).get_run(_run_id(tmp_path))
    assert run.info.status == "KILLED" and "KeyboardInterrupt" in run.data.tags["lit_tf.stopped"], run.data.tags
    assert _ckpt(tmp_path)["global_step"] == 4  # the last good checkpoint (validation at step 4) is kept


_WRITER = r"""
import os, sys, time, torch
from lit_tf.lit.checkpoint_io import AtomicCheckpointIO
path, marker, where = sys.argv[1:]
io = AtomicCheckpointIO()
io.save_checkpoint({"global_step": 1, "w": torch.zeros(8)}, path)

def stop_here(*_):
    open(marker, "w").write("writing")
    time.sleep(300)

class Blocker:  # pickled while torch.save streams the checkpoint
    def __reduce__(self):
        stop_here()

big = {"global_step": 2, "w": torch.ones(16 * 2**20)}  # 64 MB
if where == "before_rename":
    os.fsync = stop_here  # every byte written, not yet renamed into place
else:
    big["blocker"] = Blocker()
io.save_checkpoint(big, path)
"""


@pytest.mark.parametrize("where", ["mid_write", "before_rename"])
def test_sigkill_during_checkpoint_write_keeps_previous_last_ckpt(tmp_path, where):
    path, marker = tmp_path / "last.ckpt", tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(marker), where], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < end, proc.communicate()[1][-3000:]
        time.sleep(0.02)
    tmp_files = list(tmp_path.glob(".last.ckpt.*.tmp"))
    assert len(tmp_files) == 1  # the new checkpoint was being written next to the old one
    if where == "before_rename":
        assert tmp_files[0].stat().st_size > 60 * 2**20
    proc.kill()
    proc.wait(timeout=60)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 1 and torch.equal(ckpt["w"], torch.zeros(8))

    from lit_tf.lit.checkpoint_io import AtomicCheckpointIO

    AtomicCheckpointIO().save_checkpoint({"global_step": 3}, path)  # the next save cleans up the leftover
    assert torch.load(path, weights_only=True)["global_step"] == 3
    assert not list(tmp_path.glob(".last.ckpt.*.tmp"))


# ------------------------------------------------------------------------------------ non-finite steps
SMOKE_NAN = ["debug=smoke", "trainer.max_steps=12", "trainer.val_check_interval=4",
             "callbacks.last_checkpoint.every_n_train_steps=2"]


def test_nan_gradient_stops_naming_the_step_and_keeps_last_good_checkpoint(compose, tmp_path):
    from lit_tf.cli.train import train
    from lit_tf.lit.failure import NonFiniteError

    with pytest.raises(NonFiniteError, match="gradient norm .* is not finite at training step 5"):
        train(compose(SMOKE_NAN), callbacks=[NaNGradAt([5])])
    ckpt = torch.load(tmp_path / "outputs/quickstart/runs/run/checkpoints/last.ckpt", map_location="cpu",
                      weights_only=True)
    assert ckpt["global_step"] == 4  # the last good step
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    run_id = _run_id(tmp_path)
    client = _client(tmp_path)
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert "step 5" in run.data.tags["lit_tf.error"] and "NonFiniteError" in run.data.tags["lit_tf.error"]
    assert "error/traceback.txt" in {a.path for a in client.list_artifacts(run_id, "error")}
    text = Path(client.download_artifacts(run_id, "error/traceback.txt", str(tmp_path))).read_text()
    assert "Traceback" in text and "NonFiniteError" in text


def test_any_crash_ends_the_run_failed_with_the_error(compose, tmp_path):
    import lightning as L

    from lit_tf.cli.train import train

    class Boom(L.Callback):
        def on_validation_end(self, trainer, pl_module):
            raise OSError("disk full (simulated)")

    with pytest.raises(OSError, match="disk full"):
        train(compose(SMOKE_NAN), callbacks=[Boom()])
    run = _client(tmp_path).get_run(_run_id(tmp_path))
    assert run.info.status == "FAILED" and run.data.tags["lit_tf.error"] == "OSError: disk full (simulated)"


def test_nonfinite_skip_mode_skips_the_step_and_counts_it(compose, tmp_path):
    from lit_tf.cli.train import train

    m = train(compose([*SMOKE_NAN, "trainer.nonfinite=skip"]), callbacks=[NaNGradAt([3, 5])])
    assert m["train/nonfinite_skipped"] == 2.0
    ckpt = torch.load(m["last_ckpt"], map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 12
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    run = _client(tmp_path).get_run(m["run_id"])
    assert run.info.status == "FINISHED" and run.data.metrics["train/nonfinite_skipped"] == 2.0


def test_nonfinite_mode_typo_is_named(compose):
    from lit_tf.cli.train import train

    with pytest.raises(ValueError, match="trainer.nonfinite='skipp'"):
        train(compose(["debug=smoke", "trainer.nonfinite=skipp", "logger=none"]))


# ------------------------------------------------------------------------------------ one store, many writers
def test_four_processes_and_a_joblib_sweep_share_one_store(tmp_path, cache_dir):
    procs = [subprocess.Popen(_cmd(tmp_path, "trainer.max_steps=6", f"optim.optimizer.lr=0.00{i + 1}",
                                   f"paths.output_dir={tmp_path}/out{i}"),
                              cwd=tmp_path, env=_env(cache_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(4)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        assert "database is locked" not in err
    sweep = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-m", "sweep=smoke", "hydra/launcher=joblib",
         "hydra.launcher.n_jobs=4", "hydra.sweeper.n_jobs=4", f"paths.log_dir={tmp_path / 'outputs'}",
         f"paths.mlruns_dir={tmp_path / 'mlruns'}", f"paths.cache_dir={cache_dir}", f"paths.shared_data={SHARED}"],
        cwd=ROOT, env=_env(cache_dir), capture_output=True, text=True, timeout=900)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    assert "database is locked" not in sweep.stderr

    import optuna

    from lit_tf.sweeping.study import open_storage

    study = optuna.load_study(study_name="smoke",
                              storage=open_storage(str(tmp_path / "outputs/sweeps/smoke/optuna.journal")))
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    client = _client(tmp_path)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)
    singles = [r for r in runs if "lit_tf.sweep" not in r.data.tags and "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(singles) == 4 and all(r.info.status == "FINISHED" for r in singles)
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in children) == [0, 1, 2, 3]
    assert all(r.info.status == "FINISHED" for r in children)
    assert len({r.info.run_name for r in singles}) == 4
