"""Knowledge-distillation runs: the teacher (a lit_tf checkpoint, an MLflow run id or a local HF
model dir), the student's start from it, the distillation objective around the run's own
objective, and the teacher's accuracy, logged once.

`distill` config (an experiment's node; null = no distillation):

    teacher: ...            # a .ckpt written by train.py, an MLflow run id (its logged checkpoint) or an HF dir
    temperature: 2.0        # softmax temperature of the soft targets (the loss is scaled by T^2)
    weights: {kd: 5.0, student: 2.0, cos: 1.0}   # terms of lit_tf.objectives.distill.DistillationObjective
    student_layers: 0.5     # the student is the teacher's config with this share (<= 1) or number of its
                            # layers (DistilBERT); null: the student is the `model` config
    init_from_teacher: true # copy the teacher's embeddings and every other layer where shapes allow
    cache_teacher: true     # fine-tuning: memoise the teacher's logits per example (epochs repeat them)

Two kinds: "mlm" (pretraining, DistilBERT: Sanh et al., 2019) where teacher and student are masked
LMs, and "cls" (task-specific, e.g. SST-2) where the teacher is a fine-tuned classifier for the
same task and labels (optionally TinyBERT's hidden-state and attention terms: Jiao et al., 2020).
The student always reads the teacher's tokenizer: both see the same input ids.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from tokenizers import Tokenizer
from torch import nn

from lit_tf.errors import LitTfError
from lit_tf.lit.init_from import InitSource, resolve_init
from lit_tf.models.families import FAMILIES, FamilySpec, family_of
from lit_tf.objectives.distill import DistillationObjective, init_student_from_teacher

log = logging.getLogger("lit_tf")
KEY = "distill.teacher"


@dataclass
class Teacher:
    model: nn.Module  # eval mode, frozen by the objective
    tokenizer: Tokenizer
    spec: FamilySpec
    labels: list[str] | None  # a classifier's label names, in its output order
    source: InitSource

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def _hf_labels(hf_config: Mapping[str, Any]) -> list[str] | None:
    id2label = hf_config.get("id2label") or {}
    return [str(id2label[k]) for k in sorted(id2label, key=int)] if id2label else None


def load_teacher(dcfg: Mapping[str, Any], kind: str, task: str | None, tracking_uri: str,
                 where: str | None = None) -> Teacher:
    """The teacher `distill.teacher` names, checked against the run: a masked LM for kind "mlm",
    a classifier for `task` for kind "cls"."""
    if not dcfg.get("teacher"):
        raise LitTfError(f"{KEY} is required: a .ckpt written by train.py, an MLflow run id or a local HF model dir")
    init = resolve_init(str(dcfg["teacher"]), tracking_uri, where, key=KEY)
    spec = FAMILIES[init.family]
    if init.kind == "hf":
        from lit_tf.models.hf import from_hf, read_state

        want = task if kind == "cls" else ("mlm" if "mlm" in spec.pretraining else next(iter(spec.pretraining)))
        model = from_hf(init.hf_config, read_state(init.hf_dir), task=want)
        labels = _hf_labels(init.hf_config) if kind == "cls" else None
    else:
        model, meta = init.model, init.meta or {}
        if kind == "cls" and meta.get("task") != task:
            raise LitTfError(f"{KEY}={init.path}: a {meta.get('task') or 'pretraining'!r} model; distilling "
                             f"objective={task} needs a teacher fine-tuned for {task}")
        if kind == "mlm" and meta.get("task"):
            raise LitTfError(f"{KEY}={init.path}: a fine-tuned {meta['task']} model; MLM distillation needs a "
                             "pretrained masked LM")
        labels = list(meta.get("labels") or []) or None
    if kind == "mlm" and not spec.masked_lm:
        raise LitTfError(f"{KEY}={init.path}: a {spec.name!r} pretraining model has no masked-LM head to distil from")
    model.eval()
    return Teacher(model, init.tokenizer, spec, labels, init)


def student_layers(dcfg: Mapping[str, Any], teacher: Teacher) -> int | None:
    """The student's depth when it takes the teacher's config (`distill.student_layers`), else None."""
    share = dcfg.get("student_layers")
    if share is None:
        return None
    n_teacher = teacher.model.cfg.n_layers
    n = max(1, round(float(share) * n_teacher)) if float(share) <= 1 else int(share)
    if not 1 <= n <= n_teacher:
        raise LitTfError(f"distill.student_layers={share}: gives {n} layers; the teacher has {n_teacher}")
    return n


def student_config(dcfg: Mapping[str, Any], teacher: Teacher, model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The student's `model` config: the teacher's with fewer layers (`distill.student_layers`), or `model`."""
    n = student_layers(dcfg, teacher)
    if n is None:
        return dict(model_cfg)
    fields = {**teacher.model.cfg.to_dict(), "n_layers": n, "family": teacher.spec.name}
    fields.pop("vocab_size", None)  # the tokenizer decides (the teacher's own)
    fields.pop("pad_id", None)
    return fields


def check_labels(teacher: Teacher, labels: list[str]) -> None:
    """A classifier teacher must score the run's classes in the run's order."""
    if teacher.labels is not None and list(teacher.labels) != list(labels):
        raise LitTfError(f"{KEY}={teacher.source.path}: its classes {teacher.labels} differ from the data's "
                         f"{labels}: distil a teacher fine-tuned on the same labels")


def objective(dcfg: Mapping[str, Any], teacher: Teacher, student: nn.Module, kind: str) -> DistillationObjective:
    """The distillation objective; with `init_from_teacher`, first copies the teacher into the
    student where shapes allow (embeddings, every other layer)."""
    student_spec = family_of(student)
    if dcfg.get("init_from_teacher"):
        t_enc, s_enc = teacher.spec.encoder_of(teacher.model), student_spec.encoder_of(student)
        report = init_student_from_teacher(s_enc, t_enc)
        log.info("distill: student initialised from the teacher: %d tensors copied, %d kept their init",
                 len(report["copied"]), len(report["skipped"]))
        if not report["copied"]:
            raise LitTfError("distill.init_from_teacher=true but no teacher tensor fits the student (widths differ?): "
                             "set distill.init_from_teacher=false")
    weights = {k: float(v) for k, v in dict(dcfg.get("weights") or {}).items()}
    needs_blocks = bool(weights.get("hidden") or weights.get("attn"))
    return DistillationObjective(
        teacher.model, kind, temperature=float(dcfg.get("temperature", 2.0)), weights=weights,
        student_blocks=_blocks(student_spec, student) if needs_blocks else (),
        teacher_blocks=_blocks(teacher.spec, teacher.model) if needs_blocks else (),
        cache_teacher=bool(dcfg.get("cache_teacher", True)),
    )


def _blocks(spec: FamilySpec, model: nn.Module) -> list[nn.Module]:
    return [m for m in spec.encoder_of(model).modules() if isinstance(m, spec.block)]


def tags(teacher: Teacher, student: nn.Module) -> dict[str, str]:
    """Run tags: where the teacher came from and the student/teacher size ratio."""
    n_student = sum(p.numel() for p in student.parameters())
    if n_student >= teacher.n_params:
        log.warning("distill: the student (%d parameters) is not smaller than the teacher (%d)", n_student,
                    teacher.n_params)
    out = {"lit_tf.teacher": str(teacher.source.path), "lit_tf.teacher_params": str(teacher.n_params),
           "lit_tf.student_teacher_param_ratio": f"{n_student / max(teacher.n_params, 1):.3f}"}
    if teacher.source.parent_run_id:
        out["lit_tf.teacher_run_id"] = teacher.source.parent_run_id
    return out


class TeacherAccuracy(L.Callback):
    """Logs the teacher's accuracy on the validation data once, before the first validation:
    `val/teacher_acc` (a classifier's labelled rows, or a masked LM's masked tokens)."""

    def __init__(self, objective: DistillationObjective, kind: str) -> None:
        self.objective, self.kind = objective, kind
        self.value: float | None = None
        self.metrics: dict[str, float] = {}  # {"val/teacher_acc": ...} once measured (the run's final metrics)

    @torch.no_grad()
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.value is not None or trainer.datamodule is None:
            return
        from lit_tf.objectives.losses import IGNORE_INDEX
        from lit_tf.objectives.pretraining import mlm_targets

        trainer.datamodule.setup("fit")
        loaders = trainer.datamodule.val_dataloader()
        loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        limit = trainer.limit_val_batches
        hits = total = 0
        for loader in loaders:
            for i, batch in enumerate(loader):
                if isinstance(limit, int) and i >= limit:
                    break
                batch = {k: v.to(pl_module.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                logits = self.objective.teacher_logits_for(batch)
                gold = mlm_targets(batch) if self.kind == "mlm" else batch["labels"]
                gold = gold.reshape(-1)
                keep = gold != IGNORE_INDEX
                pred = logits.reshape(gold.shape[0], -1).argmax(-1).to(gold.device)
                hits += int((pred[keep] == gold[keep]).sum())
                total += int(keep.sum())
        self.value = hits / max(total, 1)
        self.metrics = {"val/teacher_acc": self.value}
        if trainer.logger is not None:
            trainer.logger.log_metrics({"val/teacher_acc": self.value}, step=trainer.global_step)
        log.info("distill: teacher accuracy on the validation data: %.4f (%d targets)", self.value, total)
