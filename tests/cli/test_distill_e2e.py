"""Distillation end to end: DistilBERT-style MLM distillation from a checkpoint, and task-specific
distillation on SST-2 from a fine-tuned teacher named by its MLflow run id (both smoke-sized)."""

from __future__ import annotations

import pytest
from conftest import skip_without_shared

from lit_tf.cli.train import compose_config, train
from lit_tf.errors import LitTfError
from lit_tf.lit.checkpoint import load_checkpoint

SMOKE = ["debug=smoke"]


def _store(out) -> list[str]:
    return [f"paths.log_dir={out / 'outputs'}", f"paths.mlruns_dir={out / 'mlruns'}"]


@pytest.fixture(scope="module")
def project(tmp_path_factory, cache_dir):
    return tmp_path_factory.mktemp("distill"), cache_dir


def _compose(project, overrides: list[str]):
    out, cache = project
    return compose_config([f"paths.cache_dir={cache}", *_store(out), *SMOKE, *overrides])


def test_distil_mlm_from_a_checkpoint_halves_the_teacher(project):
    # the teacher: a 2-layer BERT pretrained (MLM + NSP) on the same English text
    cfg = _compose(project, ["experiment=bert_mlm_nsp_en", "model.n_layers=2"])
    skip_without_shared(cfg)
    teacher = train(cfg)
    m = train(_compose(project, ["experiment=distill_mlm_en", f"distill.teacher={teacher['last_ckpt']}"]))
    for key in ("val/kd_loss", "val/student_loss", "val/student_acc", "val/cos_loss", "val/teacher_acc"):
        assert key in m, key
    assert 0.0 <= m["val/teacher_acc"] <= 1.0
    t, s = load_checkpoint(teacher["last_ckpt"]), load_checkpoint(m["last_ckpt"])
    # DistilBERT's student: the teacher's config with half its layers, its tokenizer, no NSP head
    assert s.model.cfg.n_layers == 1 and s.model.cfg.d_model == t.model.cfg.d_model
    assert s.tokenizer.to_str() == t.tokenizer.to_str() and s.model.nsp_head is None
    assert s.meta["family"] == "bert" and not s.meta.get("task")  # a pretrained encoder, ready to fine-tune
    from mlflow.tracking import MlflowClient

    out, _ = project
    tags = MlflowClient(f"sqlite:///{out / 'mlruns' / 'mlflow.db'}").get_run(m["run_id"]).data.tags
    assert tags["lit_tf.teacher"] == teacher["last_ckpt"]
    assert 0.3 < float(tags["lit_tf.student_teacher_param_ratio"]) < 1.0


def test_distil_sst2_from_an_mlflow_run_id(project):
    cfg = _compose(project, ["experiment=finetune_sst2"])
    skip_without_shared(cfg)
    teacher = train(cfg)
    m = train(_compose(project, ["experiment=distill_sst2", f"distill.teacher={teacher['run_id']}"]))
    assert {"val/kd_loss", "val/student_acc", "val/acc", "test/acc"} <= set(m)
    from mlflow.tracking import MlflowClient

    out, _ = project
    client = MlflowClient(f"sqlite:///{out / 'mlruns' / 'mlflow.db'}")
    # the teacher loaded from the run is its best checkpoint: its accuracy on the same validation
    # data is the best val/acc the teacher run recorded
    best = max(p.value for p in client.get_metric_history(teacher["run_id"], "val/acc"))
    assert m["val/teacher_acc"] == pytest.approx(best, abs=1e-6)
    run = client.get_run(m["run_id"])
    assert run.data.tags["lit_tf.teacher_run_id"] == teacher["run_id"]
    assert run.data.tags["lit_tf.teacher"].startswith(f"runs:/{teacher['run_id']}/checkpoints/")
    student = load_checkpoint(m["best_ckpt"])
    assert student.meta["task"] == "seq_cls" and student.meta["labels"] == load_checkpoint(teacher["best_ckpt"]).meta["labels"]

    # a teacher fine-tuned for another task is refused before any training, naming the key
    with pytest.raises(LitTfError, match="distill.teacher=.*needs a teacher fine-tuned for token_cls"):
        train(_compose(project, ["experiment=conll03_ner", f"+distill.teacher={teacher['best_ckpt']}",
                                 "+distill.weights={kd: 1.0}"]))


def test_distillation_needs_a_teacher(project):
    with pytest.raises(LitTfError, match="distill.teacher is required"):
        train(_compose(project, ["experiment=distill_sst2"]))
