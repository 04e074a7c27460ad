"""Run assembly: from a composed config to the DataModule, model, objective and LightningModule of a
pretraining or fine-tuning run (and the Trainer's settings), through the family, task and
objective tables. `lit_tf.cli.train` only orchestrates what these build.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from lit_tf.errors import LitTfError
from lit_tf.lit.optim import OptimConfig
from lit_tf.lit.tasks import TASKS
from lit_tf.objectives.config import ObjectiveConfig


@dataclass
class Built:
    """What differs between pretraining and fine-tuning runs; the rest of a run is shared."""

    datamodule: Any
    model: Any
    objective: Any
    family: str
    tokenizer_key: str  # the content digest of the tokenizer.json stored in checkpoints
    tokenizer_json: str
    meta: dict = field(default_factory=dict)  # what checkpoints carry to rebuild the model (`checkpoint["lit_tf"]`)
    module_kwargs: dict = field(default_factory=dict)  # LitModule's evaluation metrics and streams
    tags: dict = field(default_factory=dict)  # run tags (fine-tuning lineage, the distillation teacher)
    task: Any = None  # the fine-tuning task's spec (lit_tf.lit.tasks), None for pretraining
    callbacks: list = field(default_factory=list)  # callbacks the run's recipe adds (the teacher's accuracy)
    optim: OptimConfig = field(default_factory=OptimConfig)  # the `optim` group, checked with the others up front


def _container(node) -> dict:
    return OmegaConf.to_container(node, resolve=True)


def _distill_cfg(cfg: DictConfig) -> dict | None:
    node = cfg.get("distill")
    return _container(node) if node else None


def run_configs(cfg: DictConfig) -> tuple[ObjectiveConfig, Any, OptimConfig]:
    """The run's `objective`, `data` and `optim` groups, typed once here and passed down (the data
    group's type follows the objective: a fine-tuning task's, or its pretraining data kind's). A
    bad key or value fails here, before any checkpoint or data is read."""
    from lit_tf.data.config import FineTuneDataConfig, pretraining_data_config
    from lit_tf.lit.build import OBJECTIVES

    objective = ObjectiveConfig.from_config(cfg.objective)
    if objective.name in TASKS:
        data = FineTuneDataConfig.from_config(cfg.data)
    elif objective.name in OBJECTIVES:
        data = pretraining_data_config(cfg.data, OBJECTIVES[objective.name].data)
    else:
        raise ValueError(f"objective.name={objective.name!r} is not one of {sorted(OBJECTIVES)} "
                         f"(pretraining) or {sorted(TASKS)} (fine-tuning)")
    return objective, data, OptimConfig.from_config(cfg.optim)


def build_pretraining(cfg: DictConfig, ckpt_file: Path | None = None, *, tracking_uri: str = "",
                      where: str | None = None) -> Built:
    """Tokenizer + token shards (prepared once, cached), the family's pretraining model and its
    objective; with `distill`, a student learning from the teacher's masked-LM (lit_tf.lit.distill)."""
    from lit_tf.data.datamodule import build_datamodule
    from lit_tf.data.tokenizer import PAD, materialize_tokenizer
    from lit_tf.lit import distill
    from lit_tf.lit.build import OBJECTIVES, ObjectiveContext, build_model, build_objective
    from lit_tf.lit.checkpoint import resume_tokenizer

    objective, data, optim = run_configs(cfg)
    objective_cfg, dcfg = _container(cfg.objective), _distill_cfg(cfg)  # as the model and objective tables read them
    if dcfg and objective.name != "mlm":
        raise ValueError(f"distill: pretraining distillation trains objective=mlm, not {objective.name!r}")
    spec = OBJECTIVES[objective.name]
    tokenizers_dir = Path(cfg.paths.cache_dir) / "tokenizers"
    # A resumed run keeps the tokenizer stored in its checkpoint (shards are keyed by its content).
    given = resume_tokenizer(ckpt_file, tokenizers_dir, data.tokenizer_path) if ckpt_file is not None else None
    init = _warm_start_source(cfg, tracking_uri, where)
    if init is not None and given is None:  # a warm start reads the checkpoint's vocabulary
        given = materialize_tokenizer(init.tokenizer.to_str(), tokenizers_dir)
    teacher = None
    if dcfg:
        teacher = distill.load_teacher(dcfg, "mlm", None, tracking_uri, where)
        given = given or materialize_tokenizer(teacher.tokenizer.to_str(), tokenizers_dir)  # the teacher's vocabulary
    dm = build_datamodule(data, objective, spec.data, cache_dir=str(cfg.paths.cache_dir), seed=int(cfg.seed),
                          tokenizer=given)
    tok = dm.prepare()
    model_cfg = _container(cfg.model)
    if init is not None:  # the positions come from the checkpoint
        from lit_tf.lit.init_from import check_max_seq_len

        check_max_seq_len(init, data.max_seq_len)
    elif int(model_cfg.get("max_seq_len", 0)) < data.max_seq_len:
        raise ValueError(
            f"data.max_seq_len={data.max_seq_len} exceeds model.max_seq_len={model_cfg.get('max_seq_len')}"
        )
    languages = list(getattr(dm, "languages", []))
    if teacher is not None:
        model_cfg = distill.student_config(dcfg, teacher, model_cfg)
    tags: dict = {}
    if init is not None:
        model, languages, tags = _warm_started(cfg, model_cfg, objective_cfg, init, dm, copy=ckpt_file is None)
    else:
        model = build_model(model_cfg, objective_cfg, tok.vocab_size, pad_id=tok.special_id(PAD), languages=languages)
    ctx = ObjectiveContext(model=model, streams=dict(getattr(dm, "val_streams", None) or {}),
                           n_langs=max(2, len(languages)), fused_lm_loss=bool(cfg.speed.fused_lm_loss))
    built = Built(dm, model, build_objective(objective_cfg, ctx), model_cfg["family"], tok.digest[:16], tok.json_text,
                  meta={"languages": languages}, module_kwargs=pretraining_metrics(objective), optim=optim, tags=tags)
    if teacher is not None:
        _distil(built, dcfg, teacher, "mlm", initialise=ckpt_file is None)
    return built


def _warm_start_source(cfg: DictConfig, tracking_uri: str, where: str | None):
    """The checkpoint a pretraining-style run (e.g. translation) starts from (`init_from`), or None."""
    if not cfg.get("init_from"):
        return None
    from lit_tf.lit.init_from import resolve_init
    from lit_tf.models.families import FAMILIES, family

    spec = family(cfg.model.get("family"))
    if spec.warm_start is None:
        warm = "; ".join(f"{f.name} from {' or '.join(f.warm_start_from)}" for f in FAMILIES.values() if f.warm_start)
        raise LitTfError(f"init_from={cfg.init_from}: a {spec.name!r} pretraining run cannot start from another "
                         f"checkpoint (init_from is for fine-tuning, and for the families that take a warm start: "
                         f"{warm}); use ckpt_path to resume a run")
    init = resolve_init(cfg.init_from, tracking_uri, where)
    takes = " or ".join(repr(f) for f in spec.warm_start_from)
    if init.kind == "hf":
        raise LitTfError(f"init_from={cfg.init_from}: a {spec.name!r} run starts from a lit_tf checkpoint (a .ckpt "
                         f"or an MLflow run id) of a {takes} model, not a Hugging Face directory (those start "
                         "fine-tuning runs)")
    if init.family not in spec.warm_start_from:
        raise LitTfError(f"init_from={cfg.init_from}: a {spec.name!r} run starts from a {takes} checkpoint, "
                         f"not a {init.family!r} one")
    return init


def _warm_started(cfg: DictConfig, model_cfg: dict, objective_cfg: dict, init, dm, *, copy: bool):
    """(model, languages, lineage tags) of a run warm-started from `init` by its family's `warm_start`:
    the family derives its config from the source's and copies the weights (not when resuming: the
    weights then come from the run's own checkpoint)."""
    from lit_tf.models.families import family

    spec = family(model_cfg.get("family"))
    try:
        model, languages = spec.warm_start(model_cfg, objective_cfg, init, dm, copy)
    except ValueError as e:
        raise LitTfError(f"init_from={init.path}: {e}") from None
    return model, languages, lineage_tags(cfg, init)


def lineage_tags(cfg: DictConfig, init) -> dict[str, str]:
    """Run tags naming where its weights started; an MLflow run as source becomes the parent run."""
    tags = {"init_from": str(cfg.get("init_from") or "scratch"), "init_kind": init.kind}
    if init.parent_run_id:
        tags["lit_tf.parent_run_id"] = init.parent_run_id  # lineage: the pretraining run
        tags["mlflow.parentRunId"] = init.parent_run_id
    return tags


def _distil(built: Built, dcfg: dict, teacher, kind: str, initialise: bool) -> None:
    """Replace the run's objective by distillation from `teacher` (copying it into the student first
    when `initialise`: not when resuming, whose weights come from the checkpoint)."""
    from lit_tf.lit import distill

    built.objective = distill.objective({**dcfg, "init_from_teacher": initialise and dcfg.get("init_from_teacher")},
                                        teacher, built.model, kind)
    built.tags.update(distill.tags(teacher, built.model))
    built.callbacks.append(distill.TeacherAccuracy(built.objective, kind))


def pretraining_metrics(objective: ObjectiveConfig) -> dict:
    """The LitModule arguments of a pretraining objective that feeds an evaluation metric."""
    from lit_tf.lit.build import OBJECTIVES

    spec = OBJECTIVES.get(objective.name)
    return {"eval_metrics": spec.metric} if spec is not None and spec.metric is not None else {}


def build_finetuning(cfg: DictConfig, ckpt_file: Path | None = None, *, tracking_uri: str = "",
                     where: str | None = None) -> Built:
    """The encoder `init_from` names (checkpoint, MLflow run at `tracking_uri`, HF dir) or a fresh
    one, with the task's head, data, objective and metric."""
    from lit_tf.data.finetune_module import FineTuneDataModule
    from lit_tf.data.tokenizer import PAD, TokenizerArtifact, same_tokenizer, train_tokenizer
    from lit_tf.lit import distill
    from lit_tf.lit.checkpoint import check_tokenizer_path, resume_tokenizer
    from lit_tf.lit.init_from import build_classifier, check_max_seq_len, resolve_init

    objective, data, optim = run_configs(cfg)
    task, dcfg = TASKS[objective.name], _distill_cfg(cfg)
    given_path = data.tokenizer_path
    init = resolve_init(cfg.get("init_from"), tracking_uri, where)
    check_max_seq_len(init, data.max_seq_len)
    tokenizer = init.tokenizer  # the encoder's own (checkpoint, MLflow run, HF dir), or None from scratch
    teacher = distill.load_teacher(dcfg, "cls", task.name, tracking_uri, where) if dcfg else None
    if teacher is not None:  # the student reads the teacher's input ids
        check_tokenizer_path(given_path, teacher.tokenizer.to_str(), f"distill.teacher={teacher.source.path}",
                             "the student reads the teacher's vocabulary: drop data.tokenizer.path")
        if tokenizer is not None and not same_tokenizer(tokenizer.to_str(), teacher.tokenizer.to_str()):
            raise LitTfError(f"init_from={init.path} and distill.teacher={teacher.source.path} have different "
                             "tokenizers: the student must read the teacher's input ids")
        tokenizer = teacher.tokenizer
    if tokenizer is not None:  # the encoder's own vocabulary: data.tokenizer.path may only name it again
        check_tokenizer_path(given_path, tokenizer.to_str(), f"init_from={init.path}",
                             "a pretrained encoder keeps its vocabulary: drop data.tokenizer.path")
    if ckpt_file is not None:  # a resumed run keeps the tokenizer stored in its checkpoint
        tokenizer = resume_tokenizer(ckpt_file, Path(cfg.paths.cache_dir) / "tokenizers", given_path).tokenizer
    if tokenizer is None and given_path:  # scratch baseline on a tokenizer the user brings
        tokenizer = TokenizerArtifact.load(given_path).tokenizer
    langs = init.languages or []
    dm = FineTuneDataModule(data, task.data, tokenizer, lang_ids={lg: i for i, lg in enumerate(langs)} if langs else None,
                            seed=int(cfg.seed))
    if tokenizer is None:  # scratch baseline: a tokenizer trained on the fine-tuning text
        dm.tok = tokenizer = train_tokenizer(data.tokenizer_spec(), dm.tokenizer_texts())
    dm.setup()
    labels = list(dm.labels.names)
    model_cfg = _container(cfg.model)
    if teacher is not None:
        distill.check_labels(teacher, labels)
        model_cfg = distill.student_config(dcfg, teacher, model_cfg)
    model, _ = build_classifier(init, task.name, len(labels), model_cfg,
                                vocab_size=tokenizer.get_vocab_size(), pad_id=tokenizer.token_to_id(PAD) or 0)
    from lit_tf.models.families import family_of

    tok_json = tokenizer.to_str()
    tags = lineage_tags(cfg, init)
    built = Built(dm, model, task.objective(), family_of(model).name, hashlib.sha256(tok_json.encode()).hexdigest()[:16],
                  tok_json, meta={"task": task.name, "labels": labels, "languages": langs, "scheme": data.scheme},
                  module_kwargs={"eval_metrics": lambda: task.metric(labels, data), "val_streams": dm.val_streams,
                                 "test_streams": dm.test_streams},
                  tags=tags, task=task, optim=optim)
    if teacher is not None:
        _distil(built, dcfg, teacher, "cls", initialise=ckpt_file is None)
    return built


def build_run(cfg: DictConfig, ckpt_file: Path | None = None, **kwargs: Any) -> Built:
    """A fine-tuning run when `objective.name` is a task of the task table, else pretraining."""
    build = build_finetuning if cfg.objective.name in TASKS else build_pretraining
    return build(cfg, ckpt_file, **kwargs)


def trainer_settings(cfg: DictConfig, built: Built) -> tuple[dict, str]:
    """Lightning Trainer kwargs from `trainer` (parallel strategy from the family's block;
    activation checkpointing and compile applied to the model in place) and the non-finite mode."""
    from lit_tf.lit.parallel import apply_activation_checkpointing, build_strategy
    from lit_tf.models.families import FAMILIES

    trainer_cfg = _container(cfg.trainer)
    # lit_tf's keys under trainer:, not Lightning's
    nonfinite = str(trainer_cfg.pop("nonfinite", None) or "stop")
    act_ckpt, fsdp_opts = bool(trainer_cfg.pop("activation_checkpointing", False)), trainer_cfg.pop("fsdp", None)
    block = FAMILIES[built.family].block
    trainer_cfg["strategy"] = build_strategy(trainer_cfg.get("strategy", "auto"), fsdp_opts, block)
    if act_ckpt:
        apply_activation_checkpointing(built.model, block)
    if cfg.speed.compile:
        built.model.compile()  # in place: parameter names and checkpoints stay the same
    return trainer_cfg, nonfinite


def build_module(cfg: DictConfig, built: Built):
    """The LitModule training `built` with its `optim` group; its checkpoints carry `built.meta`."""
    from lit_tf import __version__
    from lit_tf.lit.module import LitModule

    built.meta.update(family=built.family, model_config=built.model.cfg.to_dict(), objective=_container(cfg.objective),
                      tokenizer_key=built.tokenizer_key, tokenizer_json=built.tokenizer_json, lit_tf_version=__version__)
    return LitModule(built.model, built.objective, hydra.utils.instantiate(built.optim.optimizer), optim=built.optim,
                     meta=built.meta, **built.module_kwargs)


def instantiate_callbacks(cfg: DictConfig, ckpt_dir: Path) -> list:
    """The callbacks the `callbacks` config group names (checkpoints written to `ckpt_dir`)."""
    callbacks = []
    for name, cb_cfg in (cfg.get("callbacks") or {}).items():
        if cb_cfg is None or "_target_" not in cb_cfg:
            continue
        kwargs = {"dirpath": str(ckpt_dir)} if name in ("model_checkpoint", "last_checkpoint") else {}
        callbacks.append(hydra.utils.instantiate(cb_cfg, **kwargs))
    return callbacks


def final_metrics(trainer) -> dict[str, float]:
    """The trainer's last logged metrics as floats."""
    out = {}
    for k, v in trainer.callback_metrics.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            continue
    return out
