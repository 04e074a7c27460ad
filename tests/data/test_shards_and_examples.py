"""Token shards, example construction, collation and the resumable sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import shared_file

from lit_tf.data import text
from lit_tf.data.pretraining import MLMCollator, PackedBlockDataset, SentencePairDataset
from lit_tf.data.sampling import StreamBatchSampler
from lit_tf.data.shards import TokenShard, build_or_load_shards
from lit_tf.data.tokenizer import N_SPECIAL, TokenizerSpec, encode_words, get_or_train_tokenizer
from lit_tf.objectives import IGNORE_INDEX

CLS, SEP, MASK, PAD = 2, 3, 4, 0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    src = {"files": [str(shared_file("tinyshakespeare/input.txt"))]}
    docs = list(text.iter_documents(src))[:2000]
    root = tmp_path_factory.mktemp("shards")
    tok = get_or_train_tokenizer(TokenizerSpec(vocab_size=1500), lambda: iter(docs), "fp", root / "tok")
    shard_root = build_or_load_shards("shake", "fp", lambda: iter(docs), tok, root / "shards", val_fraction=0.1)
    return docs, tok, shard_root


def test_shard_round_trip(corpus):
    docs, tok, root = corpus
    train, val = TokenShard.open(root / "train"), TokenShard.open(root / "val")
    assert train.meta["n_documents"] + val.meta["n_documents"] == len(docs)
    assert 0.05 < val.meta["n_documents"] / len(docs) < 0.15
    assert train.meta["tokenizer_digest"] == tok.digest and train.meta["vocab_size"] == tok.vocab_size
    assert train.tokens.dtype == np.uint16
    # Rebuild the split from the documents and compare token-for-token, sentence by sentence.
    train_docs = [d for i, d in enumerate(docs) if not _is_val(i)]
    assert len(train_docs) == train.meta["n_documents"]
    for d in (0, 7, len(train_docs) - 1):
        s0, s1 = train.doc_bounds[d], train.doc_bounds[d + 1]
        expect = encode_words(tok.tokenizer, train_docs[d])
        assert s1 - s0 == len(expect)
        for s, (ids, starts) in zip(range(s0, s1), expect):
            a, b = train.sent_bounds[s], train.sent_bounds[s + 1]
            assert train.tokens[a:b].tolist() == ids
            assert train.word_start[a:b].astype(bool).tolist() == starts


def _is_val(i):
    from lit_tf.data.shards import _is_val_doc

    return _is_val_doc(i, 0.1)


def test_shards_are_cached_and_crash_safe(corpus, tmp_path):
    docs, tok, root = corpus

    def exploding():
        yield from docs[:50]
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        build_or_load_shards("x", "fp-x", exploding, tok, tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left to be mistaken for a shard
    with pytest.raises(FileNotFoundError, match="not a finished token shard"):
        TokenShard.open(tmp_path)
    calls = []
    again = build_or_load_shards("shake", "fp", lambda: calls.append(1) or iter(docs), tok, root.parent, val_fraction=0.1)
    assert again == root and calls == []


def test_nsp_pairs_segment_ids_and_balance(corpus):
    _, tok, root = corpus
    ds = SentencePairDataset(TokenShard.open(root / "train"), 64, CLS, SEP, seed=0)
    labels = ds.examples[:, 4]
    assert abs(labels.mean() - 0.5) < 0.05
    for i in range(0, len(ds), max(1, len(ds) // 50)):
        ex = ds[(i, 0)]
        ids, types = ex["input_ids"], ex["token_type_ids"]
        assert len(ids) <= 64 and ids[0] == CLS and ids[-1] == SEP
        seps = np.flatnonzero(ids == SEP)
        assert len(seps) == 2
        assert (types[: seps[0] + 1] == 0).all() and (types[seps[0] + 1 :] == 1).all()
        assert seps[0] > 1 and seps[1] > seps[0] + 1  # both segments non-empty


def test_packed_blocks_full_length_with_doc_separators(corpus):
    _, tok, root = corpus
    shard = TokenShard.open(root / "train")
    ds = PackedBlockDataset(shard, 64, doc_sep_id=SEP, bos_id=CLS, eos_id=SEP)
    assert len(ds) == len(shard) // 62
    n_inner_seps = 0
    for i in range(len(ds)):
        ex = ds[i]
        assert len(ex["input_ids"]) == 64 and ex["input_ids"][0] == CLS and ex["input_ids"][-1] == SEP
        n_inner_seps += int((ex["input_ids"][1:-1] == SEP).sum())
    # Tiny Shakespeare's documents are short speeches: most blocks hold a document boundary.
    assert n_inner_seps > len(ds) // 2


def test_collator_pads_masks_and_is_seeded(corpus):
    _, tok, root = corpus
    ds = SentencePairDataset(TokenShard.open(root / "train"), 64, CLS, SEP, seed=0)
    coll = MLMCollator(pad_id=PAD, mask_id=MASK, vocab_size=tok.vocab_size, n_special=N_SPECIAL, whole_word=True)
    keys = [(i, 99) for i in range(16)]
    b1, b2 = coll([ds[k] for k in keys]), coll([ds[k] for k in keys])
    assert all(torch.equal(b1[k], b2[k]) if torch.is_tensor(b1[k]) else b1[k] == b2[k] for k in b1)  # same seed, same masks
    # the flat prediction indices and targets the step uses agree with the labels
    labels = b1["mlm_labels"]
    assert torch.equal(b1["mlm_index"], (labels.view(-1) != -100).nonzero().squeeze(1))
    assert torch.equal(b1["mlm_targets"], labels[labels != -100])
    assert b1["no_padding"] is False  # NSP pairs have different lengths: the mask is needed
    b3 = coll([ds[(i, 100)] for i in range(16)])
    assert not torch.equal(b1["mlm_labels"], b3["mlm_labels"])
    am = b1["attention_mask"]
    assert b1["input_ids"].shape[1] % 8 == 0
    assert (b1["input_ids"][~am] == PAD).all() and (b1["mlm_labels"][~am] == IGNORE_INDEX).all()
    assert ((b1["mlm_labels"] != IGNORE_INDEX).sum(1) >= 1).all()
    real = am.sum(1)
    assert torch.equal(real, torch.tensor([len(ds[k]["input_ids"]) for k in keys]))
    assert b1["nsp_labels"].shape == (16,)


def test_sampler_resume_and_ranks():
    full = StreamBatchSampler(50, 4, num_batches=40, seed=3)
    batches = list(full)
    # endless epochs: every 50 consecutive stream positions are a permutation of the data
    flat = [i for b in batches for i, _ in b]
    for e in range(3):
        assert sorted(flat[e * 50 : (e + 1) * 50]) == list(range(50))
    # resuming at batch 23 reproduces batches 23.. exactly (indices and masking seeds)
    resumed = StreamBatchSampler(50, 4, num_batches=40, seed=3)
    resumed._skip = 23
    assert list(resumed) == batches[23:]
    # DDP: two ranks split each global batch with no overlap
    r0 = list(StreamBatchSampler(50, 2, num_batches=10, seed=3, rank=0, world_size=2))
    r1 = list(StreamBatchSampler(50, 2, num_batches=10, seed=3, rank=1, world_size=2))
    for a, b, g in zip(r0, r1, batches):
        assert [i for i, _ in a] + [i for i, _ in b] == [i for i, _ in g]
    # eval: one ordered pass, last partial batch kept
    ev = list(StreamBatchSampler(10, 4, shuffle=False))
    assert [[i for i, _ in b] for b in ev] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def _padding(batches: list[list[tuple[int, int]]], lengths: np.ndarray) -> int:
    """Padding positions the batches need when each is padded to its longest row."""
    return sum(int(lengths[idx].max() * len(idx) - lengths[idx].sum()) for idx in ([i for i, _ in b] for b in batches))


def test_length_grouped_sampler_cuts_padding_keeps_shuffle_and_resume():
    lengths = np.random.default_rng(0).integers(3, 64, size=1000)  # (a real SST-2 spread is similar)
    kw = dict(num_batches=150, seed=7, lengths=lengths, group_batches=10)
    grouped = list(StreamBatchSampler(1000, 16, **kw))
    flat = [i for b in grouped for i, _ in b]
    for e in range(2):  # an epoch is 62 whole batches of distinct rows: 8 random rows sit each one out
        assert len(set(flat[e * 992:(e + 1) * 992])) == 992
    assert set(flat[:992]) != set(flat[992:1984]) and len(set(flat)) == 1000
    plain = list(StreamBatchSampler(1000, 16, num_batches=150, seed=7))
    assert _padding(grouped, lengths) < 0.2 * _padding(plain, lengths)  # about 0.12x here
    # shuffled: batch order within a length group is random, and each epoch and seed differ
    widths = [int(lengths[[i for i, _ in b]].max()) for b in grouped[:10]]
    assert widths != sorted(widths) and widths != sorted(widths, reverse=True)
    other = list(StreamBatchSampler(1000, 16, **{**kw, "seed": 8}))
    assert [i for i, _ in grouped[0]] != [i for i, _ in other[0]]
    assert flat[:992] != flat[992:1984]
    # resume at batch 70 (mid-epoch 2) reproduces the rest exactly; two ranks split each global batch
    resumed = StreamBatchSampler(1000, 16, **kw)
    resumed._skip = 70
    assert list(resumed) == grouped[70:]
    halves = [list(StreamBatchSampler(1000, 8, **kw, rank=r, world_size=2)) for r in (0, 1)]
    assert [[i for i, _ in a] + [i for i, _ in b] for a, b in zip(*halves)] == [[i for i, _ in g] for g in grouped]
    # an eval pass with lengths: every row once, longest first
    ev = [i for b in StreamBatchSampler(1000, 16, shuffle=False, lengths=lengths) for i, _ in b]
    assert sorted(ev) == list(range(1000)) and (np.diff(lengths[ev]) <= 0).all()
    with pytest.raises(ValueError, match="lengths has 3 entries for 1000 examples"):
        StreamBatchSampler(1000, 16, lengths=[1, 2, 3])
