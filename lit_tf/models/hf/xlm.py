"""XLM <-> HF ``XLMModel`` / ``XLMForTokenClassification`` (and ``XLMWithLMHeadModel`` read as its
encoder): key rules and config maps.

Not exactly representable, so export refuses: our ``XLMForPreTraining`` LM head has BERT's
dense + GELU + LayerNorm transform, which HF's ``XLMWithLMHeadModel.pred_layer`` (a bare Linear)
lacks; our ``XLMForSequenceClassification`` pools with BERT's dense + tanh, where HF's summary feeds
the first token straight into its output Linear. HF XLM hard-codes ``d_ff = 4 * d_model`` and the
exact GELU, and ignores a one-language embedding. HF XLM multiplies hidden states at padded
positions by zero (ours leave them), which changes nothing at real positions.
"""

from __future__ import annotations

from typing import Any

from lit_tf.models.hf.core import Arch, Groups, HFMapping, module, require
from lit_tf.models.xlm import XLMConfig


def rules(task: str, cfg: XLMConfig, hf_base: str) -> Groups:
    """Rules of our XLM model for ``task``. Our XLM pooler and LM-head transform have no HF
    counterpart, so they have no rules (fresh on import, refused on export)."""
    o = "" if task == "encoder" else "xlm."
    h = hf_base
    enc = [
        *module(f"{h}embeddings", f"{o}embeddings.word_embeddings", ("weight",)),
        *module(f"{h}position_embeddings", f"{o}embeddings.position_embeddings", ("weight",)),
        *module(f"{h}layer_norm_emb", f"{o}embeddings.norm"),
    ]
    if cfg.use_lang_emb:
        enc += module(f"{h}lang_embeddings", f"{o}embeddings.lang_embeddings", ("weight",))
    for i in range(cfg.n_layers):
        ol = f"{o}blocks.{i}."
        enc += [
            *module(f"{h}attentions.{i}.q_lin", f"{ol}attn.q_proj"),
            *module(f"{h}attentions.{i}.k_lin", f"{ol}attn.k_proj"),
            *module(f"{h}attentions.{i}.v_lin", f"{ol}attn.v_proj"),
            *module(f"{h}attentions.{i}.out_lin", f"{ol}attn.out_proj"),
            *module(f"{h}layer_norm1.{i}", f"{ol}attn_norm"),
            *module(f"{h}ffns.{i}.lin1", f"{ol}ffn.fc_in"),
            *module(f"{h}ffns.{i}.lin2", f"{ol}ffn.fc_out"),
            *module(f"{h}layer_norm2.{i}", f"{ol}ffn_norm"),
        ]
    groups: Groups = {"encoder": enc}
    if task == "token_cls":
        groups["token_cls"] = module("classifier", "classifier")
    return groups


def config_to_hf(cfg: XLMConfig) -> dict[str, Any]:
    if cfg.d_ff != 4 * cfg.d_model:
        raise NotImplementedError(f"HF XLM fixes d_ff = 4 * d_model; got d_ff={cfg.d_ff}, d_model={cfg.d_model}")
    if cfg.activation != "gelu":
        raise NotImplementedError(f"HF XLM supports only the exact 'gelu' activation, got {cfg.activation!r}")
    if cfg.use_lang_emb and cfg.n_langs == 1:
        raise NotImplementedError("HF XLM ignores language embeddings when n_langs == 1; set use_lang_emb=False")
    return {
        "vocab_size": cfg.vocab_size,
        "emb_dim": cfg.d_model,
        "n_layers": cfg.n_layers,
        "n_heads": cfg.n_heads,
        "max_position_embeddings": cfg.max_seq_len,
        "dropout": cfg.dropout,
        "attention_dropout": cfg.attn_dropout,
        "gelu_activation": True,
        "sinusoidal_embeddings": False,
        "causal": cfg.causal,
        "asm": False,
        "n_langs": cfg.n_langs,
        "use_lang_emb": cfg.use_lang_emb,
        "layer_norm_eps": cfg.layer_norm_eps,
        "init_std": cfg.init_std,
        "pad_token_id": cfg.pad_id,
        "is_encoder": True,
        "tie_word_embeddings": True,
    }


def config_from_hf(d: dict[str, Any], arch: str) -> XLMConfig:
    if not d.get("gelu_activation", True):
        raise ValueError("HF XLM with gelu_activation=False (ReLU) is not supported")
    if d.get("sinusoidal_embeddings", False):
        raise ValueError("HF XLM with sinusoidal_embeddings=True is not supported (ours are learned)")
    if not d.get("is_encoder", True):
        raise ValueError("HF XLM with is_encoder=False is not supported")
    d_model = require(d, "emb_dim", arch)
    n_langs = d.get("n_langs", 1)
    vocab_size = d.get("vocab_size", d.get("n_words"))
    if vocab_size is None:
        raise ValueError(f"HF config for {arch} has neither 'vocab_size' nor 'n_words'")
    pad_id = d.get("pad_token_id", d.get("pad_index", 2))
    return XLMConfig(
        vocab_size=vocab_size,
        n_langs=n_langs,
        d_model=d_model,
        n_layers=require(d, "n_layers", arch),
        n_heads=require(d, "n_heads", arch),
        d_ff=4 * d_model,
        max_seq_len=d.get("max_position_embeddings", 512),
        dropout=d.get("dropout", 0.1),
        attn_dropout=d.get("attention_dropout", 0.1),
        # HF adds language embeddings only with more than one language.
        use_lang_emb=bool(d.get("use_lang_emb", True)) and n_langs > 1,
        causal=bool(d.get("causal", False)),
        layer_norm_eps=d.get("layer_norm_eps", 1e-12),
        init_std=d.get("init_std", 0.02),
        pad_id=2 if pad_id is None else pad_id,
        activation="gelu",
    )


MAPPING = HFMapping(
    config_class="XLMConfig",
    config_to_hf=config_to_hf,
    config_from_hf=config_from_hf,
    rules=rules,
    architectures={
        "XLMModel": Arch("encoder", ""),
        "XLMForTokenClassification": Arch("token_cls", "transformer."),
        # The LM head (bias; weight tied) has no exact lit_tf counterpart: import gives the encoder.
        "XLMWithLMHeadModel": Arch("encoder", "transformer.", extra_keys=("pred_layer.proj.bias",)),
    },
    export={"encoder": "XLMModel", "token_cls": "XLMForTokenClassification"},
    tasks=("encoder", "pretraining", "seq_cls", "token_cls"),
    export_refusals={
        "pretraining": "XLMForPreTraining has no exact HF counterpart: its LM head has BERT's dense + GELU + "
                       "LayerNorm transform, which HF's XLMWithLMHeadModel lacks. Export the encoder instead: "
                       "to_hf(model.xlm) writes an HF XLMModel.",
    },
)
