"""State-dict maps between lit_tf models and HF ``transformers`` checkpoints.

This is the only module that knows HF parameter names. ``transformers``, ``safetensors`` and
``tokenizers`` are imported inside the functions that need them, so ``import lit_tf.models`` (and
even ``import lit_tf.models.hf``) never loads them.

Supported pairs (lit_tf task <-> HF architecture; export writes the right-hand class, import reads
any of the listed ones):

========================================  ===============================  =========================
lit_tf model                              task                             HF architecture
========================================  ===============================  =========================
``BertModel``                             ``"encoder"``                    ``BertModel``
``BertForPreTraining(nsp=True)``          ``"pretraining"``  (MLM + NSP)   ``BertForPreTraining``
``BertForPreTraining(nsp=False)``         ``"mlm"``                        ``BertForMaskedLM``
``BertForSequenceClassification``         ``"seq_cls"``                    ``BertForSequenceClassification``
``BertForTokenClassification``            ``"token_cls"``                  ``BertForTokenClassification``
``GPTModel``                              ``"encoder"``                    ``GPT2Model``
``GPTForCausalLM``                        ``"clm"``                        ``GPT2LMHeadModel``
``XLMModel``                              ``"encoder"``                    ``XLMModel``
``XLMForTokenClassification``             ``"token_cls"``                  ``XLMForTokenClassification``
``XLMForSequenceClassification``          ``"seq_cls"``   (import only)    --
``XLMForPreTraining``                     ``"pretraining"`` (import only)  -- (encoder + fresh head)
========================================  ===============================  =========================

Not exactly representable, so export raises ``NotImplementedError``:

* ``XLMForPreTraining``: our LM head is BERT's (dense -> GELU -> LayerNorm -> tied decoder + bias);
  HF's ``XLMWithLMHeadModel.pred_layer`` is a bare ``Linear`` (tied weight + bias) without the
  transform. Export the encoder (``model.xlm``) as ``XLMModel`` instead.
* ``XLMForSequenceClassification``: ours pools with BERT's dense + tanh; HF's XLM summary feeds the
  first token straight into the output ``Linear``.
* XLM with ``d_ff != 4 * d_model``, activation ``"gelu_tanh"``, or ``use_lang_emb`` with a single
  language (HF hard-codes the first two and ignores a one-language embedding); GPT with
  ``bias=False`` (GPT-2 always has biases).

Exporting a bare ``BertModel`` writes no pooler (ours has none), so HF initialises
``pooler.dense`` at load time and reports it missing; ``last_hidden_state`` is exact.
``XLMWithLMHeadModel`` checkpoints import as ``XLMModel`` (or, with ``task=...``, any XLM model
whose head is then fresh): their ``pred_layer.proj.bias`` has no counterpart and is dropped.

Import builds the lit_tf model for ``task`` from any supported architecture of the same family:
the encoder is always loaded; a head is loaded when the checkpoint carries one with the same
meaning (pooler, MLM transform, NSP, a classifier of the same kind); other heads keep our init
policy. Weight tying follows HF ``save_pretrained``: tied copies (the MLM decoder / LM head) are
not written on export and are ignored on import (our heads are always tied to the embeddings).
Every mapped tensor is shape-checked.

Beyond names, three layout differences: GPT-2's ``Conv1D`` stores weights as (in, out), the
transpose of ``nn.Linear``; GPT-2 fuses q/k/v into one ``c_attn`` whose output is [q | k | v];
HF XLM multiplies hidden states at padded positions by zero (ours leave them), which changes
nothing at real positions.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from lit_tf.models.bert import (
    BertConfig,
    BertForPreTraining,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
)
from lit_tf.models.gpt import GPTConfig, GPTForCausalLM, GPTModel
from lit_tf.models.xlm import (
    XLMConfig,
    XLMForPreTraining,
    XLMForSequenceClassification,
    XLMForTokenClassification,
    XLMModel,
)

if TYPE_CHECKING:
    import tokenizers
    import transformers

# The special tokens our tokenizers define (lit_tf.data.tokenizer.SPECIAL_TOKENS), by HF role.
_SPECIAL_TOKEN_ROLES = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}

# Activation names: ours -> HF's and HF's -> ours. HF "gelu" is the exact (erf) GELU; "gelu_new"
# is GPT-2's tanh approximation; "gelu_pytorch_tanh" is the same formula in one fused kernel.
_ACT_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_new"}
_ACT_FROM_HF = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}

# HF keys that are never parameters of their own: non-persistent buffers older checkpoints saved,
# and tied copies of the embedding matrix / MLM bias (save_pretrained drops these; older files keep them).
_IGNORED_SUFFIXES = (
    "embeddings.position_ids",
    "embeddings.token_type_ids",
    "position_ids",
    ".attn.bias",  # GPT-2's causal-mask buffer in checkpoints before transformers 4.31
    ".attn.masked_bias",
    "cls.predictions.decoder.weight",
    "cls.predictions.decoder.bias",
    "lm_head.weight",
    "pred_layer.proj.weight",
)


# ----------------------------------------------------------------------------- mapping rules


@dataclass(frozen=True)
class _Rule:
    """One HF tensor <-> one or more lit_tf tensors, with the layout change in each direction."""

    hf: str  # HF state-dict key
    ours: tuple[str, ...]  # lit_tf state-dict key(s)
    to_hf: Callable[[Sequence[Tensor]], Tensor]  # our tensors (in `ours` order) -> the HF tensor
    from_hf: Callable[[Tensor], list[Tensor]]  # the HF tensor -> our tensors (in `ours` order)


def _same(hf: str, ours: str) -> _Rule:
    return _Rule(hf, (ours,), lambda ts: ts[0], lambda t: [t])


def _module(hf: str, ours: str, params: tuple[str, ...] = ("weight", "bias")) -> list[_Rule]:
    """Identical-layout parameters of a Linear / LayerNorm / Embedding under two names."""
    return [_same(f"{hf}.{p}", f"{ours}.{p}") for p in params]


def _conv1d(hf: str, ours: str) -> list[_Rule]:
    """GPT-2 ``Conv1D`` (weight (in, out)) <-> our ``nn.Linear`` (weight (out, in))."""
    weight = _Rule(f"{hf}.weight", (f"{ours}.weight",), lambda ts: ts[0].t(), lambda t: [t.t()])
    return [weight, _same(f"{hf}.bias", f"{ours}.bias")]


def _fused_qkv(hf: str, q: str, k: str, v: str) -> list[_Rule]:
    """GPT-2's fused ``c_attn`` Conv1D, output [q | k | v] -> our three Linears q_proj/k_proj/v_proj."""
    ours_w = (f"{q}.weight", f"{k}.weight", f"{v}.weight")
    ours_b = (f"{q}.bias", f"{k}.bias", f"{v}.bias")
    weight = _Rule(
        f"{hf}.weight",
        ours_w,
        lambda ts: torch.cat([w.t() for w in ts], dim=1),  # 3 x (C, C) Linear -> (C, 3C) Conv1D
        lambda t: [w.t() for w in t.chunk(3, dim=1)],  # (C, 3C) -> 3 x (C, C)
    )
    bias = _Rule(f"{hf}.bias", ours_b, lambda ts: torch.cat(list(ts)), lambda t: list(t.chunk(3)))
    return [weight, bias]


# Rules are grouped: "encoder" is always loaded on import; a head group is loaded only when the
# checkpoint's architecture has the same group (see _Arch.task), otherwise it keeps our init.
Groups = dict[str, list[_Rule]]


def _bert_rules(task: str, n_layers: int, hf_base: str) -> Groups:
    """Rules of our BERT model for ``task`` against a checkpoint whose encoder keys start with ``hf_base``."""
    o = "" if task == "encoder" else "bert."  # our encoder prefix
    h = hf_base
    enc = [
        *_module(f"{h}embeddings.word_embeddings", f"{o}embeddings.word_embeddings", ("weight",)),
        *_module(f"{h}embeddings.position_embeddings", f"{o}embeddings.position_embeddings", ("weight",)),
        *_module(f"{h}embeddings.token_type_embeddings", f"{o}embeddings.token_type_embeddings", ("weight",)),
        *_module(f"{h}embeddings.LayerNorm", f"{o}embeddings.norm"),
    ]
    for i in range(n_layers):
        hl, ol = f"{h}encoder.layer.{i}.", f"{o}blocks.{i}."
        enc += [
            *_module(f"{hl}attention.self.query", f"{ol}attn.q_proj"),
            *_module(f"{hl}attention.self.key", f"{ol}attn.k_proj"),
            *_module(f"{hl}attention.self.value", f"{ol}attn.v_proj"),
            *_module(f"{hl}attention.output.dense", f"{ol}attn.out_proj"),
            *_module(f"{hl}attention.output.LayerNorm", f"{ol}attn_norm"),
            *_module(f"{hl}intermediate.dense", f"{ol}ffn.fc_in"),
            *_module(f"{hl}output.dense", f"{ol}ffn.fc_out"),
            *_module(f"{hl}output.LayerNorm", f"{ol}ffn_norm"),
        ]
    groups: Groups = {"encoder": enc}
    if task in ("encoder", "pretraining", "seq_cls"):
        # HF keeps the pooler inside BertModel; ours sits in the NSP head or the classifier model.
        # Our bare BertModel has none: its rule names a key it lacks, so to_hf / from_hf skip it,
        # yet HF BertModel checkpoints' pooler keys are known and reach a seq_cls / NSP pooler.
        ours = "nsp_head.pooler.dense" if task == "pretraining" else "pooler.dense"
        groups["pooler"] = _module(f"{h}pooler.dense", ours)
    if task in ("pretraining", "mlm"):
        groups["mlm"] = [
            *_module("cls.predictions.transform.dense", "mlm_head.dense"),
            *_module("cls.predictions.transform.LayerNorm", "mlm_head.norm"),
            _same("cls.predictions.bias", "mlm_head.bias"),
        ]
    if task == "pretraining":
        groups["nsp"] = _module("cls.seq_relationship", "nsp_head.classifier")
    if task in ("seq_cls", "token_cls"):
        groups[task] = _module("classifier", "classifier")
    return groups


def _gpt_rules(task: str, n_layers: int, hf_base: str) -> Groups:
    """Rules of our GPT model for ``task`` ("clm" or "encoder"); the LM head is tied to wte."""
    o = "transformer." if task == "clm" else ""
    h = hf_base
    enc = [
        *_module(f"{h}wte", f"{o}wte", ("weight",)),
        *_module(f"{h}wpe", f"{o}wpe", ("weight",)),
    ]
    for i in range(n_layers):
        hl, ol = f"{h}h.{i}.", f"{o}blocks.{i}."
        enc += [
            *_module(f"{hl}ln_1", f"{ol}ln_1"),
            *_fused_qkv(f"{hl}attn.c_attn", f"{ol}attn.q_proj", f"{ol}attn.k_proj", f"{ol}attn.v_proj"),
            *_conv1d(f"{hl}attn.c_proj", f"{ol}attn.out_proj"),
            *_module(f"{hl}ln_2", f"{ol}ln_2"),
            *_conv1d(f"{hl}mlp.c_fc", f"{ol}mlp.fc_in"),
            *_conv1d(f"{hl}mlp.c_proj", f"{ol}mlp.fc_out"),
        ]
    enc += _module(f"{h}ln_f", f"{o}ln_f")
    return {"encoder": enc}


def _xlm_rules(task: str, n_layers: int, hf_base: str, lang_emb: bool) -> Groups:
    """Rules of our XLM model for ``task``. Our XLM pooler and LM-head transform have no HF
    counterpart, so they have no rules (fresh on import, refused on export)."""
    o = "" if task == "encoder" else "xlm."
    h = hf_base
    enc = [
        *_module(f"{h}embeddings", f"{o}embeddings.word_embeddings", ("weight",)),
        *_module(f"{h}position_embeddings", f"{o}embeddings.position_embeddings", ("weight",)),
        *_module(f"{h}layer_norm_emb", f"{o}embeddings.norm"),
    ]
    if lang_emb:
        enc += _module(f"{h}lang_embeddings", f"{o}embeddings.lang_embeddings", ("weight",))
    for i in range(n_layers):
        ol = f"{o}blocks.{i}."
        enc += [
            *_module(f"{h}attentions.{i}.q_lin", f"{ol}attn.q_proj"),
            *_module(f"{h}attentions.{i}.k_lin", f"{ol}attn.k_proj"),
            *_module(f"{h}attentions.{i}.v_lin", f"{ol}attn.v_proj"),
            *_module(f"{h}attentions.{i}.out_lin", f"{ol}attn.out_proj"),
            *_module(f"{h}layer_norm1.{i}", f"{ol}attn_norm"),
            *_module(f"{h}ffns.{i}.lin1", f"{ol}ffn.fc_in"),
            *_module(f"{h}ffns.{i}.lin2", f"{ol}ffn.fc_out"),
            *_module(f"{h}layer_norm2.{i}", f"{ol}ffn_norm"),
        ]
    groups: Groups = {"encoder": enc}
    if task == "token_cls":
        groups["token_cls"] = _module("classifier", "classifier")
    return groups


# ----------------------------------------------------------------------------- architectures


@dataclass(frozen=True)
class _Arch:
    """An HF architecture we read: its family, the lit_tf task it corresponds to, where its encoder keys live."""

    family: str  # "bert" | "gpt" | "xlm"
    task: str  # the lit_tf task whose rules name exactly this architecture's keys
    hf_base: str  # prefix of the encoder keys ("bert.", "transformer." or "" for bare encoders)
    extra_keys: tuple[str, ...] = ()  # further known keys we never map


_ARCHS: dict[str, _Arch] = {
    "BertModel": _Arch("bert", "encoder", ""),
    "BertForPreTraining": _Arch("bert", "pretraining", "bert."),
    "BertForMaskedLM": _Arch("bert", "mlm", "bert."),
    "BertForSequenceClassification": _Arch("bert", "seq_cls", "bert."),
    "BertForTokenClassification": _Arch("bert", "token_cls", "bert."),
    "GPT2Model": _Arch("gpt", "encoder", ""),
    "GPT2LMHeadModel": _Arch("gpt", "clm", "transformer."),
    "XLMModel": _Arch("xlm", "encoder", ""),
    "XLMForTokenClassification": _Arch("xlm", "token_cls", "transformer."),
    # The LM head (bias; weight tied) has no exact lit_tf counterpart: import gives the encoder.
    "XLMWithLMHeadModel": _Arch("xlm", "encoder", "transformer.", extra_keys=("pred_layer.proj.bias",)),
}
SUPPORTED_ARCHITECTURES: tuple[str, ...] = tuple(_ARCHS)


def architecture_family(arch: str) -> str | None:
    """The lit_tf family ("bert", "gpt", "xlm") of a supported HF architecture name, else None."""
    return _ARCHS[arch].family if arch in _ARCHS else None

# lit_tf task -> HF architecture written on export, per family.
_EXPORT_ARCH = {
    ("bert", "encoder"): "BertModel",
    ("bert", "pretraining"): "BertForPreTraining",
    ("bert", "mlm"): "BertForMaskedLM",
    ("bert", "seq_cls"): "BertForSequenceClassification",
    ("bert", "token_cls"): "BertForTokenClassification",
    ("gpt", "encoder"): "GPT2Model",
    ("gpt", "clm"): "GPT2LMHeadModel",
    ("xlm", "encoder"): "XLMModel",
    ("xlm", "token_cls"): "XLMForTokenClassification",
}

TASKS: dict[str, tuple[str, ...]] = {
    "bert": ("encoder", "pretraining", "mlm", "seq_cls", "token_cls"),
    "gpt": ("encoder", "clm"),
    "xlm": ("encoder", "pretraining", "seq_cls", "token_cls"),
}

AnyConfig = BertConfig | GPTConfig | XLMConfig


def _describe(model: nn.Module) -> tuple[str, str, AnyConfig]:
    """(family, task, config) of a lit_tf model."""
    table: list[tuple[type, str, str]] = [
        (BertModel, "bert", "encoder"),
        (BertForSequenceClassification, "bert", "seq_cls"),
        (BertForTokenClassification, "bert", "token_cls"),
        (GPTModel, "gpt", "encoder"),
        (GPTForCausalLM, "gpt", "clm"),
        (XLMModel, "xlm", "encoder"),
        (XLMForPreTraining, "xlm", "pretraining"),
        (XLMForSequenceClassification, "xlm", "seq_cls"),
        (XLMForTokenClassification, "xlm", "token_cls"),
    ]
    if isinstance(model, BertForPreTraining):
        return "bert", ("pretraining" if model.nsp_head is not None else "mlm"), model.cfg
    for cls, family, task in table:
        if isinstance(model, cls):
            return family, task, model.cfg
    raise TypeError(f"no HF mapping for {type(model).__name__}")


def _rules_for(family: str, task: str, cfg: AnyConfig, hf_base: str) -> Groups:
    if family == "bert":
        return _bert_rules(task, cfg.n_layers, hf_base)
    if family == "gpt":
        return _gpt_rules(task, cfg.n_layers, hf_base)
    return _xlm_rules(task, cfg.n_layers, hf_base, lang_emb=cfg.use_lang_emb)


def _build(
    family: str, task: str, cfg: AnyConfig, num_labels: int | None, cls_dropout: float | None
) -> nn.Module:
    if family == "bert":
        if task == "encoder":
            return BertModel(cfg)
        if task in ("pretraining", "mlm"):
            return BertForPreTraining(cfg, nsp=task == "pretraining")
        cls = BertForSequenceClassification if task == "seq_cls" else BertForTokenClassification
        return cls(cfg, num_labels, classifier_dropout=cls_dropout)
    if family == "gpt":
        return GPTModel(cfg) if task == "encoder" else GPTForCausalLM(cfg)
    if task == "encoder":
        return XLMModel(cfg)
    if task == "pretraining":
        return XLMForPreTraining(cfg)
    cls = XLMForSequenceClassification if task == "seq_cls" else XLMForTokenClassification
    return cls(cfg, num_labels, classifier_dropout=cls_dropout)


def _aliases(model: nn.Module) -> dict[str, str]:
    """Tied parameters: {alias state-dict key: first key of the same Parameter}."""
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            aliases[name] = first[id(p)]
        else:
            first[id(p)] = name
    return aliases


# ----------------------------------------------------------------------------- config maps


def _require(d: dict[str, Any], key: str, arch: str) -> Any:
    if key not in d or d[key] is None:
        raise ValueError(f"HF config for {arch} has no {key!r}")
    return d[key]


def _activation_from_hf(name: Any, key: str) -> str:
    if name not in _ACT_FROM_HF:
        raise ValueError(f"HF config {key}={name!r} is not supported; supported: {sorted(_ACT_FROM_HF)}")
    return _ACT_FROM_HF[name]


def _bert_config_to_hf(cfg: BertConfig) -> dict[str, Any]:
    return {
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "intermediate_size": cfg.d_ff,
        "hidden_act": _ACT_TO_HF[cfg.activation],
        "hidden_dropout_prob": cfg.dropout,
        "attention_probs_dropout_prob": cfg.attn_dropout,
        "max_position_embeddings": cfg.max_seq_len,
        "type_vocab_size": cfg.type_vocab_size,
        "initializer_range": cfg.init_std,
        "layer_norm_eps": cfg.layer_norm_eps,
        "pad_token_id": cfg.pad_id,
        "tie_word_embeddings": True,
    }


def _bert_config_from_hf(d: dict[str, Any], arch: str) -> BertConfig:
    position_type = d.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise ValueError(
            f"HF config position_embedding_type={position_type!r} is not supported (only 'absolute')"
        )
    if d.get("is_decoder") or d.get("add_cross_attention"):
        raise ValueError("HF BERT decoders (is_decoder / add_cross_attention) are not supported")
    return BertConfig(
        vocab_size=_require(d, "vocab_size", arch),
        d_model=_require(d, "hidden_size", arch),
        n_layers=_require(d, "num_hidden_layers", arch),
        n_heads=_require(d, "num_attention_heads", arch),
        d_ff=_require(d, "intermediate_size", arch),
        max_seq_len=d.get("max_position_embeddings", 512),
        dropout=d.get("hidden_dropout_prob", 0.1),
        attn_dropout=d.get("attention_probs_dropout_prob", 0.1),
        type_vocab_size=d.get("type_vocab_size", 2),
        layer_norm_eps=d.get("layer_norm_eps", 1e-12),
        init_std=d.get("initializer_range", 0.02),
        pad_id=d.get("pad_token_id") or 0,
        activation=_activation_from_hf(d.get("hidden_act", "gelu"), "hidden_act"),
    )


def _gpt_config_to_hf(cfg: GPTConfig) -> dict[str, Any]:
    if not cfg.bias:
        raise NotImplementedError("GPT-2 always has biases: a GPTConfig(bias=False) model cannot be exported")
    return {
        "vocab_size": cfg.vocab_size,
        "n_embd": cfg.d_model,
        "n_layer": cfg.n_layers,
        "n_head": cfg.n_heads,
        "n_inner": cfg.d_ff,
        "n_positions": cfg.max_seq_len,
        "activation_function": _ACT_TO_HF[cfg.activation],
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


def _gpt_config_from_hf(d: dict[str, Any], arch: str) -> GPTConfig:
    if not d.get("scale_attn_weights", True) or d.get("scale_attn_by_inverse_layer_idx", False):
        raise ValueError("HF GPT-2 configs with non-standard attention scaling are not supported")
    if d.get("add_cross_attention"):
        raise ValueError("HF GPT-2 with cross-attention is not supported")
    d_model = _require(d, "n_embd", arch)
    resid, embd = d.get("resid_pdrop", 0.1), d.get("embd_pdrop", 0.1)
    if resid != embd:
        warnings.warn(
            f"HF embd_pdrop={embd} differs from resid_pdrop={resid}; lit_tf GPT has one dropout, "
            f"using {resid} (inference is unaffected)",
            stacklevel=3,
        )
    return GPTConfig(
        vocab_size=_require(d, "vocab_size", arch),
        d_model=d_model,
        n_layers=_require(d, "n_layer", arch),
        n_heads=_require(d, "n_head", arch),
        d_ff=d.get("n_inner") or 4 * d_model,
        max_seq_len=d.get("n_positions", 1024),
        dropout=resid,
        attn_dropout=d.get("attn_pdrop", 0.1),
        layer_norm_eps=d.get("layer_norm_epsilon", 1e-5),
        init_std=d.get("initializer_range", 0.02),
        pad_id=d.get("pad_token_id") or 0,
        activation=_activation_from_hf(d.get("activation_function", "gelu_new"), "activation_function"),
        bias=True,
    )


def _xlm_config_to_hf(cfg: XLMConfig) -> dict[str, Any]:
    if cfg.d_ff != 4 * cfg.d_model:
        raise NotImplementedError(
            f"HF XLM fixes d_ff = 4 * d_model; got d_ff={cfg.d_ff}, d_model={cfg.d_model}"
        )
    if cfg.activation != "gelu":
        raise NotImplementedError(f"HF XLM supports only the exact 'gelu' activation, got {cfg.activation!r}")
    if cfg.use_lang_emb and cfg.n_langs == 1:
        raise NotImplementedError(
            "HF XLM ignores language embeddings when n_langs == 1; set use_lang_emb=False"
        )
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


def _xlm_config_from_hf(d: dict[str, Any], arch: str) -> XLMConfig:
    if not d.get("gelu_activation", True):
        raise ValueError("HF XLM with gelu_activation=False (ReLU) is not supported")
    if d.get("sinusoidal_embeddings", False):
        raise ValueError("HF XLM with sinusoidal_embeddings=True is not supported (ours are learned)")
    if not d.get("is_encoder", True):
        raise ValueError("HF XLM with is_encoder=False is not supported")
    d_model = _require(d, "emb_dim", arch)
    n_langs = d.get("n_langs", 1)
    vocab_size = d.get("vocab_size", d.get("n_words"))
    if vocab_size is None:
        raise ValueError(f"HF config for {arch} has neither 'vocab_size' nor 'n_words'")
    pad_id = d.get("pad_token_id", d.get("pad_index", 2))
    return XLMConfig(
        vocab_size=vocab_size,
        n_langs=n_langs,
        d_model=d_model,
        n_layers=_require(d, "n_layers", arch),
        n_heads=_require(d, "n_heads", arch),
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


_CONFIG_TO_HF = {"bert": _bert_config_to_hf, "gpt": _gpt_config_to_hf, "xlm": _xlm_config_to_hf}
_CONFIG_FROM_HF = {"bert": _bert_config_from_hf, "gpt": _gpt_config_from_hf, "xlm": _xlm_config_from_hf}
_HF_CONFIG_CLASS = {"bert": "BertConfig", "gpt": "GPT2Config", "xlm": "XLMConfig"}


# ----------------------------------------------------------------------------- to / from HF


def config_to_hf(family: str, cfg: AnyConfig) -> dict[str, Any]:
    """The HF config keys (as a dict for BertConfig / GPT2Config / XLMConfig) of a lit_tf config."""
    return _CONFIG_TO_HF[family](cfg)


def to_hf(
    model: nn.Module, labels: Sequence[str] | None = None
) -> tuple[transformers.PretrainedConfig, dict[str, Tensor]]:
    """Map a lit_tf model to (HF config, HF state dict) for the architecture in the module table.

    ``labels`` (classification models only): label names, written as ``id2label``/``label2id``.
    The state dict holds fresh contiguous tensors in HF layout, without tied copies (as
    ``save_pretrained`` writes them). Raises ``NotImplementedError`` for models HF cannot represent.
    """
    import transformers

    family, task, cfg = _describe(model)
    if family == "xlm" and task == "pretraining":
        raise NotImplementedError(
            "XLMForPreTraining has no exact HF counterpart: its LM head has BERT's dense + GELU + "
            "LayerNorm transform, which HF's XLMWithLMHeadModel lacks. Export the encoder instead: "
            "to_hf(model.xlm) writes an HF XLMModel."
        )
    if (family, task) not in _EXPORT_ARCH:
        raise NotImplementedError(
            f"{type(model).__name__} has no exact HF counterpart; exportable: "
            f"{', '.join(sorted(set(_EXPORT_ARCH.values())))}"
        )
    arch = _EXPORT_ARCH[(family, task)]
    hf_dict = _CONFIG_TO_HF[family](cfg)
    hf_dict["architectures"] = [arch]
    if task in ("seq_cls", "token_cls"):
        num_labels: int = model.num_labels
        names = [f"LABEL_{i}" for i in range(num_labels)] if labels is None else list(labels)
        if len(names) != num_labels:
            raise ValueError(f"got {len(names)} labels for a model with num_labels={num_labels}")
        hf_dict["id2label"] = dict(enumerate(names))
        hf_dict["label2id"] = {name: i for i, name in enumerate(names)}
        if family == "bert" and model.dropout.p != cfg.dropout:
            hf_dict["classifier_dropout"] = model.dropout.p
    elif labels is not None:
        raise ValueError(f"labels are only meaningful for classification models, not {type(model).__name__}")
    hf_config = getattr(transformers, _HF_CONFIG_CLASS[family])(**hf_dict)

    ours = model.state_dict()
    aliases = _aliases(model)
    rules = [r for group in _rules_for(family, task, cfg, _ARCHS[arch].hf_base).values() for r in group]
    rules = [r for r in rules if all(k in ours for k in r.ours)]  # e.g. our bare BertModel has no pooler
    covered = {k for r in rules for k in r.ours} | set(aliases)
    unmapped = [k for k in ours if k not in covered]
    if unmapped:  # a guard for model changes this module has not caught up with
        raise NotImplementedError(f"no HF name for lit_tf parameter(s) {unmapped} of {type(model).__name__}")
    state = {r.hf: r.to_hf([ours[k] for k in r.ours]).detach().clone().contiguous() for r in rules}
    return hf_config, state


def _architecture(hf_config: dict[str, Any]) -> str:
    archs = hf_config.get("architectures") or []
    if len(archs) != 1 or archs[0] not in _ARCHS:
        raise ValueError(
            f"unsupported HF architectures {archs!r}; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    return archs[0]


def _num_labels(hf_config: dict[str, Any], arch: _Arch, task: str, num_labels: int | None) -> int | None:
    if task not in ("seq_cls", "token_cls"):
        if num_labels is not None:
            raise ValueError(f"num_labels is only meaningful for seq_cls / token_cls, not task {task!r}")
        return None
    if num_labels is not None:
        return num_labels
    if arch.task == task:  # the checkpoint's own classifier decides
        if hf_config.get("id2label"):
            return len(hf_config["id2label"])
        return int(hf_config.get("num_labels", 2))
    raise ValueError(f"num_labels is required to build a fresh {task} head")


def from_hf(
    hf_config: dict[str, Any],
    hf_state: dict[str, Tensor],
    *,
    task: str | None = None,
    num_labels: int | None = None,
) -> nn.Module:
    """Build the lit_tf model for ``task`` from an HF config (the parsed ``config.json``) and state dict.

    ``task`` None means the checkpoint's own head (see the module table). The encoder must be in
    the checkpoint; a head is loaded when the checkpoint has one with the same meaning, otherwise
    it is initialised with our policy. ``num_labels`` defaults to the checkpoint's own classifier
    size. Raises ``ValueError`` on an unsupported architecture or config, a missing or unknown key,
    or a shape mismatch (naming the key and both shapes).
    """
    arch_name = _architecture(hf_config)
    arch = _ARCHS[arch_name]
    task = arch.task if task is None else task
    if task not in TASKS[arch.family]:
        raise ValueError(
            f"task {task!r} is not available for {arch_name}; choose one of {TASKS[arch.family]}"
        )
    cfg = _CONFIG_FROM_HF[arch.family](hf_config, arch_name)
    n_labels = _num_labels(hf_config, arch, task, num_labels)
    cls_dropout = hf_config.get("classifier_dropout") if arch.family == "bert" else None
    model = _build(arch.family, task, cfg, n_labels, cls_dropout)

    source = _rules_for(arch.family, arch.task, cfg, arch.hf_base)  # every key the checkpoint may hold
    target = _rules_for(arch.family, task, cfg, arch.hf_base)
    known = {r.hf for group in source.values() for r in group} | set(arch.extra_keys)
    unknown = sorted(k for k in hf_state if k not in known and not k.endswith(_IGNORED_SUFFIXES))
    if unknown:
        raise ValueError(f"unexpected key(s) in the {arch_name} checkpoint: {unknown[:10]}")
    if task in ("pretraining", "mlm", "clm") and not hf_config.get("tie_word_embeddings", True):
        raise ValueError(
            f"{arch_name} with tie_word_embeddings=False cannot be mapped: lit_tf heads are tied"
        )

    state = model.state_dict()
    for name, rules in target.items():
        if name != "encoder" and name not in source:
            continue  # a head the checkpoint does not have: keep our init
        for rule in rules:
            if not all(k in state for k in rule.ours):
                continue  # e.g. the HF pooler when building our bare BertModel
            if rule.hf not in hf_state:
                raise ValueError(f"key {rule.hf!r} missing from the {arch_name} checkpoint")
            expected = tuple(rule.to_hf([state[k] for k in rule.ours]).shape)
            got = tuple(hf_state[rule.hf].shape)
            if got != expected:
                raise ValueError(
                    f"shape mismatch for {rule.hf!r}: checkpoint has {got}, lit_tf "
                    f"{type(model).__name__} expects {expected} (for {', '.join(rule.ours)})"
                )
            for key, tensor in zip(rule.ours, rule.from_hf(hf_state[rule.hf])):
                state[key] = tensor.to(state[key].dtype)
    for alias, first in _aliases(model).items():  # tied copies follow their source
        state[alias] = state[first]
    model.load_state_dict(state, strict=True)
    return model


# ----------------------------------------------------------------------------- directories


def _tokenizer_config(tokenizer: tokenizers.Tokenizer, max_len: int) -> dict[str, Any]:
    """A minimal tokenizer_config.json that ``AutoTokenizer`` / ``PreTrainedTokenizerFast`` accept."""
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_len,
        "clean_up_tokenization_spaces": False,
    }
    for role, token in _SPECIAL_TOKEN_ROLES.items():
        if tokenizer.token_to_id(token) is not None:
            config[role] = token
    return config


def export_hf(
    model: nn.Module,
    tokenizer_json: str | Path,
    out_dir: str | Path,
    *,
    labels: Sequence[str] | None = None,
) -> Path:
    """Write an HF model directory: ``config.json`` (with ``architectures``; ``id2label`` from
    ``labels`` for classifiers), ``model.safetensors``, ``tokenizer.json`` (a copy of the file at
    ``tokenizer_json``) and ``tokenizer_config.json``. Loadable with ``<Arch>.from_pretrained(out_dir)``
    and ``AutoTokenizer.from_pretrained(out_dir)``. Returns ``out_dir``."""
    import tokenizers
    from safetensors.torch import save_file

    tokenizer_path = Path(tokenizer_json)
    if not tokenizer_path.is_file():
        raise FileNotFoundError(f"tokenizer file not found: {tokenizer_path}")
    tokenizer = tokenizers.Tokenizer.from_file(str(tokenizer_path))
    hf_config, state = to_hf(model, labels=labels)
    if tokenizer.get_vocab_size() > hf_config.vocab_size:
        raise ValueError(
            f"tokenizer {tokenizer_path} has {tokenizer.get_vocab_size()} tokens but the model's "
            f"vocab_size is {hf_config.vocab_size}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf_config.save_pretrained(out)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    shutil.copyfile(tokenizer_path, out / "tokenizer.json")
    tok_config = _tokenizer_config(tokenizer, model.cfg.max_seq_len)
    (out / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")
    return out


def _read_state(model_dir: Path) -> dict[str, Tensor]:
    """model.safetensors, a sharded safetensors index, or pytorch_model.bin from a local directory."""
    from safetensors.torch import load_file

    single = model_dir / "model.safetensors"
    if single.is_file():
        return load_file(str(single))
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, Tensor] = {}
        for shard in shards:
            state.update(load_file(str(model_dir / shard)))
        return state
    pickle = model_dir / "pytorch_model.bin"
    if pickle.is_file():
        return torch.load(pickle, map_location="cpu", weights_only=True)
    raise FileNotFoundError(
        f"no weights in {model_dir}: expected model.safetensors, model.safetensors.index.json "
        "or pytorch_model.bin"
    )


def import_hf(
    model_dir: str | Path, *, task: str | None = "mlm", num_labels: int | None = None
) -> tuple[nn.Module, tokenizers.Tokenizer | None]:
    """Read a LOCAL HF model directory (never downloads) into a lit_tf model for ``task``.

    ``task``: "mlm", "seq_cls", "token_cls" (BERT family), or any task of ``TASKS``; None takes the
    checkpoint's own head. Returns (model, tokenizer from tokenizer.json or None). See ``from_hf``.
    The tokenizer comes with the file's own padding and truncation turned off, as every tokenizer
    lit_tf loads (``lit_tf.data.tokenizer.parse_tokenizer``): lengths are the caller's to set.
    """
    import tokenizers

    path = Path(model_dir)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"no config.json in {path} (import_hf reads local directories only)")
    hf_config = json.loads(config_file.read_text())
    if not hf_config.get("architectures"):
        raise ValueError(
            f"{config_file} has no 'architectures'; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    model = from_hf(hf_config, _read_state(path), task=task, num_labels=num_labels)
    tokenizer_file = path / "tokenizer.json"
    tokenizer = tokenizers.Tokenizer.from_file(str(tokenizer_file)) if tokenizer_file.is_file() else None
    if tokenizer is not None:
        tokenizer.no_padding()
        tokenizer.no_truncation()
    return model, tokenizer
