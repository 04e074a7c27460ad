"""GPT, XLM and BETO end to end on tiny sizes, plus the behaviour each family promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from lit_tf.cli.train import train
from lit_tf.models import XLMConfig, XLMForPreTraining
from lit_tf.objectives import IGNORE_INDEX
from lit_tf.objectives.pretraining import CrossLingualObjective


def _history(mlruns: Path, run_id: str, key: str) -> list[float]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{mlruns / 'mlflow.db'}")
    return [h.value for h in sorted(client.get_metric_history(run_id, key), key=lambda h: h.step)]


def test_gpt_learns_samples_and_generates(compose, tmp_path):
    cfg = compose(["experiment=gpt_clm_en", "model.d_model=64", "model.d_ff=256", "data.max_docs=3000",
                   "data.max_seq_len=64", "data.tokenizer.vocab_size=2000", "data.tokenizer.max_train_docs=3000", "trainer.max_steps=150",
                   "trainer.val_check_interval=50", "trainer.limit_val_batches=6", "trainer.log_every_n_steps=1",
                   "callbacks.generate_samples.max_new_tokens=8"])
    m = train(cfg)
    mlruns = Path(cfg.paths.mlruns_dir)
    start = _history(mlruns, m["run_id"], "train/clm_loss")[0]
    val = _history(mlruns, m["run_id"], "val/ppl")
    # Next-token loss falls on real text. Over seeds 1-3 the drop from the first step is 1.11-1.24 at
    # this budget (the curve is near the unigram plateau, where later validations move little and
    # not always by much), so the margin asserted is 0.8.
    assert m["val/loss"] < start - 0.8, (start, val)
    assert m["val/ppl"] == pytest.approx(torch.tensor(m["val/loss"]).exp().item(), rel=1e-4)
    from mlflow.tracking import MlflowClient

    arts = [a.path for a in MlflowClient(f"sqlite:///{mlruns / 'mlflow.db'}").list_artifacts(m["run_id"], "samples")]
    assert len(arts) == 3 and arts[0].endswith(".txt")  # one file per validation

    proc = subprocess.run([sys.executable, "-m", "lit_tf.cli.generate", f"ckpt={m['last_ckpt']}", "prompt=KING",
                           "max_new_tokens=12", "num_samples=2", "temperature=0"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    samples = proc.stdout.split("--- sample ")[1:]
    assert len(samples) == 2 and all("KING" in s for s in samples)
    assert samples[0].split("\n", 1)[1] == samples[1].split("\n", 1)[1]  # greedy is deterministic
    bad = subprocess.run([sys.executable, "-m", "lit_tf.cli.generate", "prompt=x"], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert bad.returncode != 0 and "ckpt=... required" in bad.stderr


def test_xlm_second_language_pair(compose):
    m = train(compose(["experiment=xlm_mlm_tlm_en_es", "data=xlm_en_fr", "debug=smoke", "logger=none"]))
    for k in ("val/en/mlm_ppl", "val/fr/mlm_ppl", "val/en-fr/tlm_ppl", "val/retrieval_acc/en-fr",
              "val/retrieval_acc/en->fr", "val/retrieval_acc/fr->en"):
        assert k in m, k
    assert 0.0 <= m["val/retrieval_acc/en-fr"] <= 1.0


def test_xlm_adversarial_and_clm_variants(compose):
    adv = train(compose(["experiment=xlm_mlm_tlm_en_es", "debug=smoke", "logger=none",
                         "objective.adversarial.enabled=true"]))
    assert "train/adv_loss" in adv and adv["train/adv_loss"] > 0
    clm = train(compose(["experiment=xlm_mlm_tlm_en_es", "objective=xlm_clm", "debug=smoke", "logger=none"]))
    assert "val/en/clm_ppl" in clm and "val/es/clm_ppl" in clm and "val/en-es/tlm_loss" not in clm


def _xlm_batch(g: torch.Generator, lang: int, term: str) -> dict:
    ids = torch.randint(5, 60, (4, 12), generator=g)
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, 3] = ids[:, 3]
    masked = ids.clone()
    masked[:, 3] = 4
    return {"input_ids": masked, "lang_ids": torch.full_like(ids, lang), "attention_mask": torch.ones_like(ids, dtype=torch.bool),
            "position_ids": torch.arange(12).expand(4, 12), "mlm_labels": labels, "term": term}


def test_objective_weights_follow_schedules():
    torch.manual_seed(0)
    model = XLMForPreTraining(XLMConfig(vocab_size=64, n_langs=2, d_model=32, n_layers=1, n_heads=2, d_ff=64,
                                        max_seq_len=16, dropout=0.0, attn_dropout=0.0)).eval()
    g = torch.Generator().manual_seed(1)
    batch = {"mlm": _xlm_batch(g, 0, "mlm"), "tlm": _xlm_batch(g, 1, "tlm")}
    obj = CrossLingualObjective({"mlm": 2.0, "tlm": "0:0,100:1,200:0.5"}, {"en": "mlm", "en-es": "tlm"})
    means = {}
    for step, w_tlm in ((0, 0.0), (50, 0.5), (100, 1.0), (150, 0.75), (400, 0.5)):
        out = obj(model, batch, step=step)
        means = {k: (s / n).item() for k, (s, n) in out.terms.items()}
        assert out.loss.item() == pytest.approx(2.0 * means["mlm"] + w_tlm * means["tlm"], rel=1e-5), step
    assert set(obj.val_terms) == {"en/mlm", "en-es/tlm"}
    # a per-stream weight overrides the term's weight for that stream only
    per_lang = CrossLingualObjective({"mlm": 1.0, "mlm/es": 0.25, "tlm": 1.0}, {})
    es_batch = {"mlm": {**batch["mlm"], "stream": "es"}, "tlm": {**batch["tlm"], "stream": "en-es"}}
    en_batch = {"mlm": {**batch["mlm"], "stream": "en"}, "tlm": {**batch["tlm"], "stream": "en-es"}}
    assert per_lang(model, es_batch).loss.item() == pytest.approx(0.25 * means["mlm"] + means["tlm"], rel=1e-5)
    assert per_lang(model, en_batch).loss.item() == pytest.approx(means["mlm"] + means["tlm"], rel=1e-5)
    with pytest.raises(ValueError, match=r"part 1 'x' is not 'step:value'|not 'step:value'"):
        CrossLingualObjective({"mlm": "0:1,x"}, {})
