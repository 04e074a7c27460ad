"""torchmetrics wrappers around the pure evaluation code in ``lit_tf.objectives``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from lit_tf.objectives.tagging import check_scheme, entity_counts

__all__ = ["EntityF1"]


class EntityF1(Metric):
    """Entity-level micro precision / recall / F1 (exact span + type), seqeval-default semantics.

    States are integer counts summed across processes (``dist_reduce_fx="sum"``), so the result
    under DDP equals a single pass over the whole evaluation set (no averaging of per-rank F1s).

    Args:
        scheme: ``"IOB1"``, ``"IOB2"`` or ``"IOBES"`` (see :mod:`lit_tf.objectives.tagging`).
        types: optional entity types to also report ``f1/<type>``; per-type states need a list
            fixed up front so every rank holds tensors of the same shape. Entities of other types
            still count in the micro scores.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    tp: Tensor
    n_pred: Tensor
    n_true: Tensor

    def __init__(self, scheme: str = "IOB2", types: Sequence[str] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        check_scheme(scheme)
        self.scheme = scheme
        self.types = tuple(types or ())
        zero = torch.tensor(0, dtype=torch.long)
        zeros = torch.zeros(len(self.types), dtype=torch.long)
        for name in ("tp", "n_pred", "n_true"):
            self.add_state(name, default=zero.clone(), dist_reduce_fx="sum")
            self.add_state(f"type_{name}", default=zeros.clone(), dist_reduce_fx="sum")

    def update(self, pred_tag_seqs: Sequence[Sequence[str]], true_tag_seqs: Sequence[Sequence[str]]) -> None:
        """Add one batch of sentences: predicted and gold tag strings, word-aligned."""
        c = entity_counts(true_tag_seqs, pred_tag_seqs, self.scheme)
        self.tp += c.tp
        self.n_pred += c.n_pred
        self.n_true += c.n_true
        if self.types:
            per = torch.tensor([c.per_type.get(t, [0, 0, 0]) for t in self.types], dtype=torch.long)
            per = per.to(self.type_tp.device)  # (n_types, 3)
            self.type_tp += per[:, 0]
            self.type_n_pred += per[:, 1]
            self.type_n_true += per[:, 2]

    @staticmethod
    def _prf(tp: Tensor, n_pred: Tensor, n_true: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        tp = tp.double()
        p = torch.where(n_pred > 0, tp / n_pred.clamp(min=1), torch.zeros_like(tp))
        r = torch.where(n_true > 0, tp / n_true.clamp(min=1), torch.zeros_like(tp))
        f = torch.where(p + r > 0, 2 * p * r / (p + r).clamp(min=1e-12), torch.zeros_like(tp))
        return p.float(), r.float(), f.float()

    def compute(self) -> dict[str, Tensor]:
        p, r, f = self._prf(self.tp, self.n_pred, self.n_true)
        out = {"f1": f, "precision": p, "recall": r}
        if self.types:
            _, _, tf_ = self._prf(self.type_tp, self.type_n_pred, self.type_n_true)
            for i, t in enumerate(self.types):
                out[f"f1/{t}"] = tf_[i]
        return out


class ClassificationMetrics(torch.nn.Module):
    """Accuracy, macro-F1 and the confusion matrix for one evaluation stream (DDP-synced)."""

    def __init__(self, labels: Sequence[str]) -> None:
        super().__init__()
        from torchmetrics.classification import (
            MulticlassAccuracy,
            MulticlassConfusionMatrix,
            MulticlassF1Score,
        )

        k = len(labels)
        self.labels = list(labels)
        self.acc = MulticlassAccuracy(num_classes=k, average="micro")
        self.f1 = MulticlassF1Score(num_classes=k, average="macro")
        self.confmat = MulticlassConfusionMatrix(num_classes=k)

    def update(self, preds: Tensor, target: Tensor) -> None:
        self.acc.update(preds, target)
        self.f1.update(preds, target)
        self.confmat.update(preds, target)

    def compute(self) -> dict[str, Tensor]:
        return {"acc": self.acc.compute(), "f1": self.f1.compute()}

    def report(self) -> dict:
        """Confusion matrix (rows = gold, columns = predicted) and per-class P/R/F1."""
        cm = self.confmat.compute().cpu()
        tp = cm.diag().float()
        prec = tp / cm.sum(0).clamp(min=1)
        rec = tp / cm.sum(1).clamp(min=1)
        f1 = 2 * prec * rec / (prec + rec).clamp(min=1e-12)
        return {"labels": self.labels, "confusion": cm.tolist(),
                "per_class": {lab: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
                                    "support": int(cm[i].sum())} for i, lab in enumerate(self.labels)}}

    def reset(self) -> None:
        for m in (self.acc, self.f1, self.confmat):
            m.reset()


class TaggingMetrics(torch.nn.Module):
    """Entity-level F1/precision/recall (and token accuracy) from per-position tag ids.

    `preds`/`target` are (B, T) with IGNORE (-100) everywhere but the first sub-token of each
    word; the remaining positions, in order, are the sentence's words.
    """

    def __init__(self, labels: Sequence[str], scheme: str = "IOB2") -> None:
        super().__init__()
        self.labels = list(labels)
        types = sorted({lab[2:] for lab in self.labels if len(lab) > 2 and lab[1] == "-"})
        self.entity = EntityF1(scheme=scheme, types=types)
        self.types = types

    def update(self, preds: Tensor, target: Tensor) -> None:
        keep = target != -100
        pred_seqs, gold_seqs = [], []
        for p, t, k in zip(preds.tolist(), target.tolist(), keep.tolist()):
            pred_seqs.append([self.labels[x] for x, m in zip(p, k) if m])
            gold_seqs.append([self.labels[x] for x, m in zip(t, k) if m])
        self.entity.update(pred_seqs, gold_seqs)

    def compute(self) -> dict[str, Tensor]:
        out = self.entity.compute()
        return {k: v for k, v in out.items() if k in ("f1", "precision", "recall")}

    def report(self) -> dict:
        out = self.entity.compute()
        return {"labels": self.labels, "per_type": {t: float(out.get(f"f1/{t}", torch.tensor(0.0))) for t in self.types}}

    def reset(self) -> None:
        self.entity.reset()


class ReplacedTokenMetrics(Metric):
    """ELECTRA's discriminator, evaluated over every real token seen: ROC-AUC of its "replaced"
    probability (``rtd_auc``) and the share of tokens the generator really replaced (``replaced_rate``).

    Memory stays flat: scores are counted in ``bins`` equal-width bins of their logit (clamped to
    [-``logit_range``, ``logit_range``]; logit rather than probability bins, so a confident discriminator,
    whose scores crowd near 0 and 1, stays resolved), one histogram for replaced tokens and one for
    originals. The AUC is exact for those bins: P(score of a replaced token > score of an original),
    ties within a bin counting one half. Constant scores give 0.5; NaN until both classes were seen.
    The states are integer counts summed across processes, so DDP gives the single-process result.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    pos_hist: Tensor
    neg_hist: Tensor

    def __init__(self, bins: int = 2048, logit_range: float = 16.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if bins < 2 or not logit_range > 0:
            raise ValueError(f"ReplacedTokenMetrics needs bins >= 2 and logit_range > 0, got {bins}, {logit_range}")
        self.bins, self.logit_range = int(bins), float(logit_range)
        self.add_state("pos_hist", default=torch.zeros(self.bins, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("neg_hist", default=torch.zeros(self.bins, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """preds (M,) probabilities that a token was replaced; target (M,) 1 = replaced, 0 = original."""
        if preds.shape != target.shape:
            raise ValueError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} must have the same shape")
        z = torch.logit(preds.detach().double().reshape(-1)).clamp(-self.logit_range, self.logit_range)  # (M,)
        idx = ((z + self.logit_range) * (self.bins / (2 * self.logit_range))).long().clamp(0, self.bins - 1)
        pos = target.reshape(-1).long().to(idx.device)  # (M,) in {0, 1}
        self.pos_hist.index_add_(0, idx, pos)
        self.neg_hist.index_add_(0, idx, 1 - pos)

    def _counts(self) -> tuple[Tensor, Tensor, Tensor]:
        """(replaced-original pairs ranked right, ties counting 1/2; replaced tokens; original tokens)."""
        pos, neg = self.pos_hist.double(), self.neg_hist.double()
        below = torch.cumsum(neg, 0) - neg  # originals in strictly lower bins
        return (pos * (below + 0.5 * neg)).sum(), pos.sum(), neg.sum()

    @staticmethod
    def _summary(wins: Tensor, n_pos: Tensor, n_neg: Tensor) -> dict[str, Tensor]:
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=wins.device)
        auc = wins / (n_pos * n_neg) if n_pos > 0 and n_neg > 0 else nan
        rate = n_pos / (n_pos + n_neg) if n_pos + n_neg > 0 else nan
        return {"rtd_auc": auc.float(), "replaced_rate": rate.float()}

    def compute(self) -> dict[str, Tensor]:
        return self._summary(*self._counts())

    def report(self) -> dict:
        """The same numbers as plain floats, with the token counts behind them (all processes')."""
        with self.sync_context():
            wins, n_pos, n_neg = self._counts()
        out = {k: float(v) for k, v in self._summary(wins, n_pos, n_neg).items()}
        return {**out, "tokens": int(n_pos + n_neg), "replaced": int(n_pos)}
