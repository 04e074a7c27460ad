"""BERT sentence-pair (next-sentence-prediction) examples, built as token-offset indexes.

The corpus is one flat token stream. Sentences are contiguous token ranges given by
``sent_bounds`` (sentence ``s`` = ``tokens[sent_bounds[s]:sent_bounds[s + 1]]``) and
documents are contiguous sentence ranges given by ``doc_bounds`` (document ``d`` =
sentences ``doc_bounds[d]:doc_bounds[d + 1]``).

:func:`build_nsp_examples` walks the documents once (an offline index step) and
emits ``(a_start, a_end, b_start, b_end, is_random_next)`` rows of token offsets;
no tokens are copied. Because sentences are contiguous, a run of sentences is one
token range. :func:`truncate_pair` trims a pair to the length budget and
:func:`pair_to_ids` / :func:`concat_pair` materialise ``[CLS] A [SEP] B [SEP]``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

import numpy as np

__all__ = ["build_nsp_examples", "concat_pair", "pair_to_ids", "truncate_pair"]

#: Column indexes of the rows returned by :func:`build_nsp_examples`.
A_START, A_END, B_START, B_END, IS_RANDOM_NEXT = range(5)


class _Uniforms:
    """Buffered uniform [0, 1) draws from a numpy Generator.

    Drawing in blocks is far cheaper than one ``rng.random()`` call per decision,
    which keeps the Python walk over sentences fast. Deterministic for a given rng.
    """

    def __init__(self, rng: np.random.Generator, block: int = 8192) -> None:
        self._rng = rng
        self._block = block
        self._buf: list[float] = []
        self._pos = 0

    def random(self) -> float:
        if self._pos == len(self._buf):
            self._buf = self._rng.random(self._block).tolist()
            self._pos = 0
        u = self._buf[self._pos]
        self._pos += 1
        return u

    def integers(self, low: int, high: int) -> int:
        """Uniform integer in ``[low, high)`` (requires ``high > low``)."""
        return min(low + int(self.random() * (high - low)), high - 1)


def build_nsp_examples(
    sent_bounds: np.ndarray,
    doc_bounds: np.ndarray,
    max_tokens: int,
    rng: np.random.Generator,
    short_seq_prob: float = 0.1,
    random_next_prob: float = 0.5,
    balance_labels: bool = True,
) -> np.ndarray:
    """Build BERT NSP sentence pairs, following ``create_pretraining_data`` in spirit.

    For each document, sentences are accumulated into a chunk until the chunk
    reaches a target length (``max_tokens``, or with probability ``short_seq_prob`` a
    random target in ``[2, max_tokens]``, drawn per chunk) or the document ends. The
    chunk is split at a random sentence boundary into A (>= 1 sentence) and B:

    * with probability ``random_next_prob``, or always when the chunk has a single
      sentence, B is a random contiguous run of sentences from a *different* random
      document, long enough to fill the remaining target (or until that document
      ends); the chunk's unused sentences are put back and the walk resumes there.
      Label 1.
    * otherwise B is the rest of the chunk (the true continuation). Label 0.

    In BERT the forced random-next of single-sentence chunks (a document's last
    leftover sentence, or one sentence longer than the target) pushes the share of
    label 1 above ``random_next_prob`` (by several points on short documents). With
    ``balance_labels`` (default) that excess is paid back by lowering the
    random-next probability of later free choices by at most half of
    ``random_next_prob`` each, so the expected share of label 1 is exactly
    ``random_next_prob`` (whenever enough free choices follow). Set it to ``False``
    for BERT's exact behaviour.

    Empty sentences contribute no tokens and are skipped; documents without any
    tokens produce no examples and are never used as random-next sources.

    Args:
        sent_bounds: ``(S + 1,)`` non-decreasing token offsets.
        doc_bounds: ``(D + 1,)`` non-decreasing sentence indexes in ``[0, S]``.
        max_tokens: token budget for A + B, i.e. ``max_seq_len - 3`` (CLS, SEP, SEP).
        rng: the only source of randomness.
        short_seq_prob: probability of a shorter random target length.
        random_next_prob: probability that B is a random next sentence.
        balance_labels: compensate forced random-next pairs (see above).

    Returns:
        ``(N, 5)`` int64 rows ``(a_start, a_end, b_start, b_end, is_random_next)`` of
        half-open token offsets. Spans may exceed ``max_tokens``; trim them with
        :func:`truncate_pair`.

    Raises:
        ValueError: on malformed bounds or arguments, or when fewer than two
            documents have tokens (random-next pairs need a second document).
    """
    sent_bounds = np.asarray(sent_bounds, dtype=np.int64)
    doc_bounds = np.asarray(doc_bounds, dtype=np.int64)
    if sent_bounds.ndim != 1 or sent_bounds.size < 1:
        raise ValueError("sent_bounds must be a 1-D array of S + 1 token offsets")
    if doc_bounds.ndim != 1 or doc_bounds.size < 1:
        raise ValueError("doc_bounds must be a 1-D array of D + 1 sentence indexes")
    n_sent = sent_bounds.size - 1
    if np.any(np.diff(sent_bounds) < 0):
        raise ValueError("sent_bounds must be non-decreasing")
    if np.any(np.diff(doc_bounds) < 0) or doc_bounds[0] < 0 or doc_bounds[-1] > n_sent:
        raise ValueError(f"doc_bounds must be non-decreasing sentence indexes in [0, {n_sent}]")
    if max_tokens < 2:
        raise ValueError(f"max_tokens must be >= 2 (one token for A and one for B); got {max_tokens}")
    if not 0.0 <= short_seq_prob <= 1.0:
        raise ValueError(f"short_seq_prob must be in [0, 1]; got {short_seq_prob}")
    if not 0.0 <= random_next_prob <= 1.0:
        raise ValueError(f"random_next_prob must be in [0, 1]; got {random_next_prob}")

    # Compact to non-empty sentences. Empty sentences have zero length, so runs of
    # non-empty sentences remain contiguous token ranges.
    lengths = np.diff(sent_bounds)
    keep = lengths > 0
    starts: list[int] = sent_bounds[:-1][keep].tolist()
    ends: list[int] = sent_bounds[1:][keep].tolist()
    compact_index = np.concatenate([[0], np.cumsum(keep)])  # sentence index -> compact index
    cdoc = compact_index[doc_bounds]
    doc_lo = cdoc[:-1]
    doc_hi = cdoc[1:]
    nonempty_docs: list[int] = np.flatnonzero(doc_hi > doc_lo).tolist()
    if len(nonempty_docs) < 2:
        raise ValueError(
            f"NSP needs at least 2 non-empty documents to draw random-next sentences; "
            f"got {len(nonempty_docs)}"
        )
    doc_lo_l: list[int] = doc_lo.tolist()
    doc_hi_l: list[int] = doc_hi.tolist()
    n_nonempty = len(nonempty_docs)

    u = _Uniforms(rng)
    # Expected excess of label 1 caused by forced random-next pairs, still to repay.
    excess = 0.0
    max_repay = random_next_prob / 2 if balance_labels else 0.0
    rows: list[tuple[int, int, int, int, int]] = []

    def run_end(first: int, hi: int, target: int) -> int:
        """Last sentence j in [first, hi) such that sentences first..j reach ``target``
        tokens (or hi - 1 if the document ends first)."""
        j = bisect_left(ends, starts[first] + target, first, hi)
        return min(j, hi - 1)

    for k, d in enumerate(nonempty_docs):
        i, hi = doc_lo_l[d], doc_hi_l[d]
        while i < hi:
            target = max_tokens
            if u.random() < short_seq_prob:
                target = u.integers(2, max_tokens + 1)
            last = run_end(i, hi, target)
            n_chunk = last - i + 1
            n_a = 1 if n_chunk == 1 else u.integers(1, n_chunk)  # A = sentences i .. i+n_a-1
            a_start, a_end = starts[i], ends[i + n_a - 1]

            if n_chunk == 1:
                random_next = True
                excess += 1.0 - random_next_prob
            else:
                repay = min(excess, max_repay)
                excess -= repay
                random_next = u.random() < random_next_prob - repay

            if random_next:
                # Random next: a run of sentences from another non-empty document.
                r = u.integers(0, n_nonempty - 1)
                rd = nonempty_docs[r + 1 if r >= k else r]
                r_lo, r_hi = doc_lo_l[rd], doc_hi_l[rd]
                b_first = u.integers(r_lo, r_hi)
                b_last = run_end(b_first, r_hi, max(target - (a_end - a_start), 1))
                rows.append((a_start, a_end, starts[b_first], ends[b_last], 1))
                i += n_a  # put the unused sentences back
            else:
                rows.append((a_start, a_end, starts[i + n_a], ends[last], 0))
                i = last + 1

    if not rows:
        return np.zeros((0, 5), dtype=np.int64)
    return np.asarray(rows, dtype=np.int64)


def truncate_pair(
    a_start: int | np.ndarray,
    a_end: int | np.ndarray,
    b_start: int | np.ndarray,
    b_end: int | np.ndarray,
    max_tokens: int,
    rng: np.random.Generator,
) -> tuple:
    """Trim a pair (or arrays of pairs) so ``len(A) + len(B) <= max_tokens``.

    Equivalent to BERT's ``truncate_seq_pair`` (repeatedly drop one token from the
    longer side, B on ties, from the front or back with probability 1/2) but O(1)
    per pair: the number of tokens dropped from each side is computed directly and
    the front/back split is drawn as ``Binomial(k, 1/2)``.

    Works element-wise on scalars or equal-shape integer arrays. Both sides keep at
    least one token when ``max_tokens >= 2`` and both are non-empty. Results stay
    inside the original ranges.

    Returns:
        ``(a_start, a_end, b_start, b_end)`` — Python ints for scalar inputs, int64
        arrays otherwise.
    """
    if max_tokens < 2:
        raise ValueError(f"max_tokens must be >= 2; got {max_tokens}")
    scalar = all(np.ndim(x) == 0 for x in (a_start, a_end, b_start, b_end))
    a0, a1, b0, b1 = (np.asarray(x, dtype=np.int64) for x in (a_start, a_end, b_start, b_end))
    la, lb = a1 - a0, b1 - b0
    excess = np.maximum(la + lb - max_tokens, 0)

    # Phase 1: trim the longer side down towards the shorter one.
    diff = np.abs(la - lb)
    first = np.minimum(excess, diff)
    cut_a = np.where(la > lb, first, 0)
    cut_b = np.where(la > lb, 0, first)
    # Phase 2: sides are equal; alternate, starting with B (ties go to B).
    rest = excess - first
    cut_a = cut_a + rest // 2
    cut_b = cut_b + rest - rest // 2

    front_a = rng.binomial(cut_a, 0.5)
    front_b = rng.binomial(cut_b, 0.5)
    out = (a0 + front_a, a1 - (cut_a - front_a), b0 + front_b, b1 - (cut_b - front_b))
    if scalar:
        return tuple(int(x) for x in out)
    return tuple(np.asarray(x, dtype=np.int64) for x in out)


def concat_pair(
    arr: np.ndarray,
    a_start: int,
    a_end: int,
    b_start: int,
    b_end: int,
    cls_val: int | bool,
    sep_val: int | bool,
    dtype: np.dtype | type | None = None,
) -> np.ndarray:
    """Lay out ``[cls_val] arr[A] [sep_val] arr[B] [sep_val]`` as one new array.

    Works for any per-token array of the flat corpus (token ids, word-start flags,
    ...); ``arr`` may be a memmap — only the two slices are read.
    """
    la, lb = int(a_end) - int(a_start), int(b_end) - int(b_start)
    out = np.empty(la + lb + 3, dtype=dtype if dtype is not None else arr.dtype)
    out[0] = cls_val
    out[1 : 1 + la] = arr[int(a_start) : int(a_end)]
    out[1 + la] = sep_val
    out[2 + la : 2 + la + lb] = arr[int(b_start) : int(b_end)]
    out[-1] = sep_val
    return out


def pair_to_ids(
    tokens: np.ndarray,
    ex_row: Sequence[int] | np.ndarray,
    cls_id: int,
    sep_id: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Materialise one example as ``[CLS] A [SEP] B [SEP]``.

    Args:
        tokens: flat token stream (memmap ok).
        ex_row: ``(a_start, a_end, b_start, b_end, ...)``; extra columns (the label)
            are ignored.
        cls_id, sep_id: special token ids.

    Returns:
        ``(input_ids, token_type_ids)``, both int64 of length ``len(A) + len(B) + 3``;
        segment 0 covers CLS, A and the first SEP, segment 1 covers B and the final SEP.
    """
    a_start, a_end, b_start, b_end = (int(x) for x in ex_row[:4])
    input_ids = concat_pair(tokens, a_start, a_end, b_start, b_end, cls_id, sep_id, dtype=np.int64)
    n_first = a_end - a_start + 2
    token_type_ids = np.zeros(input_ids.shape[0], dtype=np.int64)
    token_type_ids[n_first:] = 1
    return input_ids, token_type_ids
