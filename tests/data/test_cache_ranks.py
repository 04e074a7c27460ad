"""Distributed runs: only global rank 0 trains the tokenizer and builds shards; other ranks wait
for its folders and load them, and say clearly when nothing is coming."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import shared_file

from lit_tf.data import text
from lit_tf.data.atomic import is_cache_builder, wait_for
from lit_tf.data.shards import build_or_load_shards
from lit_tf.data.tokenizer import TokenizerSpec, get_or_train_tokenizer

_RANK_VARS = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")


@pytest.mark.parametrize(("env", "builder"), [
    ({}, True),
    ({"RANK": "0", "LOCAL_RANK": "0"}, True),
    ({"RANK": "3", "LOCAL_RANK": "1"}, False),
    ({"LOCAL_RANK": "1", "NODE_RANK": "0"}, False),  # Lightning's launcher: a child on node 0
    ({"NODE_RANK": "1"}, False),  # the main process on the second node
    ({"SLURM_PROCID": "0", "LOCAL_RANK": "2"}, False),  # a child started inside a one-task SLURM job
    ({"SLURM_PROCID": "5"}, False),
])
def test_only_global_rank_zero_builds(monkeypatch, env, builder):
    for k in _RANK_VARS:
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert is_cache_builder() is builder


# A rank > 0: must never read the corpus (its docs factory fails), only load rank 0's folders.
_RANK1 = """
import json, sys
from pathlib import Path
from lit_tf.data.shards import build_or_load_shards
from lit_tf.data.tokenizer import TokenizerSpec, get_or_train_tokenizer

cache = Path(sys.argv[1])
def docs():
    raise AssertionError("rank 1 read the corpus")
tok = get_or_train_tokenizer(TokenizerSpec(vocab_size=500), docs, "fp", cache / "tok")
root = build_or_load_shards("shake", "fp", docs, tok, cache / "shards", val_fraction=0.1)
print(json.dumps({"digest": tok.digest, "shards": str(root)}))
"""


def test_other_ranks_wait_for_rank_zero_and_load_its_result(tmp_path):
    src = {"files": [str(shared_file("tinyshakespeare/input.txt"))]}
    docs = list(text.iter_documents(src))[:600]
    env = {k: v for k, v in os.environ.items() if k not in _RANK_VARS}
    rank1 = subprocess.Popen([sys.executable, "-c", _RANK1, str(tmp_path)], env={**env, "RANK": "1", "WORLD_SIZE": "2"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # usually rank 1 is waiting by now; either order must work
        tok = get_or_train_tokenizer(TokenizerSpec(vocab_size=500), lambda: iter(docs), "fp", tmp_path / "tok")
        root = build_or_load_shards("shake", "fp", lambda: iter(docs), tok, tmp_path / "shards", val_fraction=0.1)
        out, err = rank1.communicate(timeout=300)
    finally:
        if rank1.poll() is None:
            rank1.kill()
            rank1.communicate()
    assert rank1.returncode == 0, err[-3000:]
    assert json.loads(out.strip().splitlines()[-1]) == {"digest": tok.digest, "shards": str(root)}


def test_waiting_rank_explains_a_cache_nobody_builds(tmp_path):
    with pytest.raises(TimeoutError, match=r"tokenizer: waited .* no build in progress.*paths.cache_dir must be shared"):
        wait_for(tmp_path / "tok-abc", "meta.json", what="tokenizer", timeout_s=5.0, grace_s=0.3)
