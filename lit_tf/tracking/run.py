"""A run's life in MLflow: opening it (tags, names, params, the config and tokenizer artifacts,
system metrics), closing it (tags of what speed figures depend on, reports, the logged model, the
checkpoint) and ending it FAILED or KILLED when an exception leaves the run (`RunEnd`)."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lit_tf.tracking import mlflow as tracking
from lit_tf.tracking.mlflow import Store


def store_of(cfg: DictConfig, check: bool = False) -> Store:
    """The MLflow store of this run (`logger.mlflow`: a tracking server or the local folder; the
    local `paths.mlruns_dir` when logging is off). `check`: a server must answer now."""
    mcfg = cfg.logger.get("mlflow") if cfg.get("logger") else None
    return tracking.open_store(mcfg if mcfg else {"dir": str(cfg.paths.mlruns_dir)}, check=check)


def job_config(cfg: DictConfig) -> DictConfig:
    """The run's own config (without the `hydra` node that compose(return_hydra_config=True) adds)."""
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])


def open_run(cfg: DictConfig, built, out_dir: Path, resume: tuple[Path | None, dict], trial, config_dir: Path):
    """The run's MLflow logger (None when `logger.mlflow` is off), with its tags, params and artifacts."""
    if not (cfg.get("logger") and cfg.logger.get("mlflow")):
        return None
    from lit_tf import __version__
    from lit_tf.lit.build import parameter_counts
    from lit_tf.tracking import labels as labels_mod

    ckpt_file, prev_run = resume
    mcfg, objective = cfg.logger.mlflow, str(cfg.objective.name)
    tags = {"experiment": str(cfg.name), "git_commit": tracking.git_commit(Path(__file__).parent),
            "lit_tf_version": __version__, "model_family": built.family, "objective": objective,
            "output_dir": str(out_dir), **built.tags}
    if ckpt_file is not None:
        tags["resumed_from"] = str(ckpt_file)
    if trial is not None:
        tags.update(trial.tags())
    # never MLflow's own random names: they repeat here, as seed_everything seeds their generator
    labels = labels_mod.run_labels(cfg.get("run_name") or mcfg.get("run_name"), family=built.family,
                                   objective=objective, experiment=str(cfg.name), out_dir=out_dir,
                                   trial_number=trial.number if trial is not None else None)
    tags.update(labels.tags)
    if prev_run.get("mlflow_run_id"):  # a resumed run keeps the description and overrides it started with
        for k in (labels_mod.OVERRIDES_TAG, labels_mod.NOTE_TAG):
            tags.pop(k, None)
    logger = tracking.make_logger(
        store_of(cfg), str(mcfg.experiment_name), labels.name, tags,
        run_id=prev_run.get("mlflow_run_id"), unsent_file=out_dir / tracking.UNSENT_FILE,
        description=tracking.experiment_description(config_dir, str(cfg.name)),
    )
    if mcfg.get("system_metrics", True):  # the interval was checked before the run
        tracking.start_system_metrics(logger, float(mcfg.get("system_metrics_interval") or 10),
                                      resumed=bool(prev_run.get("mlflow_run_id")))
    resolved = OmegaConf.to_container(job_config(cfg), resolve=True)
    # top level: the UI's compare page lists only the top-level files two runs share
    tracking.log_text(logger, OmegaConf.to_yaml(resolved), "config.yaml")
    tracking.log_params_now(logger, {**resolved, "model_stats": parameter_counts(built.model),
                                     "tokenizer": {"key": built.tokenizer_key, "vocab_size": built.model.cfg.vocab_size}})
    tracking.log_text(logger, built.tokenizer_json, "tokenizer/tokenizer.json")
    return logger


def tag_speed_basis(logger, metrics: dict, throughput, replicas) -> None:
    """Tags of what the run's speed figures depend on, and the DDP replica check's outcome."""
    if replicas is not None:
        tracking.set_tag(logger, "lit_tf.replicas", f"{replicas[0]} ranks, identical weights (sha256 {replicas[1][:16]})")
    tracking.set_tag(logger, "lit_tf.allocator", metrics["allocator"])
    if throughput.peak:
        tracking.set_tag(logger, "lit_tf.mfu_basis", f"{throughput.flops_per_token or 0:.4g} FLOPs/token; peak "
                         f"{throughput.peak:.4g} FLOP/s per device ({throughput.peak_source})")


def log_test_outputs(cfg: DictConfig, logger, module, built, reports: tuple[Path, dict], best: str) -> str | None:
    """The test reports and per-class metrics, then the fine-tuned model (its URI) when the run logs one."""
    folder, per_class = reports
    tracking.log_artifact(logger, folder, "reports")
    if per_class:
        logger.log_metrics(per_class, step=module.global_step)
    if not (best and cfg.logger.mlflow.get("log_model", True)):
        return None
    from lit_tf.tracking.pyfunc import log_classifier

    tracking.flush(logger)  # the test metrics are in the run: the logged model takes them up
    return log_classifier(logger._tracking_uri, logger.run_id, best, name=f"{cfg.name}-{built.family}",
                          examples=built.datamodule.example_texts(2), register_as=cfg.get("register_as"),
                          step=module.global_step)


def close_run(cfg: DictConfig, logger, checkpoint: str) -> None:
    """Upload the checkpoint (unless `logger.mlflow.log_checkpoint=false`) and send what is queued."""
    if cfg.logger.mlflow.get("log_checkpoint", True):
        tracking.log_artifact(logger, checkpoint, "checkpoints")
    tracking.flush(logger)


class RunEnd:
    """On an exception out of a run: the MLflow run ends FAILED (message tag + traceback
    artifact) or KILLED (Ctrl-C, preemption), whatever raised it (see lit_tf.lit.failure)."""

    def __init__(self) -> None:
        self.logger = None  # set once the run exists
        self.preemption = None

    def __enter__(self) -> RunEnd:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            return
        from lit_tf.lit.failure import Preempted, requeue_slurm_job, run_status

        fit_exc = getattr(self.preemption, "exception", None)
        saved = getattr(self.preemption, "saved", None)
        if saved is not None and not isinstance(exc, Preempted):  # Lightning's own SIGTERM exit, after our save
            preempted = Preempted(*saved)
            self.__exit__(Preempted, preempted, None)
            raise preempted from exc
        # Lightning turns Ctrl-C into SystemExit(1): record what really ended fit
        cause = fit_exc if isinstance(exc, SystemExit) and not isinstance(exc, Preempted) and fit_exc else exc
        status = run_status(cause)
        if self.logger is not None:
            from lit_tf.tracking import mlflow as tracking

            tracking.end_run(self.logger, cause, status)
        # In a SLURM job the job requeues itself, last: requeueing makes SLURM end this attempt's processes
        if isinstance(exc, Preempted):
            print(f"lit_tf: {exc}", file=sys.stderr, flush=True)
            requeue_slurm_job()
        elif isinstance(exc, SystemExit) and status == "KILLED" and not exc.code:
            # Lightning's SIGTERM outside a training batch (e.g. during validation) exits with status 0
            print("lit_tf: stopped by SIGTERM outside a training batch: no checkpoint written; "
                  "ckpt_path=last resumes from the last periodic one", file=sys.stderr, flush=True)
            requeue_slurm_job()
            raise SystemExit(143) from exc
