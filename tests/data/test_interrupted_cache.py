"""An interrupted tokenizer or shard build is never mistaken for a finished cache: a process
killed in the middle leaves only a hidden temporary folder, nothing loads it, and the next run
builds a complete cache equal to a clean build (and removes the leftover)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SHARED

from lit_tf.data import text
from lit_tf.data.shards import TokenShard, build_or_load_shards
from lit_tf.data.tokenizer import TokenizerArtifact, TokenizerSpec, get_or_train_tokenizer


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _leftovers(final: Path) -> list[Path]:
    return sorted(final.parent.glob(f".{final.name}.tmp-*"))


# --------------------------------------------------------------------------------------------
# shards: SIGKILL in the middle of a real build
# --------------------------------------------------------------------------------------------
NOVELS = sorted((SHARED / "spanish_novels_cligs").glob("*.txt"))[:4]

# Builds the shards of NOVELS; after ~1.5 write batches (4096 sentences each) the document stream
# stalls, so the parent can SIGKILL the build at a point where part of the data is on disk.
_SHARD_CHILD = """
import sys, time
from pathlib import Path
from lit_tf.data import text
from lit_tf.data.shards import build_or_load_shards
from lit_tf.data.tokenizer import TokenizerArtifact

tok_dir, cache, files = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
def docs():
    n = 0
    for d in text.iter_documents({"files": files}):
        yield d
        n += len(d)
        if n > 6000:
            time.sleep(600)
build_or_load_shards("novels", "novels-fp", docs, TokenizerArtifact.load(tok_dir), cache, val_fraction=0.05)
"""


@pytest.fixture(scope="module")
def novels_tokenizer(tmp_path_factory):
    if len(NOVELS) < 4:
        pytest.skip(f"shared data missing: {SHARED / 'spanish_novels_cligs'}")
    docs = list(text.iter_documents({"files": [str(NOVELS[0])]}))[:400]
    return get_or_train_tokenizer(TokenizerSpec(vocab_size=800), lambda: iter(docs), "novels", tmp_path_factory.mktemp("tok"))


def test_killed_shard_build_is_never_loaded_and_rebuilds_equal(tmp_path, novels_tokenizer):
    src = {"files": [str(p) for p in NOVELS]}

    def full_docs():
        return text.iter_documents(src)

    clean = build_or_load_shards("novels", "novels-fp", full_docs, novels_tokenizer, tmp_path / "clean",
                                 val_fraction=0.05)
    assert TokenShard.open(clean / "train").meta["n_sentences"] > 8192  # more than the child writes

    cache = tmp_path / "cache"
    final = cache / clean.name
    child = subprocess.Popen([sys.executable, "-c", _SHARD_CHILD, str(novels_tokenizer.path), str(cache),
                              *src["files"]], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        partial = None
        while partial is None:
            assert child.poll() is None, f"the build ended before it was killed: {child.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "the build never wrote tokens"
            hits = [p for t in _leftovers(final) for p in [t / "out" / "train" / "tokens.bin"]
                    if p.is_file() and p.stat().st_size > 0]
            partial = hits[0] if hits else None
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stderr.close()

    # What the kill left: a hidden temporary folder with part of the data, no finished shard.
    assert not final.exists()
    (leftover,) = _leftovers(final)
    assert partial.is_file() and not (leftover / "out" / "train" / "meta.json").exists()
    with pytest.raises(FileNotFoundError, match="not a finished token shard"):
        TokenShard.open(leftover / "out" / "train")

    # The next run builds the whole cache, equal byte for byte to a clean build, and cleans up.
    again = build_or_load_shards("novels", "novels-fp", full_docs, novels_tokenizer, cache, val_fraction=0.05)
    assert again == final and _files(final) == _files(clean)
    assert _leftovers(final) == []
    assert len(TokenShard.open(final / "train")) == len(TokenShard.open(clean / "train"))


# --------------------------------------------------------------------------------------------
# tokenizer: a crash inside the save
# --------------------------------------------------------------------------------------------
# Trains a tokenizer with a 4 KiB cap on the size of any file it writes (RLIMIT_FSIZE), so saving
# tokenizer.json fails half-written: with Python's default (SIGXFSZ ignored) the write raises;
# with the default signal action restored, the kernel kills the process mid-write.
_TOKENIZER_CHILD = """
import resource, signal, sys
from pathlib import Path
from lit_tf.data import text
from lit_tf.data.tokenizer import TokenizerSpec, get_or_train_tokenizer

cache, mode = Path(sys.argv[1]), sys.argv[2]
docs = list(text.iter_documents({"builtin": "pydoc", "max_files": 5}))[:300]
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
if mode == "killed":
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
get_or_train_tokenizer(TokenizerSpec(vocab_size=700), lambda: iter(docs), "pydoc", cache)
"""


@pytest.mark.parametrize("mode", ["exception", "killed"])
def test_crash_inside_tokenizer_save(tmp_path, mode):
    docs = list(text.iter_documents({"builtin": "pydoc", "max_files": 5}))[:300]
    spec = TokenizerSpec(vocab_size=700)
    clean = get_or_train_tokenizer(spec, lambda: iter(docs), "pydoc", tmp_path / "clean")
    assert (clean.path / "tokenizer.json").stat().st_size > 4096  # bigger than the child may write

    cache = tmp_path / "cache"
    final = cache / clean.path.name
    proc = subprocess.run([sys.executable, "-c", _TOKENIZER_CHILD, str(cache), mode], capture_output=True,
                          text=True, timeout=300)
    if mode == "exception":  # the error propagates and the temporary folder is removed
        assert proc.returncode == 1 and "Traceback" in proc.stderr, proc.stderr[-2000:]
        assert _leftovers(final) == []
    else:  # killed mid-write: only the hidden temporary folder remains, holding part of the file
        assert proc.returncode == -signal.SIGXFSZ, proc.stderr[-2000:]
        (leftover,) = _leftovers(final)
        written = leftover / "out" / "tokenizer.json"
        assert written.stat().st_size == 4096 and not (leftover / "out" / "meta.json").exists()
        with pytest.raises(ValueError, match="not a readable tokenizer.json"):  # the half file is no tokenizer
            TokenizerArtifact.load(written)
    assert not final.exists()

    again = get_or_train_tokenizer(spec, lambda: iter(docs), "pydoc", cache)
    assert again.path == final and _files(final) == _files(clean.path)
    assert again.digest == clean.digest and json.loads((final / "meta.json").read_text())["digest"] == again.digest
    assert _leftovers(final) == []
    assert os.listdir(cache) == [final.name]
