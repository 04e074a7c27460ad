"""GPT <-> HF ``GPT2Model`` / ``GPT2LMHeadModel``: key rules and config maps.

Two layout differences besides names: GPT-2's ``Conv1D`` stores weights as (in, out), the
transpose of ``nn.Linear``; GPT-2 fuses q/k/v into one ``c_attn`` whose output is [q | k | v].
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from lit_tf.models.gpt import GPTConfig
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


def _conv1d(hf: str, ours: str) -> list[Rule]:
    """GPT-2 ``Conv1D`` (weight (in, out)) <-> our ``nn.Linear`` (weight (out, in))."""
    weight = Rule(f"{hf}.weight", (f"{ours}.weight",), lambda ts: ts[0].t(), lambda t: [t.t()])
    return [weight, same(f"{hf}.bias", f"{ours}.bias")]


def _fused_qkv(hf: str, q: str, k: str, v: str) -> list[Rule]:
    """GPT-2's fused ``c_attn`` Conv1D, output [q | k | v] -> our three Linears q_proj/k_proj/v_proj."""
    ours_w = (f"{q}.weight", f"{k}.weight", f"{v}.weight")
    ours_b = (f"{q}.bias", f"{k}.bias", f"{v}.bias")
    weight = Rule(
        f"{hf}.weight",
        ours_w,
        lambda ts: torch.cat([w.t() for w in ts], dim=1),  # 3 x (C, C) Linear -> (C, 3C) Conv1D
        lambda t: [w.t() for w in t.chunk(3, dim=1)],  # (C, 3C) -> 3 x (C, C)
    )
    bias = Rule(f"{hf}.bias", ours_b, lambda ts: torch.cat(list(ts)), lambda t: list(t.chunk(3)))
    return [weight, bias]


def rules(task: str, cfg: GPTConfig, hf_base: str) -> Groups:
    """Rules of our GPT model for ``task`` ("clm" or "encoder"); the LM head is tied to wte."""
    o = "transformer." if task == "clm" else ""
    h = hf_base
    enc = [*module(f"{h}wte", f"{o}wte", ("weight",)), *module(f"{h}wpe", f"{o}wpe", ("weight",))]
    for i in range(cfg.n_layers):
        hl, ol = f"{h}h.{i}.", f"{o}blocks.{i}."
        enc += [
            *module(f"{hl}ln_1", f"{ol}ln_1"),
            *_fused_qkv(f"{hl}attn.c_attn", f"{ol}attn.q_proj", f"{ol}attn.k_proj", f"{ol}attn.v_proj"),
            *_conv1d(f"{hl}attn.c_proj", f"{ol}attn.out_proj"),
            *module(f"{hl}ln_2", f"{ol}ln_2"),
            *_conv1d(f"{hl}mlp.c_fc", f"{ol}mlp.fc_in"),
            *_conv1d(f"{hl}mlp.c_proj", f"{ol}mlp.fc_out"),
        ]
    enc += module(f"{h}ln_f", f"{o}ln_f")
    return {"encoder": enc}


def config_to_hf(cfg: GPTConfig) -> dict[str, Any]:
    if not cfg.bias:
        raise NotImplementedError("GPT-2 always has biases: a GPTConfig(bias=False) model cannot be exported")
    return {
        "vocab_size": cfg.vocab_size,
        "n_embd": cfg.d_model,
        "n_layer": cfg.n_layers,
        "n_head": cfg.n_heads,
        "n_inner": cfg.d_ff,
        "n_positions": cfg.max_seq_len,
        "activation_function": ACT_TO_HF[cfg.activation],
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.attn_dropout,
        "layer_norm_epsilon": cfg.layer_norm_eps,
        "initializer_range": cfg.init_std,
        "pad_token_id": cfg.pad_id,
        "bos_token_id": None,
        "eos_token_id": None,
        "tie_word_embeddings": True,
    }


def config_from_hf(d: dict[str, Any], arch: str) -> GPTConfig:
    if not d.get("scale_attn_weights", True) or d.get("scale_attn_by_inverse_layer_idx", False):
        raise ValueError("HF GPT-2 configs with non-standard attention scaling are not supported")
    if d.get("add_cross_attention"):
        raise ValueError("HF GPT-2 with cross-attention is not supported")
    d_model = require(d, "n_embd", arch)
    resid, embd = d.get("resid_pdrop", 0.1), d.get("embd_pdrop", 0.1)
    if resid != embd:
        warnings.warn(
            f"HF embd_pdrop={embd} differs from resid_pdrop={resid}; lit_tf GPT has one dropout, "
            f"using {resid} (inference is unaffected)",
            stacklevel=3,
        )
    return GPTConfig(
        vocab_size=require(d, "vocab_size", arch),
        d_model=d_model,
        n_layers=require(d, "n_layer", arch),
        n_heads=require(d, "n_head", arch),
        d_ff=d.get("n_inner") or 4 * d_model,
        max_seq_len=d.get("n_positions", 1024),
        dropout=resid,
        attn_dropout=d.get("attn_pdrop", 0.1),
        layer_norm_eps=d.get("layer_norm_epsilon", 1e-5),
        init_std=d.get("initializer_range", 0.02),
        pad_id=d.get("pad_token_id") or 0,
        activation=activation_from_hf(d.get("activation_function", "gelu_new"), "activation_function"),
        bias=True,
    )


MAPPING = HFMapping(
    config_class="GPT2Config",
    config_to_hf=config_to_hf,
    config_from_hf=config_from_hf,
    rules=rules,
    architectures={"GPT2Model": Arch("encoder", ""), "GPT2LMHeadModel": Arch("clm", "transformer.")},
    export={"encoder": "GPT2Model", "clm": "GPT2LMHeadModel"},
    tasks=("encoder", "clm"),
)
