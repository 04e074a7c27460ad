"""Seq2Seq <-> HF ``BartForConditionalGeneration`` (post-LN, ``pre_ln=False``) and
``MBartForConditionalGeneration`` (pre-LN, ``pre_ln=True``): key rules and config maps.

Our layout is BART's (learned positions, an embedding LayerNorm per stack, no embedding scaling,
a tied output layer plus ``final_logits_bias``); MBart is the same with pre-LN blocks and a final
LayerNorm per stack. How the pieces meet:

- Positions: HF's tables have ``max_position_embeddings + 2`` rows (position p reads row p + 2).
  Export writes our table into rows 2.. and zeros into rows 0-1 (never read); import drops them.
- Language embeddings (``n_langs > 0``, an XLM warm start) are folded into the position tables:
  ``lang_embeddings[src_lang_id]`` is added to every row of the encoder's, ``[tgt_lang_id]`` to the
  decoder's. Exact, since each side's language is fixed. An import gives ``n_langs=0``.
- One vocabulary: ``model.shared`` is our ``embed_tokens``; HF ties the encoder's and decoder's
  ``embed_tokens`` and ``lm_head`` to it (their copies in a checkpoint are ignored on import).
  ``final_logits_bias`` is an HF buffer of shape (1, V). A separate target vocabulary
  (``tgt_vocab_size``) has no HF counterpart: export refuses it.
- LayerNorm eps: HF BART / MBart hard-code 1e-5. A model with another ``layer_norm_eps`` still
  exports, and HF then computes its LayerNorms with 1e-5 (a tiny difference); import sets 1e-5.
- Dropout: ``dropout`` and ``attention_dropout`` map; HF's ``activation_dropout`` (inside the FFN)
  and layer drop have no counterpart here: export writes 0, import ignores them (training only).
- Decoder inputs: ours start at ``bos_id`` (HF ``decoder_start_token_id``). HF MBart builds
  decoder inputs from labels differently (it rotates the last token to the front); pass
  ``decoder_input_ids`` to an exported MBart.

Which HF class: the architecture follows ``pre_ln`` (`architecture`, the mapping's ``export_arch``),
and each architecture names its config class (``BartConfig`` / ``MBartConfig``), so
``lit_tf.models.hf.to_hf`` / ``export_hf`` write either. Import (``from_hf`` / ``import_hf``) reads both.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lit_tf.models.hf.core import (
    ACT_TO_HF,
    Arch,
    Groups,
    HFMapping,
    Rule,
    activation_from_hf,
    module,
    require,
    same,
)
from lit_tf.models.seq2seq import Seq2SeqConfig

BART, MBART = "BartForConditionalGeneration", "MBartForConditionalGeneration"
POSITION_OFFSET = 2  # HF BART's learned positions start at row 2
# tied copies of model.shared that HF checkpoints may carry (lm_head.weight is ignored by the core)
TIED_COPIES = ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight")


def architecture(cfg: Seq2SeqConfig) -> str:
    """The HF architecture of a Seq2SeqModel with config ``cfg``: MBart when pre-LN, else BART."""
    return MBART if cfg.pre_ln else BART


def _positions_rule(hf: str, ours: str, lang_id: int | None) -> Rule:
    """Our position table (+ the side's language row when lang_id is not None) <-> HF's offset table."""

    def pad(table: Tensor) -> Tensor:  # (P, C) -> (P + 2, C), rows 0-1 zero
        return torch.cat([table.new_zeros(POSITION_OFFSET, table.shape[1]), table], dim=0)

    if lang_id is None:
        return Rule(hf, (ours,), lambda ts: pad(ts[0]), lambda t: [t[POSITION_OFFSET:]])

    def unfold(t: Tensor) -> list[Tensor]:
        raise ValueError("HF BART has no language embeddings: a checkpoint imports with n_langs=0")

    # ts = (positions (P, C), language embeddings (L, C)); the side's language row is added to every position
    return Rule(hf, (ours, "lang_embeddings.weight"), lambda ts: pad(ts[0] + ts[1][lang_id]), unfold)


def _attention(hf: str, ours: str) -> list[Rule]:
    return [r for p in ("q_proj", "k_proj", "v_proj", "out_proj") for r in module(f"{hf}.{p}", f"{ours}.{p}")]


def rules(task: str, cfg: Seq2SeqConfig, hf_base: str) -> Groups:
    """Rules of a Seq2SeqModel (every task builds the same model) against keys under ``hf_base``."""
    h = hf_base
    langs = cfg.n_langs > 0
    out: list[Rule] = [
        same(f"{h}shared.weight", "embed_tokens.weight"),
        Rule("final_logits_bias", ("final_logits_bias",), lambda ts: ts[0].unsqueeze(0), lambda t: [t.squeeze(0)]),
    ]
    for side, lang_id, n_blocks in (("encoder", cfg.src_lang_id, cfg.n_layers),
                                    ("decoder", cfg.tgt_lang_id, cfg.decoder_layers)):
        hs = f"{h}{side}."
        out += [_positions_rule(f"{hs}embed_positions.weight", f"{side}.embed_positions.weight",
                                lang_id if langs else None),
                *module(f"{hs}layernorm_embedding", f"{side}.layernorm_embedding")]
        if cfg.pre_ln:
            out += module(f"{hs}layer_norm", f"{side}.norm")
        for i in range(n_blocks):
            hl, ol = f"{hs}layers.{i}.", f"{side}.blocks.{i}."
            out += [*_attention(f"{hl}self_attn", f"{ol}self_attn"),
                    *module(f"{hl}self_attn_layer_norm", f"{ol}self_attn_norm"),
                    *module(f"{hl}fc1", f"{ol}ffn.fc_in"),
                    *module(f"{hl}fc2", f"{ol}ffn.fc_out"),
                    *module(f"{hl}final_layer_norm", f"{ol}ffn_norm")]
            if side == "decoder":
                out += [*_attention(f"{hl}encoder_attn", f"{ol}cross_attn"),
                        *module(f"{hl}encoder_attn_layer_norm", f"{ol}cross_attn_norm")]
    return {"encoder": out}


def config_keys(cfg: Seq2SeqConfig) -> dict[str, Any]:
    """HF BartConfig / MBartConfig keys (the two classes share them) of a Seq2SeqConfig."""
    if cfg.tgt_vocab_size is not None:
        raise NotImplementedError(
            f"a Seq2SeqModel with a separate target vocabulary (tgt_vocab_size={cfg.tgt_vocab_size}) cannot be "
            "exported: HF BART / MBart have one embedding shared by the encoder, the decoder and the output layer")
    return {
        "vocab_size": cfg.vocab_size,
        "d_model": cfg.d_model,
        "encoder_layers": cfg.n_layers,
        "decoder_layers": cfg.decoder_layers,
        "encoder_attention_heads": cfg.n_heads,
        "decoder_attention_heads": cfg.n_heads,
        "encoder_ffn_dim": cfg.d_ff,
        "decoder_ffn_dim": cfg.d_ff,
        "max_position_embeddings": cfg.max_seq_len,
        "activation_function": ACT_TO_HF[cfg.activation],
        "scale_embedding": False,
        "dropout": cfg.dropout,
        "attention_dropout": cfg.attn_dropout,
        "activation_dropout": 0.0,
        "encoder_layerdrop": 0.0,
        "decoder_layerdrop": 0.0,
        "init_std": cfg.init_std,
        "pad_token_id": cfg.pad_id,
        "bos_token_id": cfg.bos_id,
        "eos_token_id": cfg.eos_id,
        "decoder_start_token_id": cfg.bos_id,
        "forced_bos_token_id": None,
        "forced_eos_token_id": None,  # our search cuts a hypothesis at the maximum length without eos
        "is_encoder_decoder": True,
        "tie_word_embeddings": True,
    }


def config_from_hf(d: dict[str, Any], arch: str) -> Seq2SeqConfig:
    if d.get("scale_embedding", False):
        raise ValueError(f"HF {arch} with scale_embedding=True is not supported (ours are unscaled)")
    for key in ("attention_heads", "ffn_dim"):
        enc, dec = d.get(f"encoder_{key}"), d.get(f"decoder_{key}")
        if enc != dec:
            raise ValueError(f"HF config encoder_{key}={enc} != decoder_{key}={dec}: lit_tf's encoder and "
                             "decoder share one value")
    n_layers, n_dec = require(d, "encoder_layers", arch), require(d, "decoder_layers", arch)

    def token(*keys: str, default: int) -> int:  # the first special-token id the config sets
        return next((d[k] for k in keys if d.get(k) is not None), default)

    return Seq2SeqConfig(
        vocab_size=require(d, "vocab_size", arch),
        d_model=require(d, "d_model", arch),
        n_layers=n_layers,
        n_decoder_layers=None if n_dec == n_layers else n_dec,
        n_heads=require(d, "encoder_attention_heads", arch),
        d_ff=require(d, "encoder_ffn_dim", arch),
        max_seq_len=require(d, "max_position_embeddings", arch),
        dropout=d.get("dropout", 0.1),
        attn_dropout=d.get("attention_dropout", 0.0),
        pre_ln=arch == MBART,
        layer_norm_eps=1e-5,
        init_std=d.get("init_std", 0.02),
        pad_id=token("pad_token_id", default=1),  # HF BART's defaults: pad 1, eos 2, decoder start 2
        bos_id=token("decoder_start_token_id", "bos_token_id", default=2),
        eos_id=token("eos_token_id", default=2),
        activation=activation_from_hf(d.get("activation_function", "gelu"), "activation_function"),
    )


MAPPING = HFMapping(
    config_class="BartConfig",
    config_to_hf=config_keys,
    config_from_hf=config_from_hf,
    rules=rules,
    architectures={
        BART: Arch("translation", "model.", extra_keys=TIED_COPIES),
        MBART: Arch("translation", "model.", extra_keys=TIED_COPIES, config_class="MBartConfig"),
    },
    # the family's one model is the whole encoder-decoder (its "encoder", a Seq2SeqStack, has no HF
    # counterpart of its own)
    export={"translation": BART},
    export_arch=lambda task, cfg: architecture(cfg),  # pre-LN: MBart
    tasks=("translation",),
)

