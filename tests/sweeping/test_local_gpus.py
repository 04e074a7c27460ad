"""`hydra/launcher=local_gpus`: jobs side by side, one GPU of the pool each. On a machine without
GPUs the pool is named explicitly (ids CUDA never sees); the jobs train on CPU, and what is checked
is the pinning and the concurrency."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, SHARED

from lit_tf.lit.parallel import job_process_scope


def _run(tmp_path, cache_dir, *args):
    env = dict(os.environ, LIT_TF_CACHE=str(cache_dir), LIT_TF_SHARED_DATA=str(SHARED))
    return subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", "debug=smoke", *args,
                           f"paths.root_dir={tmp_path}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)


def test_jobs_run_in_waves_one_gpu_each(tmp_path, cache_dir):
    from mlflow.tracking import MlflowClient

    proc = _run(tmp_path, cache_dir, "hydra/launcher=local_gpus", "hydra.launcher.gpus=[5,7]", "seed=1,2,3")
    assert proc.returncode == 0, proc.stderr[-4000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])
    by_seed = {int(r.data.params["seed"]): r for r in runs}
    assert sorted(by_seed) == [1, 2, 3] and all(r.info.status == "FINISHED" for r in runs)
    # waves of one job per GPU: jobs 0 and 1 side by side on GPUs 5 and 7, then job 2 on GPU 5
    assert [by_seed[s].data.params["gpu"] for s in (1, 2, 3)] == ["5", "7", "5"]
    assert "local_gpus: jobs 0-1 on GPU(s) 5,7" in proc.stderr + proc.stdout


def test_no_gpu_pool_is_one_clear_line(tmp_path, cache_dir):
    if torch.cuda.is_available():
        pytest.skip("this machine has GPUs: gpus=auto finds them")
    proc = _run(tmp_path, cache_dir, "hydra/launcher=local_gpus", "seed=1,2")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: hydra/launcher=local_gpus: no CUDA GPU is visible on this machine; name the pool with "
        "hydra.launcher.gpus=[0,1,...] or use hydra/launcher=joblib"]


def test_a_job_pinned_to_a_gpu_sees_only_it_and_the_next_job_starts_clean():
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    with job_process_scope(gpu=3):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == before
