"""Fine-tuning end to end: init_from (checkpoint, MLflow run, HF dir), own data, zero-shot, CLIs."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import ROOT, shared_file
from failure_helpers import CrashAt

from lit_tf.cli.train import train

SMOKE = ["debug=smoke"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=180, cwd=ROOT)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, cache_dir):
    """A tiny pretraining run (quickstart, smoke size) logged to MLflow."""
    from lit_tf.cli.train import compose_config

    out = tmp_path_factory.mktemp("pre")
    cfg = compose_config([f"paths.cache_dir={cache_dir}", f"paths.log_dir={out / 'outputs'}",
                          f"paths.mlruns_dir={out / 'mlruns'}", *SMOKE])
    m = train(cfg)
    return m, out / "mlruns"


def test_finetune_from_mlflow_run_keeps_lineage_and_reports(compose, pretrained, tmp_path, monkeypatch):
    pre, mlruns = pretrained
    cfg = compose(["experiment=finetune_sst2", *SMOKE, f"init_from={pre['run_id']}", f"paths.mlruns_dir={mlruns}",
                   "register_as=sst2-classifier"])
    temp = tmp_path / "temp"  # this test's own temp folder: other tests (or workers) may download too
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    m = train(cfg)
    monkeypatch.undo()
    assert not list(temp.iterdir())  # the checkpoint downloaded from the MLflow run is gone
    assert 0.0 <= m["test/acc"] <= 1.0 and "val/acc" in m and "val/f1" in m
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{mlruns / 'mlflow.db'}")
    run = client.get_run(m["run_id"])
    assert run.data.tags["lit_tf.parent_run_id"] == pre["run_id"] and run.data.tags["init_kind"] == "mlflow_run"
    # the data it trained and was evaluated on: dataset inputs with the file's digest, split and counts
    inputs = {(d.dataset.name, next(t.value for t in d.tags if t.key == "mlflow.data.context")): d.dataset
              for d in run.inputs.dataset_inputs}
    assert set(inputs) == {("sst2-train", "train"), ("sst2-val", "validation"), ("sst2-test", "test")}
    profile = json.loads(inputs[("sst2-test", "test")].profile)
    assert profile["num_rows"] == 100 and profile["num_tokens"] > 100  # smoke: 100 test examples
    assert json.loads(inputs[("sst2-train", "train")].source)["uri"].endswith("sst2/train.tsv")
    from lit_tf.data import text

    assert inputs[("sst2-train", "train")].digest == text.fingerprint({"files": [cfg.data.train]})
    arts = {a.path for a in client.list_artifacts(m["run_id"], "reports")}
    assert {"reports/test.json", "reports/test_confusion.png"} <= arts
    report = json.loads((Path(m["output_dir"]) / "reports" / "test.json").read_text())
    assert sum(map(sum, report["confusion"])) == 100  # every test example counted once (smoke: 100)
    assert report["labels"] == ["negative", "positive"] and set(report["per_class"]) == {"negative", "positive"}
    logged = client.get_run(m["run_id"]).data.metrics  # per-class scores are metrics too, by label name
    for label in ("negative", "positive"):
        for score in ("precision", "recall", "f1"):
            assert logged[f"test/class/{label}/{score}"] == pytest.approx(report["per_class"][label][score])
    import matplotlib.image

    height, width = matplotlib.image.imread(Path(m["output_dir"]) / "reports" / "test_confusion.png").shape[:2]
    assert width >= 600 and height >= 500  # readable (it was 240x220)
    # the encoder really came from the pretraining checkpoint
    ft = torch.load(m["last_ckpt"], map_location="cpu", weights_only=True)
    assert ft["lit_tf"]["model_config"]["d_model"] == 32 and ft["lit_tf"]["labels"] == ["negative", "positive"]

    # the best model is an MLflow pyfunc model
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(f"sqlite:///{mlruns / 'mlflow.db'}")
    served = mlflow.pyfunc.load_model(m["model_uri"]).predict(pd.DataFrame({"text": ["great fun", "dull and long"]}))
    assert len(served) == 2 and all(p.split(":")[0] in ("negative", "positive") for p in served["prediction"])
    # ... listed in the experiment's Models tab by name, with the run's test metrics, a signature and an
    # input example; register_as made it a version of a registered model
    (logged,) = client.search_logged_models([run.info.experiment_id])
    assert logged.name == "finetune_sst2-bert" and logged.source_run_id == m["run_id"]
    model_metrics = {x.key: x.value for x in logged.metrics}
    assert model_metrics["test/acc"] == pytest.approx(m["test/acc"]) and "test/class/positive/f1" in model_metrics
    info = mlflow.models.get_model_info(m["model_uri"])
    assert [c.name for c in info.signature.inputs.inputs] == ["text"] and info.saved_input_example_info
    (version,) = client.search_model_versions("name = 'sst2-classifier'")
    assert int(version.version) == 1 and version.run_id == m["run_id"]

    pred = _cli("lit_tf.cli.predict", f"ckpt={m['best_ckpt']}", "text=a gripping , funny film", "top=2")
    assert pred.returncode == 0, pred.stderr[-2000:]
    labels = [x.split(":")[0] for x in pred.stdout.split("\t")[:2]]
    assert sorted(labels) == ["negative", "positive"]  # data.label_names of conf/data/sst2.yaml
    out = tmp_path / "hf"
    exp = _cli("lit_tf.cli.export", f"ckpt={m['best_ckpt']}", f"out={out}")
    assert exp.returncode == 0, exp.stderr[-2000:]
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"] and config["id2label"]["1"] == "positive"

    # ... and that exported HF directory is itself a valid init_from
    again = train(compose(["experiment=finetune_sst2", *SMOKE, f"init_from={out}", "logger=none"], out=tmp_path / "r2"))
    assert "test/acc" in again


def test_zero_shot_per_language_metrics_from_checkpoint(compose, pretrained):
    pre, _ = pretrained
    m = train(compose(["experiment=xnli_zeroshot_en_es", *SMOKE, f"init_from={pre['last_ckpt']}", "logger=none"]))
    for k in ("test/en/acc", "test/es/acc", "test/en/f1", "test/es/f1"):
        assert 0.0 <= m[k] <= 1.0, k
    ner = train(compose(["experiment=panx_zeroshot_en_es", *SMOKE, "logger=none"]))
    for k in ("test/en/f1", "test/es/f1", "val/f1", "test/en/precision"):
        assert k in ner, k


def test_bring_your_own_data_and_unseen_label_error(compose, tmp_path):
    rows = [{"body": f"text number {i} is {'good' if i % 2 else 'bad'}", "y": "pos" if i % 2 else "neg"} for i in range(60)]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "val.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:10]) + "\n")
    base = ["experiment=finetune_sst2", "data=classification", f"data.train={tmp_path / 'train.jsonl'}",
            f"data.val={tmp_path / 'val.jsonl'}", "data.text_fields=[body]", "data.label_field=y", *SMOKE, "logger=none",
            "data.tokenizer.vocab_size=100"]
    m = train(compose(base))
    assert "val/acc" in m
    bad = rows[:3] + [{"body": "surprise", "y": "neutral"}]
    (tmp_path / "bad.jsonl").write_text("\n".join(json.dumps(r) for r in bad) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:4: label 'neutral' was not seen in the training data"):
        train(compose([*base, f"data.val={tmp_path / 'bad.jsonl'}"]))
    # label names: every class named, else the first unnamed label is pointed at
    named = train(compose([*base, 'data.label_names={neg: negative, pos: positive}']))
    assert "val/acc" in named
    with pytest.raises(ValueError, match=r"train\.jsonl:2: label 'pos' has no name in data\.label_names"):
        train(compose([*base, "data.label_names={neg: negative}"]))


# ----------------------------------------------------------------------------- lengths and batches
class _Widths(L.Callback):
    """Per training batch: its width, its longest real row, and whether any [PAD] sits at a real position."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id, self.widths, self.longest, self.pad_inside = pad_id, [], [], False

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        mask = batch["attention_mask"]
        self.widths.append(int(mask.shape[1]))
        self.longest.append(int(mask.sum(1).max()))
        self.pad_inside |= bool((batch["input_ids"][mask] == self.pad_id).any())


def test_batch_widths_follow_the_data_not_the_tokenizer_file(compose, tmp_path):
    """An HF model dir whose tokenizer.json pads every example to 128 and truncates at 8, as shipped
    model folders often do: lit_tf ignores both wherever it reads that tokenizer (the HF dir,
    data.tokenizer.path naming the same file, the checkpoint it writes). `data.max_seq_len` alone
    cuts, and each batch is as wide as its longest row."""
    from lit_tf.data.finetune import read_labeled_table
    from lit_tf.data.tokenizer import PAD, TokenizerSpec, train_tokenizer
    from lit_tf.errors import LitTfError
    from lit_tf.lit.checkpoint import load_checkpoint
    from lit_tf.models import BertConfig, BertForSequenceClassification
    from lit_tf.models.hf import export_hf

    rows = read_labeled_table(shared_file("sst2/train.tsv"), ["sentence"], "label")[:2000]
    tok = train_tokenizer(TokenizerSpec(vocab_size=800, lowercase=True), [r["sentence"] for r in rows])
    tok.enable_padding(pad_id=tok.token_to_id(PAD), pad_token=PAD, length=128)
    tok.enable_truncation(max_length=8)
    tj = tmp_path / "tokenizer.json"
    tok.save(str(tj))
    cfg = BertConfig(vocab_size=tok.get_vocab_size(), d_model=32, n_layers=1, n_heads=2, d_ff=64, max_seq_len=128)
    hf = export_hf(BertForSequenceClassification(cfg, 2), tj, tmp_path / "hf", labels=["0", "1"])
    assert json.loads((hf / "tokenizer.json").read_text())["padding"]["strategy"] == {"Fixed": 128}

    rec = _Widths(tok.token_to_id(PAD))
    m = train(compose(["experiment=finetune_sst2", *SMOKE, f"init_from={hf}", f"data.tokenizer.path={tj}",
                       "data.max_seq_len=40", "logger=none"]), callbacks=[rec])
    assert rec.widths == rec.longest  # no all-padding columns: padded to the longest row of each batch
    assert not rec.pad_inside  # [PAD] never counted as a real token
    assert max(rec.widths) <= 40 and max(rec.widths) > 8 and len(set(rec.widths)) > 1, rec.widths

    # the model's position table caps data.max_seq_len, with an error naming both
    with pytest.raises(LitTfError, match=r"data.max_seq_len=129 exceeds max_position_embeddings=128"):
        train(compose(["experiment=finetune_sst2", *SMOKE, f"init_from={hf}", "data.max_seq_len=129", "logger=none"]))

    stored = load_checkpoint(m["last_ckpt"]).tokenizer
    assert stored.padding is None and stored.truncation is None
    assert len(stored.encode(rows[0]["sentence"] + " " + rows[1]["sentence"]).ids) > 8


def test_length_grouped_finetuning_resumes_exactly(compose, tmp_path):
    """Fine-tuning with length-grouped batches (the default) crashed mid-epoch and resumed from
    last.ckpt ends with the weights of the uninterrupted run: 24 rows = 3 batches per epoch,
    8 steps, last.ckpt every 2 steps, crash at step 5 (resume at 4, inside the second epoch)."""
    common = [
        "experiment=finetune_sst2", *SMOKE, "data.max_train_examples=24", "trainer.max_steps=8",
        "callbacks.last_checkpoint.every_n_train_steps=2", "callbacks.early_stopping=null", "logger=none",
        "data.group_by_length=true",
    ]
    ref = train(compose(common, out=tmp_path / "ref"))
    out = tmp_path / "crash"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(compose(common, out=out), callbacks=[CrashAt(5)])
    resumed = train(compose([*common, "ckpt_path=last", "paths.output_dir=${paths.runs_root}/run2"], out=out))
    a = torch.load(ref["last_ckpt"], map_location="cpu", weights_only=True)
    b = torch.load(resumed["last_ckpt"], map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"] == 8
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][k], v, rtol=0, atol=1e-6, msg=k)
    assert resumed["val/acc"] == ref["val/acc"]
