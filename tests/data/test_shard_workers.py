"""Sharding in encoder worker processes: the same bytes as in-process encoding and as a pure
Python reference, document order and hold-out kept, worker failures reported clearly with
nothing finished-looking left behind; shards read without memory maps."""

from __future__ import annotations

import os
import pickle
import signal
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_file

from lit_tf.data import shards, text
from lit_tf.data.shard_workers import EncoderPool, ShardWorkerError, default_workers
from lit_tf.data.shards import ShardArray, TokenShard, _is_val_doc, build_or_load_shards, write_shards
from lit_tf.data.tokenizer import TokenizerSpec, encode_flat, encode_words, get_or_train_tokenizer

VAL = 0.1


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    src = {"files": [str(shared_file("tinyshakespeare/input.txt"))]}
    docs = list(text.iter_documents(src))[:2500]  # ~300 KB, ~10k sentences
    # edge cases at batch boundaries and inside batches: an empty document, sentences that
    # tokenize to nothing (dropped), a document of nothing but those (dropped, still numbered)
    docs[3:3] = [[]]
    docs[700:700] = [["  ", "Hark!", "\t"]]
    docs[1500:1500] = [[" "]]
    tok = get_or_train_tokenizer(TokenizerSpec(vocab_size=1200), lambda: iter(docs), "shake-w",
                                 tmp_path_factory.mktemp("tok"))
    return docs, tok


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _children() -> list[int]:
    """Live child processes of this process (Linux /proc)."""
    me, out = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def test_workers_write_the_same_bytes_as_in_process_and_the_reference(setup, tmp_path, monkeypatch):
    docs, tok = setup
    monkeypatch.setattr(shards, "_ENCODE_BATCH_SENTENCES", 400)  # ~25 batches: round robin, back-pressure
    builds = {}
    for workers in (0, 2, 3):
        out = tmp_path / f"w{workers}"
        write_shards(iter(docs), tok, out, val_fraction=VAL, workers=workers)
        builds[workers] = _files(out)
    assert builds[2] == builds[0] and builds[3] == builds[0]
    assert _children() == []  # the pool is gone

    # pure-Python reference: encode_words per document, routed by the hold-out rule, in order
    ref = {"train": ([], [], [0], [0]), "val": ([], [], [0], [0])}
    for i, doc in enumerate(docs):
        kept = [(ids, st) for ids, st in encode_words(tok.tokenizer, doc) if ids]
        if not kept:
            continue
        ids_, ws, sb, db = ref["val" if _is_val_doc(i, VAL) else "train"]
        for ids, st in kept:
            ids_.extend(ids)
            ws.extend(st)
            sb.append(sb[-1] + len(ids))
        db.append(db[-1] + len(kept))
    for split, (ids, ws, sb, db) in ref.items():
        shard = TokenShard.open(tmp_path / "w2" / split)
        assert np.array_equal(np.asarray(shard.tokens), ids)
        assert np.array_equal(np.asarray(shard.word_start), np.asarray(ws, dtype=np.uint8))
        assert np.array_equal(np.asarray(shard.sent_bounds), sb)
        assert np.array_equal(np.asarray(shard.doc_bounds), db)
    assert TokenShard.open(tmp_path / "w2" / "val").meta["n_documents"] > 100


def test_a_failing_worker_raises_a_clear_error_and_leaves_no_shard(setup, tmp_path, monkeypatch):
    docs, tok = setup
    monkeypatch.setattr(shards, "_ENCODE_BATCH_SENTENCES", 400)
    bad = docs[:300] + [["fine", 12345]] + docs[300:600]  # not a string: fails in a worker, not the first batch

    with pytest.raises(ShardWorkerError, match=r"(?s)encoder worker \d \(pid \d+\) failed on batch \d+:.*TypeError"):
        build_or_load_shards("bad", "fp-bad", lambda: iter(bad), tok, tmp_path, val_fraction=VAL, workers=2)
    assert list(tmp_path.iterdir()) == []  # no shard, finished or not
    assert _children() == []


def test_a_dead_worker_is_reported_with_its_signal(setup):
    _, tok = setup
    with EncoderPool(tok.tokenizer.to_str(), np.dtype(np.uint16), 1, what="tokenizing x") as pool:
        pool.submit(["To be, or not to be."])
        assert pool.next_result()[0].tolist() == tok.tokenizer.encode("To be, or not to be.",
                                                                      add_special_tokens=False).ids
        victim = pool.procs[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        with pytest.raises(ShardWorkerError, match=r"tokenizing x: encoder worker 0 \(pid \d+\) was killed by signal 9"):
            pool.submit(["Whether 'tis nobler in the mind to suffer"])
            pool.next_result()
    assert _children() == []


def test_worker_count_knob(monkeypatch):
    monkeypatch.setenv("LIT_TF_SHARD_WORKERS", "3")
    assert default_workers() == 3
    monkeypatch.setenv("LIT_TF_SHARD_WORKERS", "many")
    with pytest.raises(ValueError, match="LIT_TF_SHARD_WORKERS='many'"):
        default_workers()
    monkeypatch.delenv("LIT_TF_SHARD_WORKERS")
    assert 1 <= default_workers() <= 8


def test_shard_arrays_read_without_mapping_files(setup, tmp_path):
    docs, tok = setup
    root = build_or_load_shards("small", "fp-small", lambda: iter(docs[:200]), tok, tmp_path, workers=0)
    shard = TokenShard.open(root / "train")
    full = np.fromfile(shard.tokens.path, dtype=shard.tokens.dtype)
    assert np.array_equal(shard.tokens[10:500], full[10:500]) and shard.tokens[-1] == full[-1]
    assert np.array_equal(shard.tokens[500:10:-7], full[500:10:-7]) and len(shard.tokens[7:7]) == 0
    idx = np.array([[40, 3], [len(full) - 1, 3]])
    assert np.array_equal(shard.tokens[idx], full[idx])
    assert np.array_equal(shard.doc_token_bounds, np.asarray(shard.sent_bounds)[np.asarray(shard.doc_bounds)])
    assert str(shard.tokens.path) not in Path("/proc/self/maps").read_text()  # read, never mapped
    again = pickle.loads(pickle.dumps(shard.tokens))  # DataLoader workers: by path, not by content
    assert len(pickle.dumps(shard.tokens)) < 1000 and np.array_equal(again[:50], full[:50])
    with pytest.raises(IndexError):
        shard.tokens[len(full)]
    (root / "train" / "tokens.bin").write_bytes(full[:-3].tobytes())  # truncated
    with pytest.raises(ValueError, match="disagree with meta.json"):
        TokenShard.open(root / "train")
    assert isinstance(shard.word_start, ShardArray)


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "bytelevel_bpe"])
def test_flat_encoding_matches_encode_words(setup, kind, tmp_path):
    """What sharding encodes with (`encode_flat` on the tokenizer without its post-processor)
    gives exactly `encode_words`'s ids and word starts, for every tokenizer kind."""
    docs, _ = setup
    sents = [s for d in docs[:300] for s in d] + ["", "  ", "[MASK] and [UNK]", "naïve café ÉTÉ"]
    tok = get_or_train_tokenizer(TokenizerSpec(kind=kind, vocab_size=600), lambda: iter(docs[:300]), "k", tmp_path)
    ids, starts, lengths = encode_flat(shards._without_post_processor(tok.tokenizer), sents, np.uint16)
    ref = encode_words(tok.tokenizer, sents)
    assert lengths.tolist() == [len(i) for i, _ in ref]
    assert ids.tolist() == [t for i, _ in ref for t in i]
    assert starts.astype(bool).tolist() == [s for _, st in ref for s in st]
