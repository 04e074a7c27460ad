"""Cross-lingual pretraining pieces (XLM, Lample & Conneau 2019; XLM-R, Conneau et al. 2020).

* :func:`alpha_sampling_probs` / :class:`LanguageSampler`: which language each step trains on,
  with low-resource languages up-sampled by an exponent ``alpha``.
* :func:`build_tlm_example`: a translation-LM example from a parallel sentence pair.
* :class:`PiecewiseLinear`: XLM's ``"step:value,step:value"`` coefficient schedules (e.g. for
  loss weights or the gradient-reversal strength).
* :func:`retrieval_accuracy`: nearest-neighbour parallel-sentence retrieval, an alignment metric.
* :func:`language_adversarial_loss`: the language discriminator's loss, ``(loss_sum, n)``.

Pure numpy/torch; randomness only from explicit seeds.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lit_tf.objectives.losses import _sum_cross_entropy
from lit_tf.objectives.nsp import concat_pair

__all__ = [
    "LanguageSampler",
    "PiecewiseLinear",
    "alpha_sampling_probs",
    "build_tlm_example",
    "language_adversarial_loss",
    "retrieval_accuracy",
]


# ----------------------------------------------------------------------------- language sampling


def alpha_sampling_probs(counts: Mapping[str, int | float], alpha: float = 0.7) -> dict[str, float]:
    """Exponentially smoothed language sampling probabilities.

    ``p_i = n_i / sum_j n_j`` and ``q_i = p_i**alpha / sum_j p_j**alpha`` (XLM, sec. 3.1).
    ``alpha = 1`` samples in proportion to the data, smaller values up-sample low-resource
    languages, ``alpha -> 0`` tends to uniform. XLM used 0.5 and XLM-R 0.3; it is configurable.

    Args:
        counts: language -> amount of data (sentences, tokens, ...), each > 0.
        alpha: smoothing exponent, > 0.

    Returns:
        language -> probability, in the order of ``counts``, summing to 1.
    """
    if not counts:
        raise ValueError("alpha_sampling_probs needs at least one language count")
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    for lang, n in counts.items():
        if not (isinstance(n, (int, float)) and math.isfinite(n) and n > 0):
            raise ValueError(f"count for language {lang!r} must be a finite number > 0, got {n!r}")
    total = float(sum(counts.values()))
    # p**alpha computed in log space: exact enough and safe for tiny p with small alpha.
    logw = {lang: alpha * math.log(n / total) for lang, n in counts.items()}
    m = max(logw.values())
    w = {lang: math.exp(v - m) for lang, v in logw.items()}
    z = sum(w.values())
    return {lang: v / z for lang, v in w.items()}


class LanguageSampler:
    """Draws the language of each training step, deterministically per ``(seed, step)``.

    Every draw uses its own ``numpy.random.default_rng([seed, step])``, so the language of step
    ``s`` does not depend on earlier draws: a run resumed at step ``s`` sees the same sequence.
    Languages are ordered by name internally, so the mapping's order does not matter either.
    """

    def __init__(self, probs: Mapping[str, float], seed: int):
        if not probs:
            raise ValueError("LanguageSampler needs at least one language")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        for lang, p in probs.items():
            if not (isinstance(p, (int, float)) and math.isfinite(p) and p >= 0):
                raise ValueError(f"probability for language {lang!r} must be a finite number >= 0, got {p!r}")
        total = float(sum(probs.values()))
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"language probabilities must sum to 1, got {total} ({dict(probs)})")
        self.langs: list[str] = sorted(probs)
        self.probs: dict[str, float] = {lang: float(probs[lang]) / total for lang in self.langs}
        self.seed = seed
        cdf = np.cumsum([self.probs[lang] for lang in self.langs])
        cdf[-1] = 1.0  # guard against rounding leaving a gap at the top
        self._cdf = cdf

    def sample(self, step: int) -> str:
        """The language for training step ``step`` (>= 0)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        u = np.random.default_rng([self.seed, int(step)]).random()
        # First index whose cumulative probability exceeds u; zero-probability languages are skipped.
        return self.langs[int(np.searchsorted(self._cdf, u, side="right"))]


# ----------------------------------------------------------------------------- TLM examples


def _tlm_lengths(n_src: int, n_tgt: int, budget: int) -> tuple[int, int]:
    """Lengths after dropping tokens, one at a time, from the longer side (tgt on ties)
    until ``n_src + n_tgt <= budget``. Computed directly rather than in a loop."""
    excess = max(n_src + n_tgt - budget, 0)
    first = min(excess, abs(n_src - n_tgt))  # bring the longer side down towards the shorter
    if n_src > n_tgt:
        n_src -= first
    else:
        n_tgt -= first
    rest = excess - first  # sides are now equal: alternate, tgt first
    return n_src - rest // 2, n_tgt - (rest - rest // 2)


def build_tlm_example(
    src_ids: Sequence[int] | np.ndarray,
    tgt_ids: Sequence[int] | np.ndarray,
    src_lang: int,
    tgt_lang: int,
    *,
    cls_id: int,
    sep_id: int,
    max_len: int,
) -> dict[str, np.ndarray]:
    """Lay out a parallel pair for translation language modelling (TLM).

    Layout (XLM's, with our special tokens), for ``n = len(src)``, ``m = len(tgt)``::

        input_ids     [CLS] s_1 .. s_n [SEP]   t_1 .. t_m [SEP]
        position_ids    0    1  ..  n   n+1     0  .. m-1   m
        lang_ids      src_lang ...... src_lang tgt_lang .. tgt_lang

    The first segment ``[CLS] src [SEP]`` has positions ``0 .. n+1`` and language ``src_lang``;
    the second segment ``tgt [SEP]`` restarts at position 0 and has language ``tgt_lang``, so the
    model can only align the two sentences through attention, not through positions.

    If ``n + m + 3 > max_len``, tokens are dropped from the end of the longer sentence (the target
    on ties) until it fits; both sentences keep at least one token.

    Args:
        src_ids, tgt_ids: token ids of the two sentences (no special tokens), each non-empty.
        src_lang, tgt_lang: language ids.
        cls_id, sep_id: special token ids.
        max_len: maximum total length, >= 5.

    Returns:
        ``{"input_ids", "lang_ids", "position_ids"}``: int64 arrays of equal length ``<= max_len``.
    """
    src = np.asarray(src_ids, dtype=np.int64)
    tgt = np.asarray(tgt_ids, dtype=np.int64)
    if src.ndim != 1 or tgt.ndim != 1:
        raise ValueError(f"src_ids and tgt_ids must be 1-D, got shapes {src.shape} and {tgt.shape}")
    if src.size == 0 or tgt.size == 0:
        raise ValueError(f"TLM needs two non-empty sentences, got lengths {src.size} and {tgt.size}")
    if max_len < 5:
        raise ValueError(f"max_len must be >= 5 ([CLS], [SEP], [SEP] and one token per side), got {max_len}")

    n, m = _tlm_lengths(src.size, tgt.size, max_len - 3)
    pair = np.concatenate([src[:n], tgt[:m]])  # (n + m,)
    input_ids = concat_pair(pair, 0, n, n, n + m, cls_id, sep_id, dtype=np.int64)  # (n + m + 3,)
    position_ids = np.concatenate([np.arange(n + 2), np.arange(m + 1)]).astype(np.int64)
    lang_ids = np.concatenate([np.full(n + 2, src_lang), np.full(m + 1, tgt_lang)]).astype(np.int64)
    return {"input_ids": input_ids, "lang_ids": lang_ids, "position_ids": position_ids}


# ----------------------------------------------------------------------------- schedules


class PiecewiseLinear:
    """A coefficient that varies linearly between ``(step, value)`` points (XLM's lambda schedules).

    ``PiecewiseLinear.parse("0:1,1000:0.1,100000:0")`` is 1 at step 0, falls linearly to 0.1 at
    step 1000 and to 0 at step 100000, and stays 0 afterwards; before the first point it holds the
    first value. A bare number (``"1"``, ``0.5``) is a constant.
    """

    def __init__(self, points: Sequence[tuple[int, float]]):
        if not points:
            raise ValueError("PiecewiseLinear needs at least one (step, value) point")
        steps = [int(s) for s, _ in points]
        values = [float(v) for _, v in points]
        if any(s < 0 for s in steps):
            raise ValueError(f"PiecewiseLinear steps must be >= 0, got {steps}")
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError(f"PiecewiseLinear steps must be strictly increasing, got {steps}")
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"PiecewiseLinear values must be finite, got {values}")
        self.steps = steps
        self.values = values

    @classmethod
    def parse(cls, spec: str | float) -> PiecewiseLinear:
        """From ``"step:value,step:value,..."`` or a constant (``"1"``, ``0.5``)."""
        if isinstance(spec, (int, float)) and not isinstance(spec, bool):
            return cls([(0, float(spec))])
        if not isinstance(spec, str):
            raise TypeError(f"schedule must be a string or a number, got {spec!r}")
        text = spec.strip()
        if not text:
            raise ValueError("schedule string is empty")
        if ":" not in text and "," not in text:
            try:
                return cls([(0, float(text))])
            except ValueError:
                raise ValueError(f"schedule {spec!r}: constant {text!r} is not a number") from None
        points: list[tuple[int, float]] = []
        for i, part in enumerate(text.split(",")):
            fields = part.strip().split(":")
            if len(fields) != 2:
                raise ValueError(f"schedule {spec!r}: part {i} {part!r} is not 'step:value'")
            step_text, value_text = (f.strip() for f in fields)
            try:
                step = int(step_text)
            except ValueError:
                raise ValueError(
                    f"schedule {spec!r}: part {i} {part!r} has a non-integer step {step_text!r}"
                ) from None
            try:
                value = float(value_text)
            except ValueError:
                raise ValueError(
                    f"schedule {spec!r}: part {i} {part!r} has a non-numeric value {value_text!r}"
                ) from None
            points.append((step, value))
        try:
            return cls(points)
        except ValueError as e:
            raise ValueError(f"schedule {spec!r}: {e}") from None

    def __call__(self, step: int) -> float:
        steps, values = self.steps, self.values
        if step <= steps[0]:
            return values[0]
        for (s0, v0), (s1, v1) in itertools.pairwise(zip(steps, values)):
            if step <= s1:
                return v0 + (v1 - v0) * (step - s0) / (s1 - s0)
        return values[-1]

    def __repr__(self) -> str:
        return f"PiecewiseLinear({list(zip(self.steps, self.values))})"


# ----------------------------------------------------------------------------- metrics and losses


@torch.no_grad()
def retrieval_accuracy(src: Tensor, tgt: Tensor) -> tuple[float, float]:
    """Parallel-sentence retrieval by cosine nearest neighbour.

    Row ``i`` of ``src`` (N, C) and row ``i`` of ``tgt`` (N, C) are translations. Returns
    ``(src->tgt, tgt->src)`` accuracies: the share of ``src`` rows whose most similar ``tgt`` row
    is their own translation, and vice versa. Ties go to the lowest index.
    """
    if src.dim() != 2 or src.shape != tgt.shape or src.shape[0] == 0:
        raise ValueError(
            f"src and tgt must be non-empty (N, C) tensors of the same shape, got "
            f"{tuple(src.shape)} and {tuple(tgt.shape)}"
        )
    sim = F.normalize(src.float(), dim=-1) @ F.normalize(tgt.float(), dim=-1).T  # (N_src, N_tgt)
    target = torch.arange(src.shape[0], device=src.device)
    src_to_tgt = (sim.argmax(dim=1) == target).float().mean().item()
    tgt_to_src = (sim.argmax(dim=0) == target).float().mean().item()
    return src_to_tgt, tgt_to_src


def language_adversarial_loss(logits: Tensor, lang_labels: Tensor) -> tuple[Tensor, Tensor]:
    """Cross-entropy of a language discriminator as ``(loss_sum, n)`` (same conventions as
    ``losses.mlm_loss``: fp32 sum over labels != IGNORE_INDEX, and their count).

    Args:
        logits: ``(B, L)`` language scores, e.g. from ``LanguageDiscriminator``.
        lang_labels: ``(B,)`` language ids.
    """
    if logits.dim() != 2 or lang_labels.shape != logits.shape[:1]:
        raise ValueError(
            f"expected logits (B, L) and lang_labels (B,), got {tuple(logits.shape)} and {tuple(lang_labels.shape)}"
        )
    return _sum_cross_entropy(logits, lang_labels)
