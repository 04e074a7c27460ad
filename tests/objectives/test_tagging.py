"""Entity extraction and entity-level P/R/F1, checked by hand (and against seqeval when present)."""

from __future__ import annotations

import importlib.util
import random
import subprocess
import sys

import pytest
import torch

from lit_tf.objectives.tagging import detect_scheme, entity_counts, entity_prf, get_entities


# --------------------------------------------------------------------------------------------
# get_entities
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "tags, expected",
    [
        (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 1), ("LOC", 3, 3)]),
        (["O", "O"], []),
        ([], []),
        (["B-ORG", "I-ORG", "I-ORG"], [("ORG", 0, 2)]),  # entity running to the end
        (["B-PER", "B-PER"], [("PER", 0, 0), ("PER", 1, 1)]),  # B always starts a new entity
        (["B-PER", "I-LOC"], [("PER", 0, 0), ("LOC", 1, 1)]),  # a type change splits
        (["O", "I-PER", "I-PER"], [("PER", 1, 2)]),  # lenient: I after O starts an entity
        (["I-PER", "O"], [("PER", 0, 0)]),  # ... also at the sentence start
        (["B-PER", "O", "I-PER"], [("PER", 0, 0), ("PER", 2, 2)]),  # I after O does not rejoin
        (["PER", "PER", "O", "LOC"], [("PER", 0, 1), ("LOC", 3, 3)]),  # bare types read as I-
        (["B-MISC-X", "I-MISC-X"], [("MISC-X", 0, 1)]),  # type is everything after the first "-"
    ],
)
def test_get_entities_iob2(tags, expected):
    assert get_entities(tags, "IOB2") == expected


def test_iob1_adjacent_same_type_entities_are_separated_by_b():
    # Ramshaw & Marcus IOB1: I- starts entities; B- only where one PER directly follows another.
    tags = ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG"]
    assert get_entities(tags, "IOB1") == [("PER", 0, 1), ("PER", 2, 2), ("LOC", 4, 4), ("ORG", 5, 5)]


def test_iobes():
    tags = ["B-PER", "I-PER", "E-PER", "S-LOC", "S-LOC", "O", "E-ORG"]
    assert get_entities(tags, "IOBES") == [("PER", 0, 2), ("LOC", 3, 3), ("LOC", 4, 4), ("ORG", 6, 6)]


def test_bad_tags_are_errors():
    with pytest.raises(ValueError, match="'E'.*IOB2"):
        get_entities(["E-PER"], "IOB2")
    with pytest.raises(ValueError, match="'B-'"):
        get_entities(["B-"], "IOB2")
    with pytest.raises(ValueError, match="scheme"):
        get_entities(["O"], "BILOU")


def test_detect_scheme():
    assert detect_scheme([["B-PER", "I-PER", "O"], ["O", "B-LOC"]]) == "IOB2"
    assert detect_scheme([["I-PER", "I-PER", "B-PER"], ["O", "I-LOC"]]) == "IOB1"
    assert detect_scheme([["S-PER", "O"]]) == "IOBES"
    # mixed (I-start and a B after O): not IOB1
    assert detect_scheme([["O", "I-PER"], ["O", "B-LOC"]]) == "IOB2"


# --------------------------------------------------------------------------------------------
# P / R / F1
# --------------------------------------------------------------------------------------------
def test_split_entity_gives_no_true_positive_and_two_false_positives():
    true = [["B-ORG", "I-ORG", "I-ORG"]]
    pred = [["B-ORG", "B-ORG", "I-ORG"]]  # one gold entity predicted as two
    c = entity_counts(true, pred)
    assert (c.tp, c.n_pred, c.n_true) == (0, 2, 1)
    assert entity_prf(true, pred)["f1"] == 0.0


def test_wrong_type_is_not_a_match():
    c = entity_counts([["B-PER", "I-PER"]], [["B-ORG", "I-ORG"]])
    assert (c.tp, c.n_pred, c.n_true) == (0, 1, 1)
    assert c.per_type == {"PER": [0, 0, 1], "ORG": [0, 1, 0]}


def test_prf_arithmetic_hand_computed():
    true = [
        ["B-PER", "I-PER", "O", "B-LOC"],  # PER(0,1) LOC(3,3)
        ["B-ORG", "O", "B-PER", "O"],  # ORG(0,0) PER(2,2)
    ]
    pred = [
        ["B-PER", "I-PER", "O", "O"],  # PER(0,1) hit; LOC missed
        ["B-ORG", "O", "B-LOC", "B-LOC"],  # ORG hit; LOC(2,2), LOC(3,3) false
    ]
    # tp = 2, n_pred = 4, n_true = 4 -> P = R = F1 = 0.5
    out = entity_prf(true, pred)
    assert out["precision"] == pytest.approx(0.5)
    assert out["recall"] == pytest.approx(0.5)
    assert out["f1"] == pytest.approx(0.5)
    per = out["per_type"]
    assert per["PER"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert per["ORG"] == pytest.approx({"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1})
    assert per["LOC"] == pytest.approx({"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1})

    # unequal P and R: 3 gold, 2 predicted, 1 right -> P = 1/2, R = 1/3, F1 = 2/5
    out = entity_prf([["B-PER", "O", "B-LOC", "B-ORG"]], [["B-PER", "B-LOC", "O", "O"]])
    assert (out["precision"], out["recall"]) == pytest.approx((0.5, 1 / 3))
    assert out["f1"] == pytest.approx(0.4)


def test_lenient_iob2_continuation_counts():
    # gold uses proper IOB2; the prediction starts the entity with I- after O: still a match
    out = entity_prf([["O", "B-PER", "I-PER"]], [["O", "I-PER", "I-PER"]])
    assert out["f1"] == 1.0


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="sentence 0"):
        entity_prf([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="gold sentences"):
        entity_prf([["O"]], [])


# --------------------------------------------------------------------------------------------
# torchmetrics wrapper
# --------------------------------------------------------------------------------------------
TRUE = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-PER", "O"], ["O", "B-LOC", "I-LOC"]]
PRED = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "O", "B-LOC", "B-LOC"], ["O", "B-LOC", "I-LOC"]]


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_entity_f1_metric_accumulates_like_one_shot():
    from lit_tf.lit.metrics import EntityF1

    one = EntityF1(types=["PER", "LOC", "ORG"])
    one.update(PRED, TRUE)
    two = EntityF1(types=["PER", "LOC", "ORG"])
    two.update(PRED[:1], TRUE[:1])
    two.update(PRED[1:], TRUE[1:])
    a, b = one.compute(), two.compute()
    assert a.keys() == b.keys() >= {"f1", "precision", "recall", "f1/PER"}
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    ref = entity_prf(TRUE, PRED)  # tp 3, pred 5, gold 5
    assert a["f1"].item() == pytest.approx(ref["f1"]) == pytest.approx(0.6)
    assert a["precision"].item() == pytest.approx(ref["precision"])
    assert a["f1/PER"].item() == pytest.approx(ref["per_type"]["PER"]["f1"])
    assert a["f1/LOC"].item() == pytest.approx(ref["per_type"]["LOC"]["f1"])
    one.reset()
    assert one.compute()["f1"].item() == 0.0


def test_entity_f1_states_are_sum_reduced():
    from lit_tf.lit.metrics import EntityF1

    m = EntityF1()
    assert {m._reductions[k].__name__ for k in ("tp", "n_pred", "n_true")} == {"dim_zero_sum"}


def test_objectives_import_no_torchmetrics():
    code = "import sys, lit_tf.objectives.tagging; assert 'torchmetrics' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------
# seqeval parity (only where it is already installed)
# --------------------------------------------------------------------------------------------
def _random_tags(rng: random.Random, n: int) -> list[str]:
    pool = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG", "PER"]
    return [rng.choice(pool) for _ in range(n)]


def _reference_entities(tags: list[str]) -> list[tuple[str, int, int]]:
    """An independent, table-driven statement of seqeval's default rules (its start_of_chunk /
    end_of_chunk cases), to cross-check the compact boolean form in get_entities."""
    ends_after = {("B", "B"), ("B", "O"), ("I", "B"), ("I", "O")}  # (previous, current) prefixes
    starts_at = {("O", "I")}
    out, start = [], None
    prev_p, prev_t = "O", ""
    for i, tag in enumerate(tags + ["O"]):
        p, t = ("O", "") if tag == "O" else (("I", tag) if "-" not in tag else tag.split("-", 1))
        if prev_p != "O" and ((prev_p, p) in ends_after or prev_t != t):
            out.append((prev_t, start, i - 1))
        if p != "O" and (p == "B" or (prev_p, p) in starts_at or prev_t != t):
            start = i
        prev_p, prev_t = p, t
    return out


def test_get_entities_matches_reference_rules_on_random_tags():
    rng = random.Random(0)
    for _ in range(2000):
        tags = _random_tags(rng, rng.randint(0, 10))
        assert get_entities(tags) == _reference_entities(tags), tags


@pytest.mark.skipif(importlib.util.find_spec("seqeval") is None, reason="seqeval not installed")
def test_matches_seqeval_default_mode():
    from seqeval.metrics import f1_score, precision_score, recall_score
    from seqeval.metrics.sequence_labeling import get_entities as sq_get_entities

    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 6)
        true = [[t if "-" in t or t == "O" else "I-" + t for t in _random_tags(rng, rng.randint(1, 8))] for _ in range(n)]
        pred = [[t if "-" in t or t == "O" else "I-" + t for t in _random_tags(rng, len(s))] for s in true]
        for s in true:
            assert sorted(get_entities(s)) == sorted(sq_get_entities(s))
        ours = entity_prf(true, pred)
        assert ours["f1"] == pytest.approx(f1_score(true, pred))
        assert ours["precision"] == pytest.approx(precision_score(true, pred))
        assert ours["recall"] == pytest.approx(recall_score(true, pred))
