"""Behavioural tests for NSP sentence-pair example building."""

from __future__ import annotations

import numpy as np
import pytest

from lit_tf.objectives import build_nsp_examples, concat_pair, pair_to_ids, truncate_pair

MAX_TOKENS = 125  # max_seq_len 128 - CLS - 2 * SEP


def _corpus(n_docs: int = 200, seed: int = 0, empty_every: int = 0):
    """Synthetic corpus: docs of 3-40 sentences, sentences of 1-40 tokens.

    With ``empty_every`` > 0 every that-many-th sentence is empty (zero tokens).
    """
    rng = np.random.default_rng(seed)
    n_sents = rng.integers(3, 41, n_docs)
    S = int(n_sents.sum())
    lengths = rng.integers(1, 41, S)
    if empty_every:
        lengths[::empty_every] = 0
    sent_bounds = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    doc_bounds = np.concatenate([[0], np.cumsum(n_sents)]).astype(np.int64)
    return sent_bounds, doc_bounds


def _doc_of_token(sent_bounds, doc_bounds, offsets):
    """Document index containing token offset(s)."""
    sent = np.searchsorted(sent_bounds, offsets, side="right") - 1
    return np.searchsorted(doc_bounds, sent, side="right") - 1


def _check_examples(ex, sent_bounds, doc_bounds):
    a0, a1, b0, b1, lab = ex.T
    assert set(np.unique(lab)) <= {0, 1}
    assert (a1 > a0).all() and (b1 > b0).all(), "A and B must be non-empty"
    # Spans start and end on sentence boundaries.
    for col in (a0, a1, b0, b1):
        assert np.isin(col, sent_bounds).all()
    doc_a = _doc_of_token(sent_bounds, doc_bounds, a0)
    assert (doc_a == _doc_of_token(sent_bounds, doc_bounds, a1 - 1)).all(), "A spans documents"
    doc_b = _doc_of_token(sent_bounds, doc_bounds, b0)
    assert (doc_b == _doc_of_token(sent_bounds, doc_bounds, b1 - 1)).all(), "B spans documents"
    actual = lab == 0
    assert (b0[actual] == a1[actual]).all(), "actual next must continue A"
    assert (doc_b[actual] == doc_a[actual]).all()
    assert (doc_b[~actual] != doc_a[~actual]).all(), "random next must come from another document"
    return doc_a


def test_examples_are_well_formed_and_balanced():
    sent_bounds, doc_bounds = _corpus()
    ex = build_nsp_examples(sent_bounds, doc_bounds, MAX_TOKENS, np.random.default_rng(1))
    assert ex.dtype == np.int64 and ex.shape[1] == 5 and len(ex) > 500
    doc_a = _check_examples(ex, sent_bounds, doc_bounds)
    assert abs(ex[:, 4].mean() - 0.5) < 0.03, ex[:, 4].mean()
    # Every document contributes, and A-spans never overlap within the walk.
    assert len(np.unique(doc_a)) == len(doc_bounds) - 1
    a_sorted = ex[np.argsort(ex[:, 0]), :2]
    assert (a_sorted[1:, 0] >= a_sorted[:-1, 1]).all()


def test_balance_labels_compensates_forced_random_next():
    # Short documents: many single-sentence leftover chunks forced to random-next.
    rng = np.random.default_rng(5)
    n_sents = rng.integers(2, 6, 400)
    lengths = rng.integers(5, 60, int(n_sents.sum()))
    sent_bounds = np.concatenate([[0], np.cumsum(lengths)])
    doc_bounds = np.concatenate([[0], np.cumsum(n_sents)])
    bert = build_nsp_examples(sent_bounds, doc_bounds, 60, np.random.default_rng(0), balance_labels=False)
    bal = build_nsp_examples(sent_bounds, doc_bounds, 60, np.random.default_rng(0))
    _check_examples(bal, sent_bounds, doc_bounds)
    assert bert[:, 4].mean() > 0.6
    assert abs(bal[:, 4].mean() - 0.5) < 0.03


def test_short_seq_prob_makes_shorter_pairs():
    sent_bounds, doc_bounds = _corpus(seed=2)
    long_ = build_nsp_examples(
        sent_bounds, doc_bounds, MAX_TOKENS, np.random.default_rng(0), short_seq_prob=0.0
    )
    short = build_nsp_examples(
        sent_bounds, doc_bounds, MAX_TOKENS, np.random.default_rng(0), short_seq_prob=1.0
    )
    assert len(short) > 1.5 * len(long_)
    la = (long_[:, 1] - long_[:, 0]) + (long_[:, 3] - long_[:, 2])
    ls = (short[:, 1] - short[:, 0]) + (short[:, 3] - short[:, 2])
    assert ls.mean() < 0.8 * la.mean()


def test_empty_sentences_are_skipped():
    sent_bounds, doc_bounds = _corpus(n_docs=100, seed=3, empty_every=3)
    ex = build_nsp_examples(sent_bounds, doc_bounds, MAX_TOKENS, np.random.default_rng(0))
    assert len(ex) > 100
    _check_examples(ex, sent_bounds, doc_bounds)


def test_empty_documents_are_never_sources():
    # doc 1 has only empty sentences, doc 2 has no sentences at all.
    sent_bounds = np.array([0, 5, 9, 9, 9, 14, 20], dtype=np.int64)
    doc_bounds = np.array([0, 2, 4, 4, 6], dtype=np.int64)
    for seed in range(20):
        ex = build_nsp_examples(sent_bounds, doc_bounds, 8, np.random.default_rng(seed))
        _check_examples(ex, sent_bounds, doc_bounds)
        docs = _doc_of_token(sent_bounds, doc_bounds, ex[:, [0, 2]].ravel())
        assert set(docs.tolist()) <= {0, 3}


def test_single_document_raises():
    sent_bounds = np.array([0, 5, 9, 20], dtype=np.int64)
    with pytest.raises(ValueError, match="2 non-empty documents"):
        build_nsp_examples(sent_bounds, np.array([0, 3]), MAX_TOKENS, np.random.default_rng(0))
    # A second document with only empty sentences does not count.
    sent_bounds = np.array([0, 5, 9, 20, 20], dtype=np.int64)
    with pytest.raises(ValueError):
        build_nsp_examples(sent_bounds, np.array([0, 3, 4]), MAX_TOKENS, np.random.default_rng(0))


def test_deterministic_for_fixed_seed():
    sent_bounds, doc_bounds = _corpus(n_docs=50)
    e1 = build_nsp_examples(sent_bounds, doc_bounds, MAX_TOKENS, np.random.default_rng(42))
    e2 = build_nsp_examples(sent_bounds, doc_bounds, MAX_TOKENS, np.random.default_rng(42))
    e3 = build_nsp_examples(sent_bounds, doc_bounds, MAX_TOKENS, np.random.default_rng(43))
    assert np.array_equal(e1, e2)
    assert e1.shape != e3.shape or not np.array_equal(e1, e3)


def test_truncate_pair_fits_and_stays_inside():
    sent_bounds, doc_bounds = _corpus()
    rng = np.random.default_rng(0)
    ex = build_nsp_examples(sent_bounds, doc_bounds, MAX_TOKENS, rng)
    a0, a1, b0, b1 = truncate_pair(ex[:, 0], ex[:, 1], ex[:, 2], ex[:, 3], MAX_TOKENS, rng)
    total = (a1 - a0) + (b1 - b0)
    orig_total = (ex[:, 1] - ex[:, 0]) + (ex[:, 3] - ex[:, 2])
    assert (orig_total > MAX_TOKENS).any(), "test corpus should need truncation"
    assert (total <= MAX_TOKENS).all()
    assert (total == np.minimum(orig_total, MAX_TOKENS)).all(), "must trim only what is needed"
    assert (a0 >= ex[:, 0]).all() and (a1 <= ex[:, 1]).all() and (a1 > a0).all()
    assert (b0 >= ex[:, 2]).all() and (b1 <= ex[:, 3]).all() and (b1 > b0).all()
    # Untouched when it already fits.
    fits = orig_total <= MAX_TOKENS
    assert np.array_equal(np.stack([a0, a1, b0, b1], 1)[fits], ex[fits, :4])


def test_truncate_pair_matches_bert_lengths_and_randomises_sides():
    # BERT trims the longer side first, B on ties.
    rng = np.random.default_rng(0)
    a0, a1, b0, b1 = truncate_pair(0, 100, 200, 210, 50, rng)  # only A is trimmed
    assert (a1 - a0, b0, b1) == (40, 200, 210)
    a0, a1, b0, b1 = truncate_pair(0, 30, 100, 130, 41, rng)  # excess 19 from equal sides
    assert (a1 - a0, b1 - b0) == (21, 20)
    assert all(isinstance(x, int) for x in (a0, a1, b0, b1))
    # Front/back split is random: over many pairs both ends get trimmed.
    n = 2000
    a0, a1, _, _ = truncate_pair(np.zeros(n, int), np.full(n, 100), np.full(n, 200), np.full(n, 201), 51, rng)
    assert (a1 - a0 == 50).all()
    assert 20 < a0.mean() < 30 and (a0 > 0).any() and (a1 < 100).any()


# --------------------------------------------------------------------------- materialisation


def test_pair_to_ids_layout():
    tokens = np.arange(100, 120, dtype=np.uint16)  # e.g. a memmapped uint16 corpus
    row = np.array([2, 5, 5, 7, 0])
    ids, tt = pair_to_ids(tokens, row, cls_id=1, sep_id=2)
    assert ids.dtype == np.int64 and tt.dtype == np.int64
    assert ids.tolist() == [1, 102, 103, 104, 2, 105, 106, 2]
    assert tt.tolist() == [0, 0, 0, 0, 0, 1, 1, 1]


def test_concat_pair_for_flags():
    flags = np.array([1, 0, 1, 1, 0, 0], dtype=bool)
    out = concat_pair(flags, 0, 2, 3, 5, cls_val=False, sep_val=False)
    assert out.dtype == bool
    assert out.tolist() == [False, True, False, False, True, False, False]
