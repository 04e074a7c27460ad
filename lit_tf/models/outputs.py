"""Plain dataclasses returned by the models. Models return logits; losses live in objectives.

The one exception is a speed path: a language model given targets (a causal LM's `targets`, an
MLM head's `mlm_targets`) scores them with its head fused into the cross-entropy
(`lit_tf.models.layers.linear_cross_entropy`), so the (tokens x V) logits never exist whole; the
objective still decides the targets (the causal shift, the masked positions) and the weighting."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class EncoderOutput:
    """Output of a bare encoder (e.g. ``BertModel``)."""

    hidden: Tensor  # (B, T, C) final-layer hidden states


@dataclass
class PreTrainingOutput:
    """Output of ``BertForPreTraining``."""

    hidden: Tensor  # (B, T, C) final-layer hidden states
    # (N, V) logits at the N selected positions when mlm_positions was given
    # (rows in row-major order of the True entries), otherwise (B, T, V); None with mlm_targets
    mlm_logits: Tensor | None
    nsp_logits: Tensor | None = None  # (B, 2) next-sentence logits; None when the model has no NSP head
    # with mlm_targets: (sum of -log p(target), number of scored positions), fp32 / int64 scalars
    mlm_nll: tuple[Tensor, Tensor] | None = None
    # with mlm_targets, in eval mode: (positions whose arg-max is the target, scored positions)
    mlm_hits: tuple[Tensor, Tensor] | None = None


@dataclass
class CausalLMOutput:
    """Output of ``GPTForCausalLM``: next-token logits at every position (unshifted: logits at
    position t score token t + 1; the shift happens in the objective)."""

    hidden: Tensor  # (B, T, C) final hidden states (after the final LayerNorm)
    lm_logits: Tensor | None  # (B, T, V); None when the model was given targets to score instead
    # with targets: (sum of -log p(target), number of scored positions), fp32 / int64 scalars
    nll: tuple[Tensor, Tensor] | None = None
    # with targets, in eval mode: (positions whose arg-max is the target, scored positions)
    hits: tuple[Tensor, Tensor] | None = None


@dataclass
class ClassifierOutput:
    """Output of the ``*ForSequenceClassification`` / ``*ForTokenClassification`` models."""

    hidden: Tensor  # (B, T, C) final-layer hidden states of the encoder
    logits: Tensor  # (B, num_labels) for sequence classification, (B, T, num_labels) for token classification


@dataclass
class Seq2SeqOutput:
    """Output of ``Seq2SeqModel`` (an encoder-decoder): next-token logits of the target (unshifted:
    lm_logits at decoder position t score the target token that follows decoder input t)."""

    hidden: Tensor  # (B, T, C) final decoder hidden states (after the decoder's final LayerNorm, if any)
    # (B, T, V_tgt); (N, V_tgt) at the N selected positions when target_positions was given
    # (rows in row-major order of the True entries)
    lm_logits: Tensor
    encoder_hidden: Tensor  # (B, S, C) final encoder hidden states
