"""`python train.py [experiment=NAME] [key=value ...]`: the training entry point.

`train(cfg) -> dict` does the work and returns the final metrics (usable from tests and
sweeps); `main()` checks the command line, then hands over to Hydra.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from lit_tf import allocator
from lit_tf.cli.config_check import check_overrides
from lit_tf.errors import CheckpointError, traceback_requested, user_errors

log = logging.getLogger("lit_tf")

CONFIG_DIR = Path(os.environ.get("LIT_TF_CONFIG_DIR", Path(__file__).resolve().parents[2] / "conf"))
RUN_FILE = "run.json"  # sidecar in each run's output dir: MLflow run id, tokenizer key, ...


# --------------------------------------------------------------------------------------------
# resume helpers
# --------------------------------------------------------------------------------------------
def find_last_checkpoint(runs_root: Path) -> Path:
    cands = sorted(runs_root.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not cands:
        raise CheckpointError(
            f"ckpt_path=last: no checkpoint found under {runs_root}/*/checkpoints/last.ckpt",
            hint="train this experiment once first, or give ckpt_path=/path/to/file.ckpt",
        )
    return cands[-1]


def resolve_checkpoint(ckpt_path: str | None, runs_root: Path) -> tuple[Path | None, dict]:
    """(checkpoint file, the run sidecar of the run that wrote it — {} if unknown)."""
    if not ckpt_path:
        return None, {}
    from lit_tf.lit.checkpoint import read_checkpoint

    path = find_last_checkpoint(runs_root) if ckpt_path == "last" else Path(ckpt_path).expanduser().resolve()
    # weights-only and memory-mapped: a cheap check that Lightning will be able to resume from it
    read_checkpoint(path, "ckpt_path", mmap=True,
                    require=("state_dict", "loops", "optimizer_states", "pytorch-lightning_version"))
    sidecar = path.parent.parent / RUN_FILE
    return path, (json.loads(sidecar.read_text()) if sidecar.is_file() else {})


def requeued_checkpoint(output_dir: Path) -> Path | None:
    """The checkpoint to continue from when this run is a requeued SLURM job, else None.

    A requeued job (`SLURM_RESTART_COUNT` >= 1: preempted, past its time limit, or its node lost)
    runs the same submission again. In a multirun (or with a stable `hydra.run.dir`) its output
    folder is the same one (`hydra.sweep.dir/hydra.sweep.subdir`), where the earlier attempt's
    run.json names the folder it checkpointed to (and the MLflow run that `resolve_checkpoint`
    then continues). No checkpoint there yet (stopped before the first one): None, a fresh start.
    """
    try:
        restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        restarts = 0
    if restarts < 1:
        return None
    folder = output_dir / "checkpoints"
    sidecar = output_dir / RUN_FILE
    if sidecar.is_file():
        folder = Path(json.loads(sidecar.read_text()).get("checkpoint_dir") or folder)
    last = folder / "last.ckpt"
    return last if last.is_file() else None


def _write_json_atomic(path: Path, obj: dict) -> None:
    from lit_tf.data.atomic import atomic_file

    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2))


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
def _instantiate_callbacks(cfg: DictConfig, ckpt_dir: Path) -> list:
    callbacks = []
    for name, cb_cfg in (cfg.get("callbacks") or {}).items():
        if cb_cfg is None or "_target_" not in cb_cfg:
            continue
        kwargs = {"dirpath": str(ckpt_dir)} if name in ("model_checkpoint", "last_checkpoint") else {}
        callbacks.append(hydra.utils.instantiate(cb_cfg, **kwargs))
    return callbacks


def _tracking_store(cfg: DictConfig, check: bool = False):
    """The MLflow store of this run (`logger.mlflow`: a tracking server or the local folder; the
    local `paths.mlruns_dir` when logging is off). `check`: a server must answer now."""
    from lit_tf.tracking.mlflow import open_store

    mcfg = cfg.logger.get("mlflow") if cfg.get("logger") else None
    return open_store(mcfg if mcfg else {"dir": str(cfg.paths.mlruns_dir)}, check=check)


def _job_config(cfg: DictConfig) -> DictConfig:
    """The run's own config (without the `hydra` node that compose(return_hydra_config=True) adds)."""
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])


def _final_metrics(trainer) -> dict[str, float]:
    out = {}
    for k, v in trainer.callback_metrics.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            continue
    return out


@dataclass
class _Built:
    """What differs between pretraining and fine-tuning runs; the rest of `train` is shared."""

    datamodule: Any
    model: Any
    objective: Any
    family: str
    tokenizer_key: str
    tokenizer_json: str
    meta: dict = field(default_factory=dict)
    module_kwargs: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)


def _build_pretraining(
    cfg: DictConfig, trainer_cfg: dict, objective_cfg: dict, ckpt_file: Path | None = None
) -> _Built:
    from lit_tf.data.datamodule import build_datamodule
    from lit_tf.data.tokenizer import PAD
    from lit_tf.lit.build import build_model, build_objective
    from lit_tf.lit.checkpoint import resume_tokenizer

    data = OmegaConf.to_container(cfg.data, resolve=True)
    # A resumed run keeps the tokenizer stored in its checkpoint (shards are keyed by its content).
    given = (resume_tokenizer(ckpt_file, Path(cfg.paths.cache_dir) / "tokenizers",
                              (data.get("tokenizer") or {}).get("path"))
             if ckpt_file is not None else None)
    dm = build_datamodule(
        data, objective_cfg, cache_dir=str(cfg.paths.cache_dir),
        seed=int(cfg.seed), accumulate_grad_batches=int(trainer_cfg.get("accumulate_grad_batches", 1)),
        max_steps=int(trainer_cfg.get("max_steps", -1)), tokenizer=given,
    )
    tok = dm.prepare()
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    if int(model_cfg.get("max_seq_len", 0)) < int(cfg.data.max_seq_len):
        raise ValueError(
            f"data.max_seq_len={cfg.data.max_seq_len} exceeds model.max_seq_len={model_cfg.get('max_seq_len')}"
        )
    languages = list(getattr(dm, "languages", []))
    model = build_model(model_cfg, objective_cfg, tok.vocab_size, pad_id=tok.special_id(PAD), languages=languages)
    objective = build_objective(objective_cfg, model, streams=getattr(dm, "val_streams", None),
                                n_langs=max(2, len(languages)), fused_lm_loss=bool(cfg.speed.fused_lm_loss))
    # tokenizer_key: the content digest of the tokenizer.json stored in checkpoints (not its settings)
    return _Built(dm, model, objective, model_cfg["family"], tok.digest[:16], tok.json_text,
                  meta={"languages": languages})


def _build_finetuning(
    cfg: DictConfig, trainer_cfg: dict, objective_cfg: dict, ckpt_file: Path | None = None
) -> _Built:
    """Encoder from `init_from` (checkpoint, MLflow run, HF dir) or scratch + a classification head."""
    import hashlib

    from lit_tf.data.finetune_module import FineTuneDataModule
    from lit_tf.data.tokenizer import PAD, TokenizerSpec, train_tokenizer
    from lit_tf.lit.build import build_objective
    from lit_tf.lit.checkpoint import check_tokenizer_path, resume_tokenizer
    from lit_tf.lit.init_from import build_classifier, check_max_seq_len, resolve_init
    from lit_tf.lit.metrics import ClassificationMetrics, TaggingMetrics

    task = objective_cfg["name"]
    data = OmegaConf.to_container(cfg.data, resolve=True)
    given_path = (data.get("tokenizer") or {}).get("path")  # data.tokenizer.path
    store = _tracking_store(cfg)
    init = resolve_init(cfg.get("init_from"), store.tracking_uri, str(store))
    check_max_seq_len(init, int(data["max_seq_len"]))
    tokenizer = init.tokenizer  # the encoder's own (checkpoint, MLflow run, HF dir), or None from scratch
    if tokenizer is not None:  # the encoder's own vocabulary: data.tokenizer.path may only name it again
        check_tokenizer_path(given_path, tokenizer.to_str(), f"init_from={init.path}",
                             "a pretrained encoder keeps its vocabulary: drop data.tokenizer.path")
    if ckpt_file is not None:  # a resumed run keeps the tokenizer stored in its checkpoint
        tokenizer = resume_tokenizer(ckpt_file, Path(cfg.paths.cache_dir) / "tokenizers", given_path).tokenizer
    kwargs = {"seed": int(cfg.seed), "accumulate_grad_batches": int(trainer_cfg.get("accumulate_grad_batches", 1)),
              "max_steps": int(trainer_cfg.get("max_steps", -1))}
    if tokenizer is None and given_path:  # scratch baseline on a tokenizer the user brings
        from lit_tf.data.tokenizer import TokenizerArtifact

        tokenizer = TokenizerArtifact.load(given_path).tokenizer
    if tokenizer is None:  # scratch baseline: a tokenizer trained on the fine-tuning text
        probe = FineTuneDataModule(data, task, tokenizer=None, **kwargs)
        rows = probe._read("train", data["train"])
        texts = ([" ".join(w) for w, _ in rows] if task == "token_cls"
                 else [r[f] for r in rows for f in data["text_fields"]])
        tokenizer = train_tokenizer(TokenizerSpec.from_config(data.get("tokenizer") or {}), texts)
    langs = init.languages or []
    dm = FineTuneDataModule(data, task, tokenizer, lang_ids={lg: i for i, lg in enumerate(langs)} if langs else None,
                            **kwargs)
    dm.setup()
    labels = list(dm.labels.names)
    model, _ = build_classifier(init, task, len(labels), OmegaConf.to_container(cfg.model, resolve=True),
                                vocab_size=tokenizer.get_vocab_size(), pad_id=tokenizer.token_to_id(PAD) or 0)
    family = "xlm" if hasattr(model, "xlm") else "bert"
    scheme = str(data.get("scheme", "IOB2"))
    metric = (lambda: TaggingMetrics(labels, scheme)) if task == "token_cls" else (lambda: ClassificationMetrics(labels))
    tok_json = tokenizer.to_str()
    tags = {"init_from": str(cfg.get("init_from") or "scratch"), "init_kind": init.kind}
    if init.parent_run_id:
        tags["lit_tf.parent_run_id"] = init.parent_run_id  # lineage: the pretraining run
        tags["mlflow.parentRunId"] = init.parent_run_id
    return _Built(dm, model, build_objective(objective_cfg), family, hashlib.sha256(tok_json.encode()).hexdigest()[:16],
                  tok_json, meta={"task": task, "labels": labels, "languages": langs, "scheme": scheme},
                  module_kwargs={"eval_metrics": metric, "val_streams": dm.val_streams, "test_streams": dm.test_streams},
                  tags=tags)


def _write_reports(module, out_dir: Path, logger) -> None:
    """Per-stream test reports (JSON) and, for classification, confusion-matrix plots (PNG) and
    per-class precision/recall/F1 metrics (`test[/<lang>]/class/<label>/<precision|recall|f1>`)."""
    import json as _json
    import re as _re

    from lit_tf.tracking import mlflow as tracking

    folder = out_dir / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    per_class: dict[str, float] = {}
    for stream, report in module.reports.get("test", {}).items():
        name = stream or "test"
        (folder / f"{name}.json").write_text(_json.dumps(report, indent=2))
        if "confusion" in report:
            _confusion_png(report, folder / f"{name}_confusion.png", title=f"test {stream}".strip())
        for label, scores in report.get("per_class", {}).items():
            key = _re.sub(r"[^a-zA-Z0-9_.\- ]+", "_", str(label))  # MLflow's metric-name characters, no nesting
            for m in ("precision", "recall", "f1"):
                per_class[f"test/{stream + '/' if stream else ''}class/{key}/{m}"] = float(scores[m])
    if logger is not None:
        tracking.log_artifact(logger, folder, "reports")
        if per_class:
            logger.log_metrics(per_class, step=module.global_step)


def _confusion_png(report: dict, path: Path, title: str) -> None:
    """Rows normalised (recall per gold class) as the colour, with the share and the count in each
    cell, white on dark cells; the figure grows with the number of classes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cm, labels = np.asarray(report["confusion"]), [str(x) for x in report["labels"]]
    k = len(labels)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    side = max(4.0, 1.8 + 0.8 * k)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the gold class")
    ax.set_xticks(range(k), labels, rotation=45 if max(map(len, labels)) > 4 else 0, ha="right" if k > 1 else "center")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    acc = np.trace(cm) / max(cm.sum(), 1)
    ax.set_title(f"{title}: accuracy {acc:.3f} ({int(np.trace(cm)):,} of {int(cm.sum()):,})")
    size = 11 if k <= 6 else 8 if k <= 12 else 6
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{share[i, j]:.0%}\n{int(cm[i, j]):,}", ha="center", va="center", fontsize=size,
                    color="white" if share[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def train(cfg: DictConfig, callbacks: list | None = None) -> dict[str, Any]:
    """Pretrain or fine-tune (or continue) as described by the composed config; return final metrics.

    `callbacks` are added to those the config names. Launched by lit_tf's Optuna sweeper
    (`trial.number` set), the run also reports to its trial and stops early when pruned.
    Config values that cannot work raise a LitTfError before any data is read.
    """
    from lit_tf.lit.parallel import check_trainer, job_process_scope
    from lit_tf.lit.validate import RunConfigError, check_run_config
    from lit_tf.sweeping.trial import job_trial

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
    _tracking_store(cfg, check=True)  # logger.mlflow.*: a tracking server must answer now, not after minutes of retries

    with job_process_scope(gpu=cfg.get("gpu")):
        trial = job_trial(cfg)  # this job's Optuna trial when a sweep launched it
        with _RunEnd() as run_end:
            return _train(cfg, list(callbacks or []), trial, resume, run_end)


class _RunEnd:
    """On an exception out of `_train`: the MLflow run ends FAILED (message tag + traceback
    artifact) or KILLED (Ctrl-C, preemption), whatever raised it (see lit_tf.lit.failure)."""

    def __init__(self) -> None:
        self.logger = None  # set by _train once the run exists
        self.preemption = None

    def __enter__(self) -> _RunEnd:
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


def _train(cfg: DictConfig, callbacks: list, trial, resume: tuple[Path | None, dict],
           run_end: _RunEnd | None = None) -> dict[str, Any]:
    import lightning as L
    import torch

    from lit_tf import __version__
    from lit_tf.lit.build import FAMILIES, parameter_counts
    from lit_tf.lit.checkpoint import safe_loading
    from lit_tf.lit.module import LitModule
    from lit_tf.lit.parallel import ReplicaCheck, apply_activation_checkpointing, build_strategy, process_rank
    from lit_tf.tracking import mlflow as tracking

    t0 = time.time()
    pruning = trial.callback() if trial is not None else None
    if pruning is not None:
        callbacks.append(pruning)
    L.seed_everything(int(cfg.seed), workers=True)
    torch.set_float32_matmul_precision(str(cfg.get("matmul_precision", "high")))
    from lit_tf.models.layers import set_kernels

    set_kernels(fast_dropout=bool(cfg.speed.fast_dropout), attention=str(cfg.speed.attention))

    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_file, prev_run = resume  # resolved (and checked) once, in train()
    # A resumed run keeps writing checkpoints next to the ones it resumes from.
    ckpt_dir = ckpt_file.parent if ckpt_file is not None else out_dir / "checkpoints"

    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    # lit_tf's keys under trainer: (nonfinite is checked in train()), not Lightning's
    nonfinite = str(trainer_cfg.pop("nonfinite", None) or "stop")
    act_ckpt, fsdp_opts = bool(trainer_cfg.pop("activation_checkpointing", False)), trainer_cfg.pop("fsdp", None)
    objective_cfg = OmegaConf.to_container(cfg.objective, resolve=True)
    build = _build_finetuning if objective_cfg.get("name") in ("seq_cls", "token_cls") else _build_pretraining
    # resuming: the builders take the tokenizer stored in the checkpoint, so it cannot differ
    b = build(cfg, trainer_cfg, objective_cfg, ckpt_file)
    dm, model = b.datamodule, b.model
    block = FAMILIES[b.family].block
    trainer_cfg["strategy"] = build_strategy(trainer_cfg.get("strategy", "auto"), fsdp_opts, block)
    if act_ckpt:
        apply_activation_checkpointing(model, block)
    if cfg.speed.compile:
        model.compile()  # in place: parameter names and checkpoints stay the same
    b.meta.update(family=b.family, model_config=model.cfg.to_dict(), objective=objective_cfg,
                  tokenizer_key=b.tokenizer_key, tokenizer_json=b.tokenizer_json, lit_tf_version=__version__)
    optim = cfg.optim
    module = LitModule(
        model, b.objective, hydra.utils.instantiate(optim.optimizer),
        weight_decay=float(optim.weight_decay), schedule=str(optim.schedule),
        warmup_steps=optim.get("warmup_steps"), warmup_ratio=float(optim.get("warmup_ratio") or 0.0),
        min_lr_ratio=float(optim.get("min_lr_ratio") or 0.0), meta=b.meta, **b.module_kwargs,
    )
    logger = None
    if cfg.get("logger") and cfg.logger.get("mlflow"):
        mcfg = cfg.logger.mlflow
        tags = {"experiment": str(cfg.name), "git_commit": tracking.git_commit(Path(__file__).parent),
                "lit_tf_version": __version__, "model_family": b.family,
                "objective": str(objective_cfg.get("name")), "output_dir": str(out_dir), **b.tags}
        if ckpt_file is not None:
            tags["resumed_from"] = str(ckpt_file)
        if trial is not None:
            tags.update(trial.tags())
        from lit_tf.tracking import labels as labels_mod
        from lit_tf.tracking.labels import run_labels

        # never MLflow's own random names: they repeat here, as seed_everything seeds their generator
        labels = run_labels(cfg.get("run_name") or mcfg.get("run_name"), family=b.family,
                            objective=str(objective_cfg.get("name")), experiment=str(cfg.name), out_dir=out_dir,
                            trial_number=trial.number if trial is not None else None)
        tags.update(labels.tags)
        if prev_run.get("mlflow_run_id"):  # a resumed run keeps the description and overrides it started with
            for k in (labels_mod.OVERRIDES_TAG, labels_mod.NOTE_TAG):
                tags.pop(k, None)
        logger = tracking.make_logger(
            _tracking_store(cfg), str(mcfg.experiment_name), labels.name, tags,
            run_id=prev_run.get("mlflow_run_id"), unsent_file=out_dir / tracking.UNSENT_FILE,
            description=tracking.experiment_description(CONFIG_DIR, str(cfg.name)),
        )
        if run_end is not None:
            run_end.logger = logger
        if mcfg.get("system_metrics", True):  # the interval was checked in train()
            tracking.start_system_metrics(logger, float(mcfg.get("system_metrics_interval") or 10),
                                          resumed=bool(prev_run.get("mlflow_run_id")))
        resolved = OmegaConf.to_container(_job_config(cfg), resolve=True)
        # top level: the UI's compare page lists only the top-level files two runs share
        tracking.log_text(logger, OmegaConf.to_yaml(resolved), "config.yaml")
        tracking.log_params_now(logger, {**resolved, "model_stats": parameter_counts(model),
                                         "tokenizer": {"key": b.tokenizer_key, "vocab_size": model.cfg.vocab_size}})
        tracking.log_text(logger, b.tokenizer_json, "tokenizer/tokenizer.json")

    run_info = {"mlflow_run_id": logger.run_id if logger else None, "tokenizer_key": b.tokenizer_key,
                "experiment": str(cfg.name), "checkpoint_dir": str(ckpt_dir)}
    if process_rank() == 0:  # DDP ranks > 0 share the folder and have no MLflow run: rank 0 writes
        _write_json_atomic(out_dir / RUN_FILE, run_info)
        if ckpt_dir.parent != out_dir:
            _write_json_atomic(ckpt_dir.parent / RUN_FILE, run_info)
        OmegaConf.save(_job_config(cfg), out_dir / "config.yaml", resolve=False)

    from lit_tf.lit.checkpoint_io import AtomicCheckpointIO
    from lit_tf.lit.failure import NonFiniteGuard, Preemption
    from lit_tf.lit.perf import Throughput

    replicas, throughput = ReplicaCheck(), Throughput(cache_dir=str(cfg.paths.cache_dir))
    guards = [NonFiniteGuard(nonfinite), Preemption(), replicas, throughput]
    if logger is not None:
        from lit_tf.tracking.callbacks import DatasetInputs

        guards.append(DatasetInputs())
    if run_end is not None:
        run_end.preemption = guards[1]
    trainer = L.Trainer(**trainer_cfg, logger=logger if logger else False, plugins=[AtomicCheckpointIO()],
                        callbacks=_instantiate_callbacks(cfg, ckpt_dir) + guards + callbacks,
                        default_root_dir=str(out_dir))
    with safe_loading():  # Lightning's own checkpoint loads are weights-only too
        trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt_file) if ckpt_file else None, weights_only=True)

    if replicas.result is not None and trainer.is_global_zero:  # DDP: all ranks ended with identical weights
        run_info["replicas"] = {"world_size": replicas.result[0], "weights_sha256": replicas.result[1]}
        _write_json_atomic(out_dir / RUN_FILE, run_info)
        if logger is not None:
            tracking.set_tag(logger, "lit_tf.replicas", f"{replicas.result[0]} ranks, identical weights "
                             f"(sha256 {replicas.result[1][:16]})")
    ckpt_cb = trainer.checkpoint_callback
    best = getattr(ckpt_cb, "best_model_path", "") or ""
    last = getattr(ckpt_cb, "last_model_path", "") or ""
    metrics = _final_metrics(trainer)
    perf = throughput.summary(module.device)
    metrics.update(perf, allocator=allocator.in_use())
    if logger is not None:  # what speed figures depend on (tags: a resumed run may differ)
        tracking.set_tag(logger, "lit_tf.allocator", metrics["allocator"])
        if throughput.peak:
            tracking.set_tag(logger, "lit_tf.mfu_basis", f"{throughput.flops_per_token or 0:.4g} FLOPs/token; peak "
                             f"{throughput.peak:.4g} FLOP/s per device ({throughput.peak_source})")
    pruned_step = pruning.pruned_step if pruning is not None else None
    if pruned_step is not None:
        metrics["pruned_step"] = pruned_step
    if getattr(dm, "test_streams", None) and pruned_step is None:  # fine-tuning: test metrics come from the best checkpoint
        with safe_loading():
            trainer.test(module, datamodule=dm, ckpt_path=best or None, verbose=False, weights_only=True)
        metrics.update(_final_metrics(trainer))
        _write_reports(module, out_dir, logger)
        if logger is not None and best and cfg.logger.mlflow.get("log_model", True) and trainer.is_global_zero:
            from lit_tf.tracking.pyfunc import log_classifier

            tracking.flush(logger)  # the test metrics are in the run: the logged model takes them up
            metrics["model_uri"] = log_classifier(
                logger._tracking_uri, logger.run_id, best, name=f"{cfg.name}-{b.family}",
                examples=dm.example_texts(2), register_as=cfg.get("register_as"), step=module.global_step)
    if logger is not None:
        if cfg.logger.mlflow.get("log_checkpoint", True):
            tracking.log_artifact(logger, best or last, "checkpoints")
        tracking.flush(logger)
    metrics.update(run_id=run_info["mlflow_run_id"], best_ckpt=best, last_ckpt=last, output_dir=str(out_dir),
                   wall_s=time.time() - t0)
    if trainer.is_global_zero:
        _print_summary(cfg, metrics, logger)
    return metrics


def speed_lines(m: dict) -> list[str]:
    """The summary's speed line: tokens/s, MFU, step time, peak memory, time to the first step."""
    if "perf/tokens_per_s" not in m:
        return []
    parts = [f"{m['perf/tokens_per_s']:,.0f} tokens/s"]
    if "perf/mfu" in m:
        parts.append(f"MFU {100 * m['perf/mfu']:.1f}%")
    parts.append(f"step {m['perf/step_ms']:.0f} ms")
    parts.append(f"peak mem {m['perf/peak_mem_mb']:,.0f} MB")
    if "perf/first_step_s" in m:
        parts.append(f"first step after {m['perf/first_step_s']:.1f}s")
    if m.get("allocator"):
        parts.append(f"malloc: {m['allocator']}")
    return ["  speed:      " + ", ".join(parts)]


def _print_summary(cfg: DictConfig, m: dict, logger) -> None:
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
