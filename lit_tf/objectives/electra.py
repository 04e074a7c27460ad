"""ELECTRA's replaced-token detection (Clark et al., 2020, §3) as one objective call.

1. The generator (a small MLM) predicts the masked tokens of the collator's masked batch: the
   ``gen_mlm`` term (cross-entropy at the masked positions).
2. A replacement is *sampled* at each masked position from softmax(generator logits / temperature),
   with no gradient through the sample (the paper samples; it does not take the arg-max, and
   does not back-propagate the discriminator's loss through the generator).
3. The corrupted input is the original text with every masked position replaced by its sample; a
   token is "replaced" when its sample differs from the original (a sample equal to the original
   counts as original, as in the paper).
4. The discriminator labels every real token: the ``rtd`` term (binary cross-entropy summed over
   the non-padding tokens).
5. loss = gen_weight * mean(gen_mlm) + rtd_weight * mean(rtd), λ = rtd_weight = 50 in the paper.

Sampling draws from torch's global generator (seeded by Lightning; checkpoints store its state, so
a resumed run draws the same replacements).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_tf.objectives.losses import mlm_loss, weighted_sum
from lit_tf.objectives.pretraining import (
    Count,
    ObjectiveOutput,
    _accuracy,
    attention_mask,
    mlm_positions,
    mlm_targets,
)


@torch.no_grad()
def sample_replacements(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """One token per row of logits (N, V), drawn from softmax(logits / temperature) -> (N,) long.
    No gradient: the sample is data for the discriminator."""
    if logits.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=logits.device)
    # Inverse CDF: one uniform per row and a binary search. torch.multinomial draws V exponentials
    # per row, which made sampling a third of an ELECTRA step on CPU (86 ms against 3.7 ms at
    # N = 614, V = 8,000; benchmarks/RESULTS.md). right=True skips zero-probability tokens.
    cdf = torch.softmax(logits.float() / temperature, dim=-1).cumsum_(-1)  # (N, V)
    u = torch.rand(cdf.shape[0], 1, device=cdf.device) * cdf[:, -1:]  # (N, 1), scaled to the row's total
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_(max=cdf.shape[1] - 1)  # (N,)


def replace_tokens(input_ids: Tensor, positions: Tensor, samples: Tensor, originals: Tensor) -> tuple[Tensor, Tensor]:
    """The discriminator's input and labels.

    input_ids (B, T): the batch (its masked positions are overwritten, the rest must hold the
    original text); positions: (B, T) bool or the flat indices of its True entries (N,); samples,
    originals: (N,) the sampled and the original token at each position, in row-major order.
    Returns (corrupted (B, T), replaced (B, T) bool): True where the sample differs from the original."""
    B, T = input_ids.shape
    flat_pos = positions.reshape(-1) if positions.dtype == torch.bool else positions  # (B*T,) bool or (N,)
    corrupted = input_ids.clone()
    corrupted.view(-1)[flat_pos] = samples  # (B, T)
    replaced = torch.zeros(B, T, dtype=torch.bool, device=input_ids.device)
    replaced.view(-1)[flat_pos] = samples != originals  # (B, T)
    return corrupted, replaced


def rtd_loss(logits: Tensor, replaced: Tensor, real: Tensor) -> tuple[Count, Count]:
    """Replaced-token detection over the real tokens: ((BCE sum, n), (correct, n)).

    logits (B, T) discriminator logits; replaced (B, T) bool labels; real (B, T) bool, False at padding.
    Accuracy: (logit > 0) == label; cheap, so always counted."""
    logits = logits.float()
    per_token = F.binary_cross_entropy_with_logits(logits, replaced.to(logits.dtype), reduction="none")  # (B, T)
    n = real.sum()
    loss = torch.where(real, per_token, torch.zeros_like(per_token)).sum()
    with torch.no_grad():
        correct = (((logits > 0) == replaced) & real).sum()
    return (loss, n), (correct, n)


@dataclass
class ReplacedTokenDetectionObjective:
    """ELECTRA pre-training on ``ElectraForPreTraining``: generator MLM + replaced-token detection.

    Expects batches from `lit_tf.data.pretraining.MLMCollator` (``input_ids`` already masked,
    ``attention_mask``, ``token_type_ids``, ``mlm_labels``, maybe ``mlm_index`` / ``mlm_targets`` /
    ``no_padding``). In eval mode the output carries ``predictions["rtd"]`` = (probability of
    "replaced" (M,), label (M,)) over the M real tokens, for ``lit_tf.lit.metrics.ReplacedTokenMetrics``.

    Args:
        rtd_weight: λ, the discriminator loss's weight (50 in the paper).
        gen_weight: the generator MLM loss's weight.
        fused_loss: score the generator's targets with its head fused into the cross-entropy (no
            (N, V) logits kept for backward), and draw the samples from logits computed again
            without gradient; False: one set of logits with gradient serves both (one matmul fewer,
            the (N, V) softmax kept for backward). Same loss within fp32 rounding.
        temperature: sampling temperature of the generator's softmax (1 in the paper).
    """

    rtd_weight: float = 50.0
    gen_weight: float = 1.0
    fused_loss: bool = True
    temperature: float = 1.0

    terms: ClassVar[tuple[str, ...]] = ("gen_mlm", "rtd")
    val_terms: ClassVar[tuple[str, ...]] = terms

    def __post_init__(self) -> None:
        for name in ("rtd_weight", "gen_weight"):
            w = getattr(self, name)
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise ValueError(f"objective.{name} must be a finite number >= 0, got {w!r}")
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise ValueError(f"objective.temperature must be a finite number > 0, got {t!r}")
        self.rtd_weight, self.gen_weight, self.temperature = float(self.rtd_weight), float(self.gen_weight), float(t)

    @property
    def weights(self) -> dict[str, float]:
        return {"gen_mlm": self.gen_weight, "rtd": self.rtd_weight}

    def __call__(self, model: nn.Module, batch: Mapping[str, Tensor], step: int = 0) -> ObjectiveOutput:
        input_ids = batch["input_ids"]  # (B, T), masked by the collator
        positions, originals = mlm_positions(batch), mlm_targets(batch)  # (N,) or (B, T); (N,)
        inputs = {"token_type_ids": batch.get("token_type_ids"), "attention_mask": attention_mask(batch)}

        # 1-2. the generator's MLM term and its samples
        if self.fused_loss:
            gen = model.generate(input_ids, mlm_positions=positions, mlm_targets=originals, **inputs)
            gen_term, gen_hits = gen.mlm_nll, gen.mlm_hits
            with torch.no_grad():
                logits = model.generator_logits(gen.hidden, positions)  # (N, V)
        else:
            gen = model.generate(input_ids, mlm_positions=positions, **inputs)
            logits = gen.mlm_logits  # (N, V)
            gen_term, gen_hits = mlm_loss(logits, originals), _accuracy(model, logits, originals)
        samples = sample_replacements(logits.detach(), self.temperature)  # (N,)

        # 3-4. the discriminator on the corrupted text
        corrupted, replaced = replace_tokens(input_ids, positions, samples, originals)  # (B, T) each
        rtd_logits = model(corrupted, **inputs).rtd_logits  # (B, T)
        real = batch["attention_mask"].bool()  # (B, T); the mask itself may be dropped for packed batches
        rtd_term, rtd_hits = rtd_loss(rtd_logits, replaced, real)

        terms = {"gen_mlm": gen_term, "rtd": rtd_term}
        acc = {"rtd": rtd_hits} if gen_hits is None else {"gen_mlm": gen_hits, "rtd": rtd_hits}
        predictions = {}
        if not model.training:  # evaluation metrics only: a (M,) gather and a host sync
            probs = torch.sigmoid(rtd_logits.detach().float())  # (B, T)
            predictions["rtd"] = (probs[real], replaced[real].long())  # (M,), (M,)
        return ObjectiveOutput(loss=self.combine(terms), terms=terms, accuracy=acc, predictions=predictions)

    def combine(self, terms: Mapping[str, Count], step: int = 0) -> Tensor:
        """The loss of per-term `(sum, n)` counts: of one batch, or summed over a whole evaluation."""
        return weighted_sum(terms, self.weights)
