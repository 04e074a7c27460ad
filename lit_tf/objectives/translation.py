"""Translation: label-smoothed cross-entropy on target tokens, token-weighted exactly across ranks.

Batches (lit_tf.data.translation): `input_ids` / `attention_mask` (the source), `decoder_input_ids` /
`decoder_attention_mask` (the target shifted right, starting at [CLS]) and `labels` (the target,
IGNORE_INDEX at padding).

Label smoothing follows `torch.nn.functional.cross_entropy(label_smoothing=eps)` (Szegedy et al.,
2016): the target distribution puts 1 - eps on the reference token and eps spread uniformly over the
whole vocabulary, so per token the loss is (1 - eps) * nll + eps * mean_v(-log p_v). The reported
term `mt` is the plain negative log-likelihood (its exp is the perplexity); only the training loss
is smoothed.

Across ranks: DDP averages gradients, so each rank's loss is its smoothed sum times the world size
over the token count of all ranks together (one scalar all-reduce). The gradient is then exactly
that of the token mean over the global batch, whatever the ranks' token counts, instead of a mean of
per-rank means (which weights a rank of short sentences as much as one of long ones).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.distributed as dist
from torch import Tensor, nn

from lit_tf.objectives.losses import IGNORE_INDEX
from lit_tf.objectives.pretraining import Count, ObjectiveOutput, OneTermObjective

__all__ = ["TranslationObjective", "global_token_count", "smoothed_nll"]


def smoothed_nll(logits: Tensor, targets: Tensor, label_smoothing: float) -> tuple[Tensor, Tensor, Tensor]:
    """logits (N, V), targets (N,) -> (sum of the smoothed loss, sum of -log p(target), hits), fp32.

    One log-softmax serves both sums; hits counts the rows whose arg-max is the target."""
    logp = torch.log_softmax(logits.float(), dim=-1)  # (N, V)
    nll = -logp.gather(1, targets.unsqueeze(1)).squeeze(1)  # (N,)
    nll_sum = nll.sum()
    if label_smoothing > 0:
        smooth = -logp.mean(dim=-1)  # (N,) cross-entropy against the uniform distribution
        loss_sum = (1.0 - label_smoothing) * nll_sum + label_smoothing * smooth.sum()
    else:
        loss_sum = nll_sum
    hits = (logp.detach().argmax(dim=-1) == targets).sum()
    return loss_sum, nll_sum, hits


def global_token_count(n: Tensor) -> tuple[Tensor, int]:
    """(the token count summed over all ranks, the world size); (n, 1) outside a process group."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return n, 1
    total = n.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total, dist.get_world_size()


class TranslationObjective(OneTermObjective):
    """Label-smoothed cross-entropy of a `Seq2SeqModel` on its target tokens.

    label_smoothing: eps in [0, 1) (0.1 in Vaswani et al., 2017). Terms: `mt` = (sum of -log p(target),
    target tokens); accuracy `mt` = (arg-max hits, target tokens)."""

    terms = ("mt",)
    val_terms = terms

    def __init__(self, label_smoothing: float = 0.1) -> None:
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"objective.label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)

    def __call__(self, model: nn.Module, batch: Mapping[str, Tensor], step: int = 0) -> ObjectiveOutput:
        labels = batch["labels"]  # (B, T)
        scored = labels != IGNORE_INDEX  # (B, T)
        out = model(batch["input_ids"], batch["decoder_input_ids"], attention_mask=batch.get("attention_mask"),
                    decoder_attention_mask=batch.get("decoder_attention_mask"), target_positions=scored)
        targets = labels[scored]  # (N,) in the row-major order of the selected logits
        n = scored.sum()
        loss_sum, nll_sum, hits = smoothed_nll(out.lm_logits, targets, self.label_smoothing)
        term: Count = (nll_sum, n)
        if torch.is_grad_enabled():  # training: the token mean over every rank's targets
            total, world = global_token_count(n)
            loss = loss_sum * world / total.clamp(min=1).to(loss_sum.dtype)
        else:
            loss = self.combine({"mt": term})
        return ObjectiveOutput(loss=loss, terms={"mt": term}, accuracy={"mt": (hits, n)})
