"""Pretraining objectives: MLM corruption, NSP and TLM example building, cross-lingual sampling, and losses."""

from lit_tf.objectives.crosslingual import (
    LanguageSampler,
    PiecewiseLinear,
    alpha_sampling_probs,
    build_tlm_example,
    language_adversarial_loss,
    retrieval_accuracy,
)
from lit_tf.objectives.losses import IGNORE_INDEX, masked_accuracy, mlm_loss, nsp_loss, weighted_sum
from lit_tf.objectives.masking import mask_tokens, word_ids_from_word_starts
from lit_tf.objectives.nsp import build_nsp_examples, concat_pair, pair_to_ids, truncate_pair

__all__ = [
    "IGNORE_INDEX",
    "LanguageSampler",
    "PiecewiseLinear",
    "alpha_sampling_probs",
    "build_nsp_examples",
    "build_tlm_example",
    "concat_pair",
    "language_adversarial_loss",
    "mask_tokens",
    "masked_accuracy",
    "mlm_loss",
    "nsp_loss",
    "pair_to_ids",
    "retrieval_accuracy",
    "truncate_pair",
    "weighted_sum",
    "word_ids_from_word_starts",
]
