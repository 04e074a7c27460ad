"""Entity-level evaluation of tag sequences (NER and other chunking tasks).

Pure Python: no torch, no framework. :class:`lit_tf.lit.metrics.EntityF1` wraps the counts
computed here in a DDP-exact torchmetrics ``Metric``.

Reading entities out of tags
----------------------------
A tag is ``"O"`` (outside), ``"<P>-<TYPE>"`` with a prefix ``P`` in ``B``/``I`` (and ``E``/``S``
for IOBES), or a bare ``"<TYPE>"`` without prefix, which is read as ``"I-<TYPE>"`` (files that
only mark the type, e.g. ``PER PER O LOC``). The type is everything after the first ``-``.

:func:`get_entities` follows seqeval's *default* (lenient, conlleval-compatible) mode
(``seqeval.metrics.sequence_labeling.get_entities``; Nakayama 2018, after the CoNLL ``conlleval``
script). Walking left to right, with the previous tag's prefix and type:

* an entity **ends** before the current tag when the previous tag was ``B``/``I`` and the current
  one is ``O`` or ``B`` (or ``S``), when the previous was ``E``/``S``, or when the type changes;
* an entity **starts** at ``B`` (or ``S``), at an ``I``/``E`` that follows ``O`` or ``E``/``S``
  (or starts the sentence), and at any non-``O`` tag whose type differs from the previous tag's;
* otherwise an ``I``/``E`` continues the open entity.

So ``B-PER I-PER`` is one PER; ``I-PER I-PER`` is also one PER (an ``I-`` without a preceding
``B-``/``I-`` of its type *starts* an entity, seqeval's lenient reading, not its ``mode="strict"``
which would drop it); ``B-PER B-PER`` is two; ``B-PER I-LOC`` is a PER then a LOC.

IOB1 (Ramshaw & Marcus 1995, "Text Chunking using Transformation-Based Learning") uses ``I-``
as the normal tag inside *and at the start of* an entity, and ``B-`` only on the first token of an
entity that directly follows another entity of the same type: ``I-PER I-PER B-PER`` is two PERs.
IOB2 (Tjong Kim Sang & Veenstra 1999) puts ``B-`` on every entity's first token. Under the lenient
rules above both schemes decode identically (a ``B-`` always starts an entity; an ``I-`` starts one
unless it continues the same type), which is why conlleval and seqeval's default mode take no
scheme argument. Here ``scheme`` selects which prefixes are legal: ``IOB1``/``IOB2`` accept
``B``/``I``/``O``; ``IOBES`` (a.k.a. BIOES/BILOU with ``E``/``S``) also accepts ``E``/``S``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "SCHEMES",
    "check_scheme",
    "EntityCounts",
    "detect_scheme",
    "entity_counts",
    "entity_prf",
    "get_entities",
    "prf",
]

SCHEMES = ("IOB1", "IOB2", "IOBES")
_PREFIXES = {"IOB1": frozenset("BI"), "IOB2": frozenset("BI"), "IOBES": frozenset("BIES")}

Entity = tuple[str, int, int]  # (type, start, end inclusive), token indices within a sentence


def _split_tag(tag: str, scheme: str) -> tuple[str, str]:
    """``"B-PER"`` -> ``("B", "PER")``; ``"O"`` -> ``("O", "")``; bare ``"PER"`` -> ``("I", "PER")``."""
    if tag == "O":
        return "O", ""
    prefix, sep, type_ = tag.partition("-")
    if not sep:  # no prefix at all: the whole tag is the type, read as inside
        return "I", tag
    if len(prefix) == 1 and prefix in _PREFIXES[scheme] and type_:
        return prefix, type_
    if len(prefix) == 1 and type_:
        raise ValueError(
            f"tag {tag!r}: prefix {prefix!r} is not valid in scheme {scheme} "
            f"(valid: {sorted(_PREFIXES[scheme])} and 'O')"
        )
    # "B-" (empty type) or a multi-letter head like "PER-X": refuse rather than guess.
    raise ValueError(f"tag {tag!r} is neither 'O', '<prefix>-<TYPE>' nor a bare type")


def check_scheme(scheme: str) -> None:
    """Raise ValueError unless ``scheme`` is one of :data:`SCHEMES`."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown tagging scheme {scheme!r}; valid: {list(SCHEMES)}")


def get_entities(tags: Sequence[str], scheme: str = "IOB2") -> list[Entity]:
    """Entities of one sentence as ``(type, start, end_inclusive)``, in order of their start.

    Lenient, seqeval-default semantics (see the module docstring for the exact rules).
    Raises ValueError on a tag whose prefix the scheme does not allow.

    >>> get_entities(["B-PER", "I-PER", "O", "I-LOC", "B-LOC"])
    [('PER', 0, 1), ('LOC', 3, 3), ('LOC', 4, 4)]
    """
    check_scheme(scheme)
    entities: list[Entity] = []
    prev_prefix, prev_type, start = "O", "", 0
    for i, tag in enumerate([*tags, "O"]):  # the sentinel "O" closes a trailing entity
        prefix, type_ = _split_tag(tag, scheme)
        ends = prev_prefix != "O" and (
            prev_prefix in "ES" or prefix in "OBS" or type_ != prev_type
        )
        if ends:
            entities.append((prev_type, start, i - 1))
        starts = prefix != "O" and (
            prefix in "BS" or prev_prefix in "OES" or type_ != prev_type
        )
        if starts:
            start = i
        prev_prefix, prev_type = prefix, type_
    return entities


def detect_scheme(tag_seqs: Iterable[Sequence[str]]) -> str:
    """Guess a corpus's scheme from its gold tag sequences.

    * any ``E-``/``S-`` prefix -> ``"IOBES"``;
    * else, if some entity *starts* with ``I-`` (at the sentence start, after ``O``, or after a
      different type) and no ``B-`` ever starts an entity except right after the same type
      -> ``"IOB1"`` (``B-`` only separates adjacent same-type entities);
    * else -> ``"IOB2"`` (also for mixed, ill-formed data; the lenient decoder of
      :func:`get_entities` reads IOB1 and IOB2 the same way, so a wrong guess between the two
      changes no span; it matters only when converting tags).
    """
    i_starts = b_after_other = 0
    for tags in tag_seqs:
        prev_prefix, prev_type = "O", ""
        for tag in tags:
            prefix, type_ = _split_tag(tag, "IOBES")
            if prefix in "ES":
                return "IOBES"
            same = prev_prefix != "O" and type_ == prev_type
            if prefix == "I" and not same:
                i_starts += 1
            elif prefix == "B" and not same:
                b_after_other += 1
            prev_prefix, prev_type = prefix, type_
    return "IOB1" if i_starts and not b_after_other else "IOB2"


# --------------------------------------------------------------------------------------------
# counts and precision / recall / F1
# --------------------------------------------------------------------------------------------
@dataclass
class EntityCounts:
    """Exact-match counts: ``tp`` entities right in span *and* type, ``n_pred``, ``n_true`` totals."""

    tp: int = 0
    n_pred: int = 0
    n_true: int = 0
    per_type: dict[str, list[int]] = field(default_factory=dict)  # type -> [tp, n_pred, n_true]


def entity_counts(
    true_seqs: Sequence[Sequence[str]], pred_seqs: Sequence[Sequence[str]], scheme: str = "IOB2"
) -> EntityCounts:
    """Count exact span+type matches sentence by sentence.

    Raises ValueError when the number of sentences, or a sentence's length, differs.
    """
    if len(true_seqs) != len(pred_seqs):
        raise ValueError(f"{len(true_seqs)} gold sentences but {len(pred_seqs)} predicted ones")
    counts = EntityCounts()
    for i, (true_tags, pred_tags) in enumerate(zip(true_seqs, pred_seqs)):
        if len(true_tags) != len(pred_tags):
            raise ValueError(
                f"sentence {i}: {len(true_tags)} gold tags but {len(pred_tags)} predicted tags"
            )
        gold = set(get_entities(true_tags, scheme))
        pred = set(get_entities(pred_tags, scheme))
        counts.tp += len(gold & pred)
        counts.n_pred += len(pred)
        counts.n_true += len(gold)
        for idx, ents in ((0, gold & pred), (1, pred), (2, gold)):
            for type_, _, _ in ents:
                counts.per_type.setdefault(type_, [0, 0, 0])[idx] += 1
    return counts


def prf(tp: float, n_pred: float, n_true: float) -> tuple[float, float, float]:
    """Precision, recall, F1; each is 0 when its denominator is 0 (seqeval's zero_division=0)."""
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_true if n_true else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def entity_prf(
    true_seqs: Sequence[Sequence[str]], pred_seqs: Sequence[Sequence[str]], scheme: str = "IOB2"
) -> dict:
    """Micro precision/recall/F1 over exact (span, type) matches, plus a per-type breakdown.

    Returns ``{"precision", "recall", "f1", "per_type": {type: {"precision", "recall", "f1",
    "support"}}}``; ``support`` is the number of gold entities of the type. Types that occur
    only in predictions appear with support 0. Same numbers as ``seqeval.metrics`` in default mode.
    """
    c = entity_counts(true_seqs, pred_seqs, scheme)
    p, r, f = prf(c.tp, c.n_pred, c.n_true)
    per_type = {}
    for type_ in sorted(c.per_type):
        tp, n_pred, n_true = c.per_type[type_]
        tp_, tr_, tf_ = prf(tp, n_pred, n_true)
        per_type[type_] = {"precision": tp_, "recall": tr_, "f1": tf_, "support": n_true}
    return {"precision": p, "recall": r, "f1": f, "per_type": per_type}
