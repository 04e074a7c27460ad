"""Pretraining objectives: MLM corruption, NSP example building, and losses."""

from lit_tf.objectives.losses import IGNORE_INDEX, masked_accuracy, mlm_loss, nsp_loss, weighted_sum
from lit_tf.objectives.masking import mask_tokens, word_ids_from_word_starts
from lit_tf.objectives.nsp import build_nsp_examples, concat_pair, pair_to_ids, truncate_pair

__all__ = [
    "IGNORE_INDEX",
    "build_nsp_examples",
    "concat_pair",
    "mask_tokens",
    "masked_accuracy",
    "mlm_loss",
    "nsp_loss",
    "pair_to_ids",
    "truncate_pair",
    "weighted_sum",
    "word_ids_from_word_starts",
]
