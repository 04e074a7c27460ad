"""ELECTRA end to end (smoke-sized): pretraining with replaced-token detection on real text, then
fine-tuning and HF export from its discriminator."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import skip_without_shared

from lit_tf.cli.train import compose_config, train
from lit_tf.lit.checkpoint import load_checkpoint

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def electra(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("electra")
    paths = [f"paths.cache_dir={cache_dir}", f"paths.log_dir={out / 'outputs'}", f"paths.mlruns_dir={out / 'mlruns'}"]
    cfg = compose_config([*paths, "experiment=electra_en", "debug=smoke"])
    skip_without_shared(cfg)
    return train(cfg), paths


def test_electra_pretrains_with_its_metrics(electra):
    m, _ = electra
    for key in ("val/gen_mlm_acc", "val/rtd_acc", "val/rtd_auc", "val/replaced_rate", "val/gen_mlm_loss", "val/rtd_loss"):
        assert key in m, key
    # 15% of the tokens are selected and the generator's samples replace most of them at the start
    assert 0.05 < m["val/replaced_rate"] <= 0.15 + 1e-6
    assert m["val/loss"] == pytest.approx(m["val/gen_mlm_loss"] + 50.0 * m["val/rtd_loss"], rel=1e-4)
    loaded = load_checkpoint(m["last_ckpt"])
    assert loaded.meta["family"] == "electra"
    # the generator shares the discriminator's embeddings and is a quarter of its width
    assert loaded.model.generator.embeddings is loaded.model.electra.embeddings
    assert loaded.model.generator.cfg.d_model * 4 == loaded.model.cfg.d_model


def test_finetune_and_export_use_the_discriminator(electra, tmp_path):
    transformers = pytest.importorskip("transformers")
    pre, paths = electra
    m = train(compose_config([*paths, "experiment=finetune_sst2", "debug=smoke", f"init_from={pre['last_ckpt']}"]))
    assert 0.0 <= m["test/acc"] <= 1.0
    pretrained, tuned = load_checkpoint(pre["last_ckpt"]), load_checkpoint(m["best_ckpt"])
    assert type(tuned.model).__name__ == "ElectraForSequenceClassification"
    from lit_tf.models.hf import export_hf

    tok = tmp_path / "tokenizer.json"
    tuned.tokenizer.save(str(tok))
    out = export_hf(tuned.model, tok, tmp_path / "hf", labels=tuned.meta["labels"])
    theirs = transformers.ElectraForSequenceClassification.from_pretrained(out).eval()
    ids = torch.tensor([tuned.tokenizer.encode("a gripping , funny film").ids])
    with torch.no_grad():
        ours = tuned.model.eval()(ids).logits
        assert torch.allclose(ours, theirs(ids).logits, atol=1e-5)
    # the pretraining checkpoint exports its discriminator as HF's ElectraForPreTraining
    out = export_hf(pretrained.model, tok, tmp_path / "hf_pre")
    disc = transformers.ElectraForPreTraining.from_pretrained(out).eval()
    with torch.no_grad():
        assert torch.allclose(pretrained.model.eval()(ids).rtd_logits, disc(ids).logits, atol=1e-5)
