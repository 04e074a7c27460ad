"""A resumed run uses the tokenizer stored in its checkpoint: never retrained, never looked up by
settings; its shards are found by the tokenizer's content digest."""

from __future__ import annotations

import json

import pytest
import torch

from lit_tf.cli.train import train
from lit_tf.data.tokenizer import TokenizerSpec, content_digest, train_tokenizer

SMOKE = ["debug=smoke", "logger=none", "trainer.max_steps=2"]


def test_resume_keeps_the_checkpoint_tokenizer(compose, tmp_path):
    cache = tmp_path / "cache"
    first = train(compose([*SMOKE, f"paths.cache_dir={cache}"]))
    stored = torch.load(first["last_ckpt"], map_location="cpu", weights_only=True)["lit_tf"]["tokenizer_json"]
    (trained,) = (cache / "tokenizers").iterdir()
    assert (trained / "tokenizer.json").read_text() == stored  # the checkpoint holds the file's exact text
    shards = sorted(p.name for p in (cache / "shards").iterdir())

    # Other tokenizer settings on resume change nothing: the checkpoint's tokenizer is used.
    resumed = train(compose([*SMOKE, f"paths.cache_dir={cache}", "trainer.max_steps=4", "ckpt_path=last",
                             "data.tokenizer.vocab_size=500", "paths.output_dir=${paths.runs_root}/run2"]))
    meta = torch.load(resumed["last_ckpt"], map_location="cpu", weights_only=True)["lit_tf"]
    assert meta["tokenizer_json"] == stored and meta["tokenizer_key"] == content_digest(stored)[:16]
    digest_dir = cache / "tokenizers" / f"sha256-{content_digest(stored)[:16]}"
    assert sorted(p.name for p in (cache / "tokenizers").iterdir()) == sorted([trained.name, digest_dir.name])
    assert json.loads((digest_dir / "meta.json").read_text())["digest"] == content_digest(stored)
    assert sorted(p.name for p in (cache / "shards").iterdir()) == shards  # same content: same shards

    # data.tokenizer.path naming the stored tokenizer is fine; another tokenizer is an error.
    same = compose([*SMOKE, f"paths.cache_dir={cache}", "trainer.max_steps=5", "ckpt_path=last",
                    f"data.tokenizer.path={trained / 'tokenizer.json'}", "paths.output_dir=${paths.runs_root}/run3"])
    assert train(same)["last_ckpt"]
    other = tmp_path / "other.json"
    other.write_text(train_tokenizer(TokenizerSpec(vocab_size=100, min_frequency=1), ["some other text"] * 5).to_str())
    bad = compose([*SMOKE, f"paths.cache_dir={cache}", "trainer.max_steps=6", "ckpt_path=last",
                   f"data.tokenizer.path={other}", "paths.output_dir=${paths.runs_root}/run4"])
    with pytest.raises(ValueError, match=r"data.tokenizer.path=.*checkpoint .*last.ckpt"):
        train(bad)
