"""`python train.py [experiment=NAME] [key=value ...]`: the training entry point.

`train(cfg) -> dict` does the work and returns the final metrics (usable from tests and
sweeps); `main()` checks the command line, then hands over to Hydra.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from lit_tf.cli.config_check import check_overrides
from lit_tf.errors import traceback_requested, user_errors

log = logging.getLogger("lit_tf")

CONFIG_DIR = Path(os.environ.get("LIT_TF_CONFIG_DIR", Path(__file__).resolve().parents[2] / "conf"))
# --------------------------------------------------------------------------------------------
# programmatic use (tests, benchmarks, notebooks)
# --------------------------------------------------------------------------------------------
def compose_config(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose conf/train.yaml with overrides outside `python train.py`, ready for `train(cfg)`.

    Paths default to the current directory and a fresh time-stamped run folder, as on the
    command line; pass `paths.*` overrides to move them.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[f"paths.root_dir={os.getcwd()}", "paths.output_dir=${paths.runs_root}/${now:%Y-%m-%d_%H-%M-%S_%f}",
                       *overrides],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    return cfg


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------
def train(cfg: DictConfig, callbacks: list | None = None) -> dict[str, Any]:
    """Pretrain or fine-tune (or continue) as described by the composed config; return final metrics.

    `callbacks` are added to those the config names. Launched by lit_tf's Optuna sweeper
    (`trial.number` set), the run also reports to its trial and stops early when pruned.
    Config values that cannot work raise a LitTfError before any data is read.
    """
    from lit_tf.lit.parallel import check_trainer, job_process_scope
    from lit_tf.lit.resume import requeued_checkpoint, resolve_checkpoint
    from lit_tf.lit.validate import RunConfigError, check_run_config
    from lit_tf.sweeping.trial import job_trial
    from lit_tf.tracking.run import RunEnd, store_of

    check_run_config(*(OmegaConf.to_container(cfg[k], resolve=True) for k in ("data", "model", "objective")),
                     init_from=cfg.get("init_from"))
    from lit_tf.lit.failure import NONFINITE_MODES

    nonfinite = str(cfg.trainer.get("nonfinite") or "stop")
    if nonfinite not in NONFINITE_MODES:
        raise RunConfigError(f"trainer.nonfinite={nonfinite!r}: expected one of {', '.join(NONFINITE_MODES)}")
    check_trainer(OmegaConf.to_container(cfg.trainer, resolve=True))
    mcfg = cfg.logger.get("mlflow") if cfg.get("logger") else None
    interval = mcfg.get("system_metrics_interval", 10) if mcfg else 10
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
        raise RunConfigError(f"logger.mlflow.system_metrics_interval={interval!r}: expected seconds > 0 "
                             "(logger.mlflow.system_metrics=false turns the sampler off)")
    # a requeued SLURM job continues from its own earlier attempt's checkpoint, whatever ckpt_path says
    requeued = requeued_checkpoint(Path(cfg.paths.output_dir))
    if requeued is not None:
        log.info("requeued SLURM job (restart %s): resuming from %s", os.environ.get("SLURM_RESTART_COUNT"), requeued)
    resume = resolve_checkpoint(str(requeued) if requeued else cfg.get("ckpt_path"),
                                Path(cfg.paths.runs_root))  # a bad ckpt_path fails before any work
    store_of(cfg, check=True)  # logger.mlflow.*: a tracking server must answer now, not after minutes of retries

    with job_process_scope(gpu=cfg.get("gpu")):
        trial = job_trial(cfg)  # this job's Optuna trial when a sweep launched it
        with RunEnd() as run_end:
            return _train(cfg, list(callbacks or []), trial, resume, run_end)


def _train(cfg: DictConfig, callbacks: list, trial, resume: tuple[Path | None, dict],
           run_end: Any = None) -> dict[str, Any]:
    """Build (lit_tf.lit.recipes), open the MLflow run (lit_tf.tracking.run), fit, test, report."""
    import lightning as L
    import torch

    from lit_tf import allocator
    from lit_tf.lit import recipes, reports
    from lit_tf.lit.checkpoint import safe_loading
    from lit_tf.lit.checkpoint_io import AtomicCheckpointIO
    from lit_tf.lit.failure import NonFiniteGuard, Preemption
    from lit_tf.lit.parallel import ReplicaCheck, process_rank
    from lit_tf.lit.perf import Throughput
    from lit_tf.lit.resume import RUN_FILE, write_json_atomic
    from lit_tf.models.layers import set_kernels
    from lit_tf.tracking import run as tracked
    from lit_tf.tracking.callbacks import DatasetInputs, MetricsBeforeCheckpoints

    t0 = time.time()
    L.seed_everything(int(cfg.seed), workers=True)
    torch.set_float32_matmul_precision(str(cfg.get("matmul_precision", "high")))
    set_kernels(fast_dropout=bool(cfg.speed.fast_dropout), attention=str(cfg.speed.attention))
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_file, prev_run = resume  # resolved (and checked) once, in train()
    # A resumed run keeps writing checkpoints next to the ones it resumes from.
    ckpt_dir = ckpt_file.parent if ckpt_file is not None else out_dir / "checkpoints"

    store = tracked.store_of(cfg)  # fine-tuning may start from an MLflow run in it
    built = recipes.build_run(cfg, ckpt_file, tracking_uri=store.tracking_uri, where=str(store))
    trainer_cfg, nonfinite = recipes.trainer_settings(cfg, built)
    module = recipes.build_module(cfg, built)
    logger = tracked.open_run(cfg, built, out_dir, resume, trial, CONFIG_DIR)
    if run_end is not None:
        run_end.logger = logger
    run_info = {"mlflow_run_id": logger.run_id if logger else None, "tokenizer_key": built.tokenizer_key,
                "experiment": str(cfg.name), "checkpoint_dir": str(ckpt_dir)}
    if process_rank() == 0:  # DDP ranks > 0 share the folder and have no MLflow run: rank 0 writes
        for folder in dict.fromkeys((out_dir, ckpt_dir.parent)):
            write_json_atomic(folder / RUN_FILE, run_info)
        OmegaConf.save(tracked.job_config(cfg), out_dir / "config.yaml", resolve=False)

    pruning = trial.callback() if trial is not None else None
    replicas, throughput, preemption = ReplicaCheck(), Throughput(cache_dir=str(cfg.paths.cache_dir)), Preemption()
    if run_end is not None:
        run_end.preemption = preemption
    tracking_cbs = [DatasetInputs(), MetricsBeforeCheckpoints()] if logger else []
    extra = [NonFiniteGuard(nonfinite), preemption, replicas, throughput, *tracking_cbs,
             *([pruning] if pruning else []), *built.callbacks, *callbacks]
    trainer = L.Trainer(**trainer_cfg, logger=logger or False, plugins=[AtomicCheckpointIO()],
                        callbacks=recipes.instantiate_callbacks(cfg, ckpt_dir) + extra, default_root_dir=str(out_dir))
    with safe_loading():  # Lightning's own checkpoint loads are weights-only too
        trainer.fit(module, datamodule=built.datamodule, ckpt_path=str(ckpt_file) if ckpt_file else None,
                    weights_only=True)

    if replicas.result is not None and trainer.is_global_zero:  # DDP: all ranks ended with identical weights
        run_info["replicas"] = {"world_size": replicas.result[0], "weights_sha256": replicas.result[1]}
        write_json_atomic(out_dir / RUN_FILE, run_info)
    best = getattr(trainer.checkpoint_callback, "best_model_path", "") or ""
    last = getattr(trainer.checkpoint_callback, "last_model_path", "") or ""
    metrics = {**recipes.final_metrics(trainer), **throughput.summary(module.device), "allocator": allocator.in_use()}
    for cb in built.callbacks:  # figures a recipe's callbacks measured once (e.g. the teacher's accuracy)
        metrics.update(getattr(cb, "metrics", {}))
    if logger is not None:
        tracked.tag_speed_basis(logger, metrics, throughput, replicas.result if trainer.is_global_zero else None)
    if pruning is not None and pruning.pruned_step is not None:
        metrics["pruned_step"] = pruning.pruned_step
    elif built.task is not None and built.datamodule.test_streams:  # fine-tuning: test metrics from the best checkpoint
        with safe_loading():
            trainer.test(module, datamodule=built.datamodule, ckpt_path=best or None, verbose=False, weights_only=True)
        metrics.update(recipes.final_metrics(trainer))
        written = reports.write_reports(module, out_dir, built.task.confusion)
        if logger is not None and trainer.is_global_zero:
            uri = tracked.log_test_outputs(cfg, logger, module, built, written, best)
            if uri:
                metrics["model_uri"] = uri
    if logger is not None:
        tracked.close_run(cfg, logger, best or last)
    metrics.update(run_id=run_info["mlflow_run_id"], best_ckpt=best, last_ckpt=last, output_dir=str(out_dir),
                   wall_s=time.time() - t0)
    if trainer.is_global_zero:
        _print_summary(cfg, metrics, logger)
    return metrics


def _print_summary(cfg: DictConfig, m: dict, logger) -> None:
    from lit_tf.lit.reports import speed_lines
    from lit_tf.tracking.mlflow import summary_lines

    lines = [
        "",
        f"lit_tf: finished '{cfg.name}' in {m['wall_s']:.0f}s",
        *(f"  {k} = {m[k]:.4f}" for k in sorted(m)
          if k.startswith(("val/", "test/", "train/loss")) and isinstance(m[k], float)),
        *speed_lines(m),
        f"  outputs:    {m['output_dir']}",
        f"  checkpoint: {m['last_ckpt'] or '-'}",
    ]
    if logger is not None:
        lines += [
            *summary_lines(logger, str(cfg.logger.mlflow.experiment_name)),  # where the run is, how to open it
            "  resume this run:    python train.py "
            + (f"experiment={cfg.name} " if cfg.name != "quickstart" else "") + "ckpt_path=last"
            + (f" logger.mlflow.tracking_uri={logger.store}" if logger.store.remote else ""),
        ]
    print("\n".join(lines), flush=True)


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | dict | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    # A single run shows a user error as one line; in a multirun the sweeper records it per job.
    with user_errors(enabled=HydraConfig.get().mode == RunMode.RUN):
        metrics = train(cfg)
    if cfg.get("trial") and cfg.trial.get("number") is not None:
        return metrics  # lit_tf's Optuna sweeper picks its objective(s) and the pruning outcome
    target = cfg.get("optimized_metric")
    return metrics.get(target) if target else None


def main() -> None:
    args = sys.argv[1:]
    if traceback_requested():  # LIT_TF_TRACEBACK=1: Hydra shows complete tracebacks too
        os.environ["HYDRA_FULL_ERROR"] = "1"
    if not any(a in ("-h", "--help", "--hydra-help", "--info", "--cfg", "-c") for a in args):
        with user_errors():
            check_overrides([a for a in args if not a.startswith("-")], CONFIG_DIR)
    _hydra_main()


if __name__ == "__main__":
    main()
