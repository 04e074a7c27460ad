"""Fine-tuning objectives: sequence classification and token classification.

Same contract as the pretraining objectives (`(model, batch, step) -> ObjectiveOutput`), plus
`predictions`: per term, the predicted and gold ids that evaluation metrics consume.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from lit_tf.models.families import family_of
from lit_tf.objectives.losses import IGNORE_INDEX, _sum_cross_entropy, masked_accuracy
from lit_tf.objectives.pretraining import ObjectiveOutput, OneTermObjective


def classifier_forward(model: nn.Module, batch: Mapping[str, Tensor]):
    """Run a classifier of any family on a batch (with the inputs its family reads: segment or
    language ids)."""
    return model(batch["input_ids"], **family_of(model).inputs(batch))


class SequenceClassificationObjective(OneTermObjective):
    """Cross-entropy over one label per sequence (single sentences or pairs)."""

    terms = ("cls",)
    val_terms = ("cls",)

    def __call__(self, model: nn.Module, batch: Mapping[str, Tensor], step: int = 0) -> ObjectiveOutput:
        logits = classifier_forward(model, batch).logits  # (B, K)
        term = _sum_cross_entropy(logits, batch["labels"])
        return ObjectiveOutput(
            loss=self.combine({"cls": term}), terms={"cls": term}, accuracy={"cls": masked_accuracy(logits.detach(), batch["labels"])},
            predictions={"cls": (logits.detach().argmax(-1), batch["labels"])},
        )


class TokenClassificationObjective(OneTermObjective):
    """Cross-entropy over the first sub-token of every word (IGNORE_INDEX elsewhere)."""

    terms = ("tok",)
    val_terms = ("tok",)

    def __call__(self, model: nn.Module, batch: Mapping[str, Tensor], step: int = 0) -> ObjectiveOutput:
        logits = classifier_forward(model, batch).logits  # (B, T, K)
        labels = batch["labels"]  # (B, T)
        term = _sum_cross_entropy(logits, labels)
        preds = logits.detach().argmax(-1).masked_fill(labels == IGNORE_INDEX, IGNORE_INDEX)  # (B, T)
        return ObjectiveOutput(
            loss=self.combine({"tok": term}), terms={"tok": term}, accuracy={"tok": masked_accuracy(logits.detach(), labels)},
            predictions={"tok": (preds, labels)},
        )
