"""Tests for the cross-lingual objective pieces (TLM layout, language sampling, schedules, metrics)."""

import math
from collections import Counter

import numpy as np
import pytest
import torch

from lit_tf.models.xlm import grad_reverse
from lit_tf.objectives.crosslingual import (
    LanguageSampler,
    PiecewiseLinear,
    alpha_sampling_probs,
    build_tlm_example,
    language_adversarial_loss,
    retrieval_accuracy,
)
from lit_tf.objectives.losses import IGNORE_INDEX

CLS, SEP = 2, 3

# ----------------------------------------------------------------------------- TLM examples


def test_tlm_example_exact_layout():
    ex = build_tlm_example([10, 11, 12], [20, 21], src_lang=0, tgt_lang=1, cls_id=CLS, sep_id=SEP, max_len=16)
    np.testing.assert_array_equal(ex["input_ids"], [CLS, 10, 11, 12, SEP, 20, 21, SEP])
    np.testing.assert_array_equal(ex["lang_ids"], [0, 0, 0, 0, 0, 1, 1, 1])
    # first segment [CLS] src [SEP] = 0..4, then the target restarts at 0
    np.testing.assert_array_equal(ex["position_ids"], [0, 1, 2, 3, 4, 0, 1, 2])
    assert all(v.dtype == np.int64 for v in ex.values())


def test_tlm_truncation_trims_longer_side_and_fits():
    src = list(range(100, 110))  # 10 tokens
    tgt = [200, 201, 202]  # 3 tokens
    ex = build_tlm_example(src, tgt, 1, 0, cls_id=CLS, sep_id=SEP, max_len=11)  # budget 8 for words
    assert len(ex["input_ids"]) == 11
    # tgt untouched (the longer src absorbs the whole cut), src keeps its head
    np.testing.assert_array_equal(ex["input_ids"], [CLS, *src[:5], SEP, *tgt, SEP])
    np.testing.assert_array_equal(ex["position_ids"], [0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3])

    # the other way round: tgt is the longer side
    ex = build_tlm_example(tgt, src, 0, 1, cls_id=CLS, sep_id=SEP, max_len=11)
    np.testing.assert_array_equal(ex["input_ids"], [CLS, *tgt, SEP, *src[:5], SEP])

    # when both must be cut, they end up balanced (tgt gives first on ties)
    ex = build_tlm_example(src, src[:7], 0, 1, cls_id=CLS, sep_id=SEP, max_len=10)  # budget 7
    assert len(ex["input_ids"]) == 10
    n_src = int((ex["lang_ids"] == 0).sum()) - 2
    n_tgt = int((ex["lang_ids"] == 1).sum()) - 1
    assert (n_src, n_tgt) == (4, 3)


def test_tlm_invalid_inputs():
    with pytest.raises(ValueError, match="non-empty"):
        build_tlm_example([], [1], 0, 1, cls_id=CLS, sep_id=SEP, max_len=8)
    with pytest.raises(ValueError, match="max_len"):
        build_tlm_example([1], [1], 0, 1, cls_id=CLS, sep_id=SEP, max_len=4)


# ----------------------------------------------------------------------------- language sampling


def test_alpha_sampling_hand_computed():
    counts = {"en": 90, "es": 10}
    # p = (0.9, 0.1); alpha = 0.5 -> sqrt: (0.94868, 0.31623) / 1.26491
    q = alpha_sampling_probs(counts, alpha=0.5)
    assert q["en"] == pytest.approx(math.sqrt(0.9) / (math.sqrt(0.9) + math.sqrt(0.1)))
    assert q["es"] == pytest.approx(0.25)
    assert list(q) == ["en", "es"]
    assert alpha_sampling_probs(counts, alpha=1.0) == pytest.approx({"en": 0.9, "es": 0.1})
    flat = alpha_sampling_probs({"a": 1, "b": 1000, "c": 10**6}, alpha=1e-6)
    assert flat == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, abs=1e-4)


def test_alpha_sampling_errors_name_the_problem():
    with pytest.raises(ValueError, match="'es'"):
        alpha_sampling_probs({"en": 5, "es": 0})
    with pytest.raises(ValueError, match="alpha"):
        alpha_sampling_probs({"en": 5}, alpha=0.0)
    with pytest.raises(ValueError):
        alpha_sampling_probs({})


def test_language_sampler_frequencies_and_determinism():
    q = alpha_sampling_probs({"en": 1000, "es": 100, "fr": 10}, alpha=0.5)
    sampler = LanguageSampler(q, seed=7)
    n = 20_000
    draws = [sampler.sample(s) for s in range(n)]
    freq = Counter(draws)
    for lang, p in q.items():
        assert abs(freq[lang] / n - p) < 0.01, (lang, freq[lang] / n, p)
    # same (seed, step) -> same language, whatever was drawn before and whatever the dict order
    again = LanguageSampler(dict(reversed(list(q.items()))), seed=7)
    assert [again.sample(s) for s in (5000, 3, 19_999)] == [draws[5000], draws[3], draws[19_999]]
    other = LanguageSampler(q, seed=8)
    assert [other.sample(s) for s in range(200)] != draws[:200]


def test_language_sampler_rejects_bad_probs():
    with pytest.raises(ValueError, match="sum to 1"):
        LanguageSampler({"en": 0.5, "es": 0.2}, seed=0)
    with pytest.raises(ValueError, match="'es'"):
        LanguageSampler({"en": 1.5, "es": -0.5}, seed=0)


# ----------------------------------------------------------------------------- schedules


def test_piecewise_linear_values():
    sched = PiecewiseLinear.parse("0:1,1000:0.1,100000:0")
    assert sched(0) == 1.0
    assert sched(500) == pytest.approx(0.55)
    assert sched(1000) == pytest.approx(0.1)
    assert sched(50500) == pytest.approx(0.05)
    assert sched(100000) == 0.0
    assert sched(10**7) == 0.0
    later = PiecewiseLinear.parse("100:2,200:4")
    assert later(0) == 2.0 and later(150) == pytest.approx(3.0) and later(999) == 4.0


def test_piecewise_linear_constant_forms():
    for spec in ("1", " 0.25 ", 0.25, 3):
        s = PiecewiseLinear.parse(spec)
        assert s(0) == s(12345) == float(spec)


@pytest.mark.parametrize(
    "spec, match",
    [
        ("0:1,abc", "part 1 'abc'"),
        ("0:1,x:2", "non-integer step 'x'"),
        ("0:1,10:y", "non-numeric value 'y'"),
        ("0:1,10:0,10:1", "strictly increasing"),
        ("0:1,5:0,3:1", "strictly increasing"),
        ("hello", "not a number"),
        ("", "empty"),
        ("0:1,", "part 1"),
    ],
)
def test_piecewise_linear_malformed(spec, match):
    with pytest.raises(ValueError, match=match):
        PiecewiseLinear.parse(spec)


# ----------------------------------------------------------------------------- gradient reversal


def test_grad_reverse_flips_and_scales_gradient():
    torch.manual_seed(0)
    x = torch.randn(3, 4)
    w = torch.randn(4, 2)

    def grad_of(fn):
        xx = x.clone().requires_grad_(True)
        (fn(xx) @ w).pow(2).sum().backward()
        return xx.grad

    plain = grad_of(lambda t: t)
    reversed_ = grad_of(lambda t: grad_reverse(t, 0.3))
    torch.testing.assert_close(reversed_, -0.3 * plain)
    assert torch.equal(grad_reverse(x, 0.3), x)  # identity forward


# ----------------------------------------------------------------------------- retrieval and loss


def test_retrieval_accuracy_cases():
    e = torch.eye(4)
    assert retrieval_accuracy(e, e * 5.0) == (1.0, 1.0)  # scale-invariant (cosine)
    # rows 0 and 1 of tgt swapped: 2 of 4 correct in both directions
    swapped = e[[1, 0, 2, 3]]
    assert retrieval_accuracy(e, swapped) == (0.5, 0.5)
    # asymmetric: tgt rows 0 and 1 both point at src 0's direction.
    src = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    tgt = torch.tensor([[1.0, 0.0], [1.0, 0.1]])
    # src0 -> tgt0 (right), src1 -> tgt1 (right: tgt1 is the only one with a y-part) => 1.0
    # tgt0 -> src0 (right), tgt1 -> src0 (wrong) => 0.5
    assert retrieval_accuracy(src, tgt) == (1.0, 0.5)
    with pytest.raises(ValueError):
        retrieval_accuracy(src, tgt[:1])


def test_language_adversarial_loss_sum_and_count():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    labels = torch.tensor([0, 0, IGNORE_INDEX])
    loss_sum, n = language_adversarial_loss(logits, labels)
    expected = -torch.log_softmax(logits[0], -1)[0] - torch.log_softmax(logits[1], -1)[0]
    assert int(n) == 2
    torch.testing.assert_close(loss_sum, expected)
    with pytest.raises(ValueError):
        language_adversarial_loss(logits, labels[:2])
