"""Translation end to end (smoke-sized): an encoder-decoder from scratch on the shared WMT + Tatoeba
en-es pairs, one warm-started from an XLM pretraining run named by its MLflow run id, the
translate CLI (files, stdin/stdout, scoring) and resuming a translation run."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, skip_without_shared

from lit_tf.cli.train import compose_config, train
from lit_tf.errors import LitTfError
from lit_tf.lit.checkpoint import load_checkpoint

SMOKE = ["debug=smoke"]


@pytest.fixture(scope="module")
def project(tmp_path_factory, cache_dir):
    return tmp_path_factory.mktemp("mt"), cache_dir


def _compose(project, overrides: list[str]):
    out, cache = project
    return compose_config([f"paths.cache_dir={cache}", f"paths.log_dir={out / 'outputs'}",
                           f"paths.mlruns_dir={out / 'mlruns'}", *SMOKE, *overrides])


def _client(project):
    from mlflow.tracking import MlflowClient

    out, _ = project
    return MlflowClient(f"sqlite:///{out / 'mlruns' / 'mlflow.db'}")


@pytest.fixture(scope="module")
def scratch(project):
    cfg = _compose(project, ["experiment=mt_en_es"])
    skip_without_shared(cfg)
    return train(cfg)


@pytest.fixture(scope="module")
def xlm(project):
    cfg = _compose(project, ["experiment=xlm_mlm_tlm_en_es"])
    skip_without_shared(cfg)
    return train(cfg)


def test_scratch_translation_logs_loss_ppl_bleu_and_samples(project, scratch):
    m = scratch
    for key in ("val/loss", "val/ppl", "val/mt_loss", "val/mt_acc", "val/bleu", "val/chrf", "train/loss"):
        assert key in m, key
    assert m["val/ppl"] == pytest.approx(math.exp(m["val/mt_loss"]), rel=1e-5)
    assert m["val/loss"] == pytest.approx(m["val/mt_loss"], rel=1e-6)  # the plain NLL; only training is smoothed
    assert 0.0 <= m["val/bleu"] <= 100.0 and 0.0 <= m["val/chrf"] <= 100.0
    loaded = load_checkpoint(m["last_ckpt"])
    assert loaded.meta["family"] == "seq2seq" and loaded.model.cfg.pre_ln
    client = _client(project)
    run = client.get_run(m["run_id"])
    assert run.data.tags["sacrebleu.bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert run.data.tags["sacrebleu.chrf"].startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:")
    texts = [f.path for f in client.list_artifacts(m["run_id"], "translations")]
    assert texts and all(p.endswith(".txt") for p in texts)
    body = open(client.download_artifacts(m["run_id"], texts[-1], str(project[0])), encoding="utf-8").read()
    assert "BLEU" in body and "[0] src: " in body and "[0] ref: " in body and "[0] hyp: " in body


def test_translate_cli_files_stdin_and_scoring(scratch, tmp_path):
    src, ref = tmp_path / "src.txt", tmp_path / "ref.txt"
    src.write_text("The house is red.\n\nI like the sea.\n", encoding="utf-8")
    ref.write_text("La casa es roja.\n\nMe gusta el mar.\n", encoding="utf-8")
    hyp = tmp_path / "hyp.txt"
    run = [sys.executable, "-m", "lit_tf.cli.translate", f"ckpt={scratch['last_ckpt']}"]
    p = subprocess.run([*run, f"input={src}", f"output={hyp}", "beam=3", f"ref={ref}"], capture_output=True,
                       text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = hyp.read_text(encoding="utf-8").split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[3] == ""  # one line per input line, the empty one kept
    assert "BLEU = " in p.stdout and "chrF = " in p.stdout and "signature: nrefs:1|" in p.stdout
    # stdin -> stdout (greedy), the report on stderr
    p = subprocess.run([*run, "beam=1"], input="The house is red.\n", capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert len(p.stdout.split("\n")) == 2 and "translated 1 lines" in p.stderr
    # scoring existing translations: a perfect copy scores 100
    p = subprocess.run([sys.executable, "-m", "lit_tf.cli.translate", f"hyp={ref}", f"ref={ref}"], capture_output=True,
                       text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0 and "BLEU = 100.00" in p.stdout, p.stdout + p.stderr
    # misaligned files are refused, naming the file
    short = tmp_path / "short.txt"
    short.write_text("uno\n", encoding="utf-8")
    p = subprocess.run([sys.executable, "-m", "lit_tf.cli.translate", f"hyp={ref}", f"ref={short}"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode != 0 and f"ref={short} has 1 lines" in p.stderr


def test_export_to_hf_mbart_matches_logits(scratch, tmp_path):
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "hf_mt"
    p = subprocess.run([sys.executable, "-m", "lit_tf.cli.export", f"ckpt={scratch['last_ckpt']}", f"out={out}"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "MBartForConditionalGeneration" in p.stdout  # a pre-LN model
    theirs = transformers.MBartForConditionalGeneration.from_pretrained(out).eval()
    loaded = load_checkpoint(scratch["last_ckpt"])
    from lit_tf.lit.translation import encode_batch

    src, mask = encode_batch(loaded.tokenizer, ["The house is red.", "I like the sea very much."], 64)
    tgt, tmask = encode_batch(loaded.tokenizer, ["La casa", "Me gusta mucho el mar."], 64)
    with torch.no_grad():
        ours = loaded.model.eval()(src, tgt, attention_mask=mask, decoder_attention_mask=tmask).lm_logits
        ref = theirs(input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt,
                     decoder_attention_mask=tmask.long()).logits
    real = tmask.unsqueeze(-1).expand_as(ours)
    torch.testing.assert_close(ours[real], ref[real], atol=1e-4, rtol=1e-4)


def test_from_xlm_by_run_id_starts_from_its_weights(project, xlm):
    from lit_tf.lit.recipes import build_pretraining

    cfg = _compose(project, ["experiment=mt_en_es_from_xlm", f"init_from={xlm['run_id']}"])
    out, _ = project
    where = f"sqlite:///{out / 'mlruns' / 'mlflow.db'}"
    built = build_pretraining(cfg, tracking_uri=where, where=where)
    source = load_checkpoint(xlm["last_ckpt"]).model
    model = built.model
    # the XLM's shapes, layout, vocabulary and language embeddings; en -> es by the XLM's language ids
    assert (model.cfg.d_model, model.cfg.n_layers, model.cfg.pre_ln) == (source.cfg.d_model, source.cfg.n_layers, False)
    assert model.cfg.n_langs == source.cfg.n_langs and built.tokenizer_json == load_checkpoint(xlm["last_ckpt"]).tokenizer.to_str()
    sd, xsd = model.state_dict(), source.state_dict()
    emb = next(v for k, v in sd.items() if k.endswith("word_embeddings.weight") or k.endswith("embed_tokens.weight"))
    assert torch.equal(emb, xsd["xlm.embeddings.word_embeddings.weight"])
    assert built.tags["lit_tf.parent_run_id"] == xlm["run_id"]

    m = train(cfg)
    assert {"val/bleu", "val/chrf", "val/ppl"} <= set(m)
    run = _client(project).get_run(m["run_id"])
    assert run.data.tags["mlflow.parentRunId"] == xlm["run_id"] and run.data.tags["init_kind"] == "mlflow_run"


def test_warm_start_needs_an_xlm_checkpoint(project, scratch):
    # a translation checkpoint is not an XLM: refused before training, naming the key
    with pytest.raises(LitTfError, match="init_from="):
        train(_compose(project, ["experiment=mt_en_es_from_xlm", f"init_from={scratch['last_ckpt']}"]))


def test_translation_resumes_exactly(project):
    """Crashed at step 5 and resumed from the step-4 last.ckpt (length-bucketed batches, dropout on),
    a translation run ends with the weights of the uninterrupted one."""
    from failure_helpers import CrashAt

    base = ["experiment=mt_en_es", "trainer.max_steps=8", "trainer.val_check_interval=4",
            "callbacks.last_checkpoint.every_n_train_steps=2", "logger=none"]
    cfg = _compose(project, [*base, "name=mt_ref"])
    skip_without_shared(cfg)
    ref = train(cfg)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(_compose(project, [*base, "name=mt_crash"]), callbacks=[CrashAt(5)])
    resumed = train(_compose(project, [*base, "name=mt_crash", "ckpt_path=last",
                                       "paths.output_dir=${paths.runs_root}/run2"]))
    a = torch.load(ref["last_ckpt"], map_location="cpu", weights_only=True)
    b = torch.load(resumed["last_ckpt"], map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"] == 8
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][k], v, rtol=0, atol=1e-6, msg=k)
    assert resumed["val/bleu"] == ref["val/bleu"]


os.environ.setdefault("HF_HUB_OFFLINE", "1")
