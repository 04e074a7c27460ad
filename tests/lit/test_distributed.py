"""Data parallelism for real: `trainer=ddp_cpu` starts 2 gloo ranks through Lightning's own launcher
(`python train.py ...` subprocesses), alone and inside a multirun; FSDP's configuration; activation
checkpointing. GPU runs (`trainer=ddp`, `trainer=fsdp`, bf16) are at the end and skip without CUDA."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, SHARED

SMOKE = ["debug=smoke"]


def _train(root: Path, cache_dir: Path, *args: str, timeout: int = 400) -> subprocess.CompletedProcess:
    """`python train.py ARGS` as typed, with this test's folder as the project root (tests/cli on the
    path for its test-only callbacks)."""
    env = dict(os.environ, LIT_TF_CACHE=str(cache_dir), LIT_TF_SHARED_DATA=str(SHARED),
               PYTHONPATH=os.pathsep.join([str(ROOT / "tests" / "cli"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args, f"paths.root_dir={root}"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-4000:]}"
    return proc


def _client(root: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")


def _runs(root: Path, experiment: str) -> list:
    client = _client(root)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def _check_ddp_job(root: Path, out_dir: Path, run) -> None:
    """One job on 2 ranks: its folder, its one MLflow run, identical weights on both ranks."""
    info = json.loads((out_dir / "run.json").read_text())
    assert info["mlflow_run_id"] == run.info.run_id
    assert info["replicas"]["world_size"] == 2 and len(info["replicas"]["weights_sha256"]) == 64
    assert run.info.status == "FINISHED"
    assert run.data.tags["lit_tf.replicas"].startswith("2 ranks, identical weights")
    assert (out_dir / "checkpoints" / "last.ckpt").is_file()
    # rank 0 logs: every step once (rank 1 has no run to log to)
    steps = [m.step for m in _client(root).get_metric_history(run.info.run_id, "train/loss")]
    assert sorted(steps) == sorted(set(steps)) and len(steps) >= 4, steps


@pytest.mark.slow  # the README's `python train.py trainer=ddp_cpu trainer.devices=2` runs by default (replicas checked)
def test_ddp_cpu_two_ranks_one_folder_one_run(tmp_path, cache_dir):
    # with activation checkpointing, applied from outside the model, on both ranks
    _train(tmp_path, cache_dir, *SMOKE, "trainer=ddp_cpu", "trainer.devices=2", "trainer.activation_checkpointing=true")
    folders = list((tmp_path / "outputs" / "quickstart" / "runs").iterdir())
    assert len(folders) == 1, folders  # rank 1 wrote into rank 0's folder, not a folder of its own
    runs = _runs(tmp_path, "quickstart")
    assert len(runs) == 1, [r.info.run_name for r in runs]
    _check_ddp_job(tmp_path, folders[0], runs[0])
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns" / "0").exists()  # no stray default store


def test_validation_metrics_do_not_depend_on_the_number_of_ranks(tmp_path, cache_dir):
    """The same global batch (2 ranks x 8 rows, 1 rank x 16 rows) and the same weights (lr=0): every
    validation metric, masked-LM ones included, agrees within 1e-5."""
    same = [*SMOKE, "optim.optimizer.lr=0.0"]
    for name, args in (("two", ["trainer=ddp_cpu", "data.batch_size=8"]), ("one", ["data.batch_size=16"])):
        (tmp_path / name).mkdir()
        _train(tmp_path / name, cache_dir, *same, *args)
    two, one = (_runs(tmp_path / d, "quickstart")[0].data.metrics for d in ("two", "one"))
    val = sorted(k for k in one if k.startswith("val/"))
    assert {"val/loss", "val/mlm_loss", "val/mlm_acc", "val/nsp_loss", "val/nsp_acc"} <= set(val)
    for k in val:
        assert two[k] == pytest.approx(one[k], abs=1e-5, rel=1e-5), k


def test_ddp_multirun_every_pretraining_family(tmp_path, cache_dir):
    """A 2-job multirun (GPT and XLM; BERT is the test above), each job on 2 ranks: one folder and one
    MLflow run per job, and the next job starts clean after the first one's process group."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data missing at {SHARED}")
    _train(tmp_path, cache_dir, "-m", *SMOKE, "trainer=ddp_cpu", "experiment=gpt_clm_en,xlm_mlm_tlm_en_es",
           timeout=600)
    for name in ("gpt_clm_en", "xlm_mlm_tlm_en_es"):
        jobs = [p for p in (tmp_path / "outputs" / name / "multiruns").glob("*/*") if p.is_dir()]
        assert len(jobs) == 1, jobs
        runs = _runs(tmp_path, name)
        assert len(runs) == 1, [r.info.run_name for r in runs]
        _check_ddp_job(tmp_path, jobs[0], runs[0])


def test_a_bad_step_on_one_rank_is_skipped_on_every_rank(tmp_path, cache_dir):
    """A NaN gradient on rank 1 only (after DDP's averaging, as a shard's would be under FSDP): both
    ranks must skip that update, or their weights part ways (which ReplicaCheck would report)."""
    _train(tmp_path, cache_dir, *SMOKE, "trainer=ddp_cpu", "trainer.nonfinite=skip",
           "+callbacks.nan._target_=failure_helpers.NaNGradAt", "+callbacks.nan.steps=[3]", "+callbacks.nan.rank=1")
    (run,) = _runs(tmp_path, "quickstart")
    assert run.data.metrics["train/nonfinite_skipped"] == 1.0
    _check_ddp_job(tmp_path, next((tmp_path / "outputs" / "quickstart" / "runs").iterdir()), run)


@pytest.mark.slow
def test_ddp_fine_tuning(tmp_path, cache_dir):
    if not SHARED.is_dir():
        pytest.skip(f"shared data missing at {SHARED}")
    _train(tmp_path, cache_dir, "experiment=finetune_sst2", *SMOKE, "trainer=ddp_cpu")
    runs = _runs(tmp_path, "finetune_sst2")
    assert len(runs) == 1
    _check_ddp_job(tmp_path, next((tmp_path / "outputs" / "finetune_sst2" / "runs").iterdir()), runs[0])
    assert "test/acc" in runs[0].data.metrics


# ------------------------------------------------------------------------------------------ FSDP
@pytest.mark.parametrize("family", ["bert", "gpt", "xlm"])
def test_fsdp_wraps_the_familys_own_block(family, compose):
    from lightning.pytorch.strategies import FSDPStrategy
    from omegaconf import OmegaConf

    from lit_tf.lit.parallel import build_strategy
    from lit_tf.models.families import FAMILIES

    cfg = compose(["trainer=fsdp"])
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert trainer["strategy"] == "fsdp" and trainer["precision"] == "bf16-mixed"
    strategy = build_strategy(trainer["strategy"], trainer["fsdp"], FAMILIES[family].block)
    assert isinstance(strategy, FSDPStrategy)
    policy = strategy.kwargs["auto_wrap_policy"]
    assert set(policy._module_classes) == {FAMILIES[family].block}


def test_fsdp_without_gpus_says_why(tmp_path, cache_dir):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: trainer=fsdp runs (see the GPU tests)")
    env = dict(os.environ, LIT_TF_CACHE=str(cache_dir))
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *SMOKE, "trainer=fsdp", f"paths.root_dir={tmp_path}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("error: trainer=fsdp needs CUDA GPUs"), proc.stderr[-2000:]
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.ckpt"))


def test_fsdp_options_only_with_fsdp():
    from lit_tf.errors import LitTfError
    from lit_tf.lit.parallel import check_trainer

    with pytest.raises(LitTfError, match="trainer.fsdp is set but trainer.strategy=ddp"):
        check_trainer({"strategy": "ddp", "fsdp": {"sharding_strategy": "FULL_SHARD"}})


# ------------------------------------------------------------------------ activation checkpointing
def _tiny(family: str):
    from lit_tf.lit.build import build_model

    objective = {"bert": {"name": "mlm_nsp", "nsp": True}, "gpt": {"name": "clm"}, "xlm": {"name": "xlm"}}[family]
    cfg = {"family": family, "d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64, "max_seq_len": 32,
           "dropout": 0.1}
    return build_model(cfg, objective, vocab_size=50, languages=["en", "es"] if family == "xlm" else [])


@pytest.mark.parametrize("family", ["bert", "gpt", "xlm"])
def test_activation_checkpointing_same_gradients_same_state_dict(family):
    from lit_tf.lit.parallel import apply_activation_checkpointing
    from lit_tf.models.families import FAMILIES

    ids = torch.randint(5, 50, (3, 16), generator=torch.Generator().manual_seed(0))

    def grads(model):
        torch.manual_seed(7)  # the same dropout masks (checkpointing replays the RNG in recompute)
        out = model(ids, lang_ids=torch.zeros_like(ids)) if family == "xlm" else model(ids)
        logits = out.lm_logits if family == "gpt" else out.mlm_logits
        logits.float().pow(2).mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    torch.manual_seed(0)
    plain = _tiny(family)
    torch.manual_seed(0)
    ckpt = _tiny(family)
    keys = list(ckpt.state_dict())
    assert apply_activation_checkpointing(ckpt, FAMILIES[family].block) == 2
    assert list(ckpt.state_dict()) == keys  # checkpoints stay loadable either way
    g0, g1 = grads(plain), grads(ckpt)
    assert g0.keys() == g1.keys() and g0
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-5, atol=1e-6, msg=n)


# ------------------------------------------------------------------------------------------- GPU
GPU_FAMILIES = [("quickstart", False), ("gpt_clm_en", True), ("xlm_mlm_tlm_en_es", True), ("finetune_sst2", True)]


@pytest.mark.gpu
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
@pytest.mark.parametrize("experiment,needs_shared", GPU_FAMILIES)
def test_gpu_strategies_bf16_every_family(strategy, experiment, needs_shared, tmp_path, cache_dir):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if needs_shared and not SHARED.is_dir():
        pytest.skip(f"shared data missing at {SHARED}")
    _train(tmp_path, cache_dir, f"experiment={experiment}", *SMOKE, f"trainer={strategy}",
           "trainer.precision=bf16-mixed", "trainer.activation_checkpointing=true", "logger=none")
