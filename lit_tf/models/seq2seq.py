"""An encoder-decoder Transformer for translation (Vaswani et al., 2017), laid out like BART / MBart
(Lewis et al., 2020; Liu et al., 2020) so it exports to HF, and warm-startable from an XLM
(Conneau & Lample, 2019).

Read top to bottom: config -> blocks (encoder, decoder) -> stacks -> init policy -> model (full
forward; incremental decoding on KV caches) -> warm start from XLM.

Both stacks embed the same way: token embedding + learned position (0 .. T-1) [+ the language
embedding of the side's fixed language when ``n_langs > 0``] -> LayerNorm ("layernorm_embedding")
-> dropout, without sqrt(C) scaling. ``pre_ln=True`` (MBart): each sub-layer is
``x = x + drop(sub(LN(x)))`` and each stack ends with a LayerNorm; ``pre_ln=False`` (BART, XLM):
``x = LN(x + drop(sub(x)))`` and no final LayerNorm. An encoder block is self-attention (source
padding masked) + FFN; a decoder block is causal self-attention + cross-attention over the encoder
output + FFN. The output layer is the target token embedding (tied) plus ``final_logits_bias``.
The model returns logits, never a loss (the translation objective scores them).

Shapes: B = batch, S = source length, T = target (decoder input) length, C = d_model, H = heads,
Dh = C // H, V = source vocabulary, V_tgt = target vocabulary (= V when shared), N = number of
selected target positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_tf.models.bert import _init_bert_weights
from lit_tf.models.layers import (
    ConfigMixin,
    Dropout,
    FeedForward,
    KVCache,
    MultiHeadAttention,
    count_parameters,
    select_positions,
)
from lit_tf.models.outputs import Seq2SeqOutput
from lit_tf.models.xlm import XLMConfig, XLMForPreTraining, XLMModel


@dataclass
class Seq2SeqConfig(ConfigMixin):
    vocab_size: int  # source vocabulary (V); also the target's unless tgt_vocab_size is set
    # a separate target vocabulary (V_tgt); None: shared, one embedding for the encoder input, the
    # decoder input and the output layer
    tgt_vocab_size: int | None = None
    d_model: int = 256  # hidden size (C)
    n_layers: int = 4  # encoder blocks
    n_decoder_layers: int | None = None  # decoder blocks; None: n_layers
    n_heads: int = 4  # attention heads per attention layer; must divide d_model
    d_ff: int = 1024  # inner size of the feed-forward MLPs
    max_seq_len: int = 256  # learned positions per side = longest source and longest decoder input
    dropout: float = 0.1  # dropout on embeddings and on every residual branch
    attn_dropout: float = 0.1  # dropout on the attention probabilities
    pre_ln: bool = True  # pre-LN blocks + a final LayerNorm per stack (MBart); False: post-LN (BART, XLM)
    n_langs: int = 0  # > 0: learned language embeddings (an XLM warm start); 0: none
    src_lang_id: int = 0  # the language id added to every source token when n_langs > 0
    tgt_lang_id: int = 0  # the language id added to every target token when n_langs > 0
    layer_norm_eps: float = 1e-5  # epsilon of every LayerNorm
    init_std: float = 0.02  # std of the normal init of Linear and Embedding weights
    pad_id: int = 0  # padding id (both vocabularies); its embedding rows are zero-initialised
    bos_id: int = 2  # decoder start token ([CLS] in lit_tf tokenizers)
    eos_id: int = 3  # end of sentence ([SEP]): decoding stops when it is produced
    activation: str = "gelu"  # feed-forward activation: "gelu" (erf) or "gelu_tanh"

    def __post_init__(self) -> None:
        self.validate(flags=("pre_ln",))
        name = type(self).__name__
        for f in ("tgt_vocab_size", "n_decoder_layers"):
            value = getattr(self, f)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise ValueError(f"{name}.{f} must be a positive int or None, got {value!r}")
        if not isinstance(self.n_langs, int) or isinstance(self.n_langs, bool) or self.n_langs < 0:
            raise ValueError(f"{name}.n_langs must be an int >= 0 (0: no language embeddings), got {self.n_langs!r}")
        for f in ("src_lang_id", "tgt_lang_id"):
            value = getattr(self, f)
            if self.n_langs > 0 and not (isinstance(value, int) and 0 <= value < self.n_langs):
                raise ValueError(f"{name}.{f} must be in [0, n_langs={self.n_langs}), got {value!r}")
            if self.n_langs == 0 and value != 0:
                raise ValueError(f"{name}.{f}={value!r} needs language embeddings (n_langs > 0); "
                                 "with n_langs=0 it must be 0")
        for f in ("pad_id", "bos_id", "eos_id"):
            value = getattr(self, f)
            if not (isinstance(value, int) and 0 <= value < self.target_vocab_size):
                raise ValueError(f"{name}.{f} must be in [0, target vocabulary size={self.target_vocab_size}), "
                                 f"got {value!r}")

    @property
    def target_vocab_size(self) -> int:
        """V_tgt: tgt_vocab_size, or vocab_size when the vocabulary is shared."""
        return self.vocab_size if self.tgt_vocab_size is None else self.tgt_vocab_size

    @property
    def decoder_layers(self) -> int:
        return self.n_layers if self.n_decoder_layers is None else self.n_decoder_layers

    @classmethod
    def from_xlm(cls, xlm_cfg: XLMConfig, **overrides: Any) -> Seq2SeqConfig:
        """The config of an encoder-decoder warm-started from an XLM with config ``xlm_cfg`` (see
        `init_from_xlm`): the XLM's shapes, vocabulary, positions, language count, LayerNorm eps,
        init std, pad id and activation, post-LN blocks (``pre_ln=False``, XLM's layout) and as many
        decoder as encoder blocks. ``overrides`` set the rest (src_lang_id, tgt_lang_id, dropout,
        attn_dropout, bos_id, eos_id, ...). An XLM without language embeddings gives n_langs=0,
        and then src_lang_id / tgt_lang_id are ignored (0)."""
        n_langs = xlm_cfg.n_langs if xlm_cfg.use_lang_emb else 0
        fields: dict[str, Any] = {
            name: getattr(xlm_cfg, name)
            for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_seq_len", "dropout",
                         "attn_dropout", "layer_norm_eps", "init_std", "pad_id", "activation")
        }
        fields.update(pre_ln=False, n_langs=n_langs)
        fields.update(overrides)
        if n_langs == 0 and fields.get("n_langs") == 0:
            fields.update(src_lang_id=0, tgt_lang_id=0)
        return cls(**fields)


# ----------------------------------------------------------------------------- blocks


class Seq2SeqBlock(nn.Module):
    """What the encoder and decoder blocks share: self-attention and FFN sub-layers, each with its
    LayerNorm, placed pre- or post-LN. Both blocks subclass it, so ``isinstance(m, Seq2SeqBlock)``
    finds every block (the family's unit of FSDP wrapping and activation checkpointing)."""

    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        self.pre_ln = cfg.pre_ln
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, dropout=cfg.attn_dropout)
        self.self_attn_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        # FeedForward ends with its own Dropout(cfg.dropout): the FFN branch's residual dropout.
        self.ffn = FeedForward(cfg.d_model, cfg.d_ff, dropout=cfg.dropout, activation=cfg.activation)
        self.ffn_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.drop = Dropout(cfg.dropout)  # residual dropout on the attention branches

    def _branch_in(self, x: Tensor, norm: nn.LayerNorm) -> Tensor:
        """A sub-layer's input: LN(x) pre-LN, x post-LN."""
        return norm(x) if self.pre_ln else x

    def _branch_out(self, x: Tensor, y: Tensor, norm: nn.LayerNorm) -> Tensor:
        """The residual sum with a sub-layer's (dropped-out) output y: x + y pre-LN, LN(x + y) post-LN."""
        return x + y if self.pre_ln else norm(x + y)

    def _ffn(self, x: Tensor) -> Tensor:
        return self._branch_out(x, self.ffn(self._branch_in(x, self.ffn_norm)), self.ffn_norm)  # (B, T, C)


class EncoderBlock(Seq2SeqBlock):
    """Self-attention over the source (padding masked) + FFN."""

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """x (B, S, C); key_padding_mask (B, S) bool, True = real token -> (B, S, C)."""
        h = self.self_attn(self._branch_in(x, self.self_attn_norm), key_padding_mask=key_padding_mask)
        x = self._branch_out(x, self.drop(h), self.self_attn_norm)  # (B, S, C)
        return self._ffn(x)


class DecoderBlock(Seq2SeqBlock):
    """Causal self-attention + cross-attention over the encoder output + FFN.

    ``forward`` (the whole target) projects the encoder output's keys/values itself;
    ``forward_with_cache`` (incremental decoding) takes them projected once per source
    (`Seq2SeqModel.cross_kv`), so decoding steps never re-project the encoder output."""

    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__(cfg)
        self.cross_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, dropout=cfg.attn_dropout)
        self.cross_attn_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)

    def _cross(self, x: Tensor, memory_kv: KVCache, src_mask: Tensor | None) -> Tensor:
        h = self.cross_attn.attend_kv(self._branch_in(x, self.cross_attn_norm), memory_kv, key_padding_mask=src_mask)
        return self._branch_out(x, self.drop(h), self.cross_attn_norm)  # (B, T, C)

    def forward(self, x: Tensor, memory: Tensor, src_mask: Tensor | None = None,
                tgt_mask: Tensor | None = None) -> Tensor:
        """x (B, T, C) the whole target; memory (B, S, C) the encoder output; src_mask (B, S) /
        tgt_mask (B, T) bool, True = real token -> (B, T, C). The cross-attention keys/values are
        projected here, inside the block's forward, so a wrapper around the block (FSDP, activation
        checkpointing) covers them."""
        h = self.self_attn(self._branch_in(x, self.self_attn_norm), key_padding_mask=tgt_mask, is_causal=True)
        x = self._branch_out(x, self.drop(h), self.self_attn_norm)  # (B, T, C)
        return self._ffn(self._cross(x, self.cross_attn.project_kv(memory), src_mask))

    def forward_with_cache(self, x: Tensor, memory_kv: KVCache, src_mask: Tensor | None,
                           past_kv: KVCache | None) -> tuple[Tensor, KVCache]:
        """x (B, T_new, C) the new target positions; past_kv this block's self-attention cache
        (each (B, H, T_past, Dh)) or None -> (x (B, T_new, C), the updated cache)."""
        h, kv = self.self_attn.forward_with_cache(self._branch_in(x, self.self_attn_norm), past_kv)
        x = self._branch_out(x, self.drop(h), self.self_attn_norm)  # (B, T_new, C)
        return self._ffn(self._cross(x, memory_kv, src_mask)), kv


class Seq2SeqStack(nn.Module):
    """One side (encoder or decoder): its learned positions, embedding LayerNorm, blocks and (pre-LN)
    final LayerNorm. The token and language tables live on the model: the sides share them."""

    def __init__(self, cfg: Seq2SeqConfig, block: type[Seq2SeqBlock], n_blocks: int):
        super().__init__()
        self.embed_positions = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        self.layernorm_embedding = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.drop = Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([block(cfg) for _ in range(n_blocks)])
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps) if cfg.pre_ln else None

    def embed(self, tokens: Tensor, start: int, lang: Tensor | None) -> Tensor:
        """tokens (B, T, C) token embeddings at positions start .. start+T-1; lang (C,) or None -> (B, T, C)."""
        positions = torch.arange(start, start + tokens.shape[1], device=tokens.device)  # (T,)
        x = tokens + self.embed_positions(positions)  # (B, T, C) + (T, C)
        if lang is not None:
            x = x + lang  # (B, T, C) + (C,)
        return self.drop(self.layernorm_embedding(x))

    def finish(self, x: Tensor) -> Tensor:
        return x if self.norm is None else self.norm(x)


def select_cache(cache: list[KVCache], index: Tensor) -> list[KVCache]:
    """Rows ``index`` (a 1-D long tensor) of every (k, v) in ``cache`` (batch dim 0): beam search's
    reorder (a row may be taken several times) and the expansion of a source's keys/values to its beams."""
    return [(k.index_select(0, index), v.index_select(0, index)) for k, v in cache]


# ----------------------------------------------------------------------------- model


class Seq2SeqModel(nn.Module):
    """The encoder-decoder with its tied output layer; see the module docstring for the layout.

    ``forward`` runs the whole target at once (training); ``encode`` + ``cross_kv`` + ``decode_step``
    decode incrementally on KV caches (`lit_tf.models.decoding`)."""

    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        self.cfg = cfg
        C = cfg.d_model
        self.embed_tokens = nn.Embedding(cfg.vocab_size, C, padding_idx=cfg.pad_id)  # source (and shared) tokens
        # the target's own table when the vocabularies are separate; None: embed_tokens serves both
        self.decoder_embed_tokens = (
            nn.Embedding(cfg.tgt_vocab_size, C, padding_idx=cfg.pad_id) if cfg.tgt_vocab_size is not None else None
        )
        self.lang_embeddings = nn.Embedding(cfg.n_langs, C) if cfg.n_langs > 0 else None  # shared by both sides
        self.encoder = Seq2SeqStack(cfg, EncoderBlock, cfg.n_layers)
        self.decoder = Seq2SeqStack(cfg, DecoderBlock, cfg.decoder_layers)
        self.final_logits_bias = nn.Parameter(torch.zeros(cfg.target_vocab_size))  # (V_tgt,)
        _init_weights(self, cfg)

    @property
    def target_embeddings(self) -> nn.Embedding:
        """The decoder's token table, which is also the output layer's weight."""
        return self.embed_tokens if self.decoder_embed_tokens is None else self.decoder_embed_tokens

    def _lang(self, lang_id: int) -> Tensor | None:
        return None if self.lang_embeddings is None else self.lang_embeddings.weight[lang_id]  # (C,)

    def _check_ids(self, ids: Tensor, what: str, start: int = 0) -> None:
        if ids.dim() != 2:
            raise ValueError(f"{what} must be (B, T), got shape {tuple(ids.shape)}")
        if start + ids.shape[1] > self.cfg.max_seq_len:
            raise ValueError(f"{what}: length {start + ids.shape[1]} exceeds max_seq_len={self.cfg.max_seq_len}")

    def project(self, hidden: Tensor) -> Tensor:
        """Decoder hidden states (..., C) -> logits (..., V_tgt) (tied output layer + final_logits_bias)."""
        return F.linear(hidden, self.target_embeddings.weight, self.final_logits_bias)

    # ------------------------------------------------------------------ encoder
    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """input_ids (B, S) long; attention_mask (B, S) bool/int, 1 = real token, 0 = padding
        (default: all real) -> the encoder output (B, S, C)."""
        self._check_ids(input_ids, "input_ids")
        mask = None if attention_mask is None else attention_mask.bool()  # (B, S)
        x = self.encoder.embed(self.embed_tokens(input_ids), 0, self._lang(self.cfg.src_lang_id))  # (B, S, C)
        for block in self.encoder.blocks:
            x = block(x, key_padding_mask=mask)  # (B, S, C)
        return self.encoder.finish(x)

    def cross_kv(self, memory: Tensor) -> list[KVCache]:
        """Every decoder block's cross-attention keys/values of the encoder output ``memory``
        (B, S, C): one (k, v) per block, each (B, H, S, Dh). Computed once per source."""
        return [block.cross_attn.project_kv(memory) for block in self.decoder.blocks]

    # ------------------------------------------------------------------ full forward
    def forward(
        self,
        input_ids: Tensor,
        decoder_input_ids: Tensor,
        attention_mask: Tensor | None = None,
        decoder_attention_mask: Tensor | None = None,
        target_positions: Tensor | None = None,
    ) -> Seq2SeqOutput:
        """input_ids (B, S) the source; decoder_input_ids (B, T) the target shifted right (starting
        at bos); attention_mask (B, S) / decoder_attention_mask (B, T) bool/int, 1 = real token
        (default: all real); target_positions: optional (B, T) bool mask or flat indices
        (`select_positions`) of the positions to score: lm_logits is then (N, V_tgt), rows in row-major
        order, instead of (B, T, V_tgt). lm_logits[:, t] scores the target token after decoder input t."""
        self._check_ids(decoder_input_ids, "decoder_input_ids")
        if decoder_input_ids.shape[0] != input_ids.shape[0]:
            raise ValueError(f"input_ids and decoder_input_ids must have the same batch size, got "
                             f"{input_ids.shape[0]} and {decoder_input_ids.shape[0]}")
        src_mask = None if attention_mask is None else attention_mask.bool()  # (B, S)
        tgt_mask = None if decoder_attention_mask is None else decoder_attention_mask.bool()  # (B, T)
        memory = self.encode(input_ids, src_mask)  # (B, S, C)

        x = self.decoder.embed(self.target_embeddings(decoder_input_ids), 0, self._lang(self.cfg.tgt_lang_id))
        for block in self.decoder.blocks:
            x = block(x, memory, src_mask=src_mask, tgt_mask=tgt_mask)  # (B, T, C)
        hidden = self.decoder.finish(x)  # (B, T, C)
        selected = hidden if target_positions is None else select_positions(hidden, target_positions)  # (N, C)
        return Seq2SeqOutput(hidden=hidden, lm_logits=self.project(selected), encoder_hidden=memory)

    # ------------------------------------------------------------------ incremental decoding
    def decode_step(
        self,
        new_ids: Tensor,
        memory_kv: list[KVCache],
        src_mask: Tensor | None = None,
        past: list[KVCache] | None = None,
    ) -> tuple[Tensor, list[KVCache]]:
        """Decode new target tokens new_ids (B, t_new), whose positions continue from the cache
        length, against the source's cross-attention keys/values ``memory_kv`` (`cross_kv`, rows
        matching new_ids' rows) and its padding mask src_mask (B, S). past: one self-attention
        (k, v) per decoder block, each (B, H, T_past, Dh), or None at the start.
        Returns (logits (B, t_new, V_tgt), the updated caches). No target padding."""
        n = len(self.decoder.blocks)
        if len(memory_kv) != n or (past is not None and len(past) != n):
            raise ValueError(f"memory_kv and past must hold one entry per decoder block ({n}), got "
                             f"{len(memory_kv)} and {None if past is None else len(past)}")
        T_past = 0 if past is None else past[0][0].shape[2]
        self._check_ids(new_ids, "new_ids", start=T_past)
        mask = None if src_mask is None else src_mask.bool()  # (B, S)
        x = self.decoder.embed(self.target_embeddings(new_ids), T_past, self._lang(self.cfg.tgt_lang_id))
        new_past = []
        for i, block in enumerate(self.decoder.blocks):
            x, kv = block.forward_with_cache(x, memory_kv[i], mask, None if past is None else past[i])  # (B, t_new, C)
            new_past.append(kv)
        return self.project(self.decoder.finish(x)), new_past

    @staticmethod
    def reorder_cache(cache: list[KVCache], index: Tensor) -> list[KVCache]:
        """Rows ``index`` of every cache entry (`select_cache`), e.g. the surviving beams' parents."""
        return select_cache(cache, index)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Shared tables count once; exclude_embeddings drops every nn.Embedding (tokens, positions,
        languages; the tied output layer with them)."""
        return count_parameters(self, exclude_embeddings=exclude_embeddings)


def _init_weights(model: Seq2SeqModel, cfg: Seq2SeqConfig) -> None:
    """The single init policy is BERT's (it reads only ``init_std``): normal(0, init_std) Linear and
    Embedding weights, zero biases, identity LayerNorms, zeroed padding rows; final_logits_bias 0."""
    _init_bert_weights(model, cfg)  # type: ignore[arg-type]
    nn.init.zeros_(model.final_logits_bias)


# ----------------------------------------------------------------------------- warm start from XLM


def _block_pairs(ours: str, theirs: str) -> list[tuple[str, str]]:
    """(our parameter, XLM parameter) names of one block's self-attention, FFN and their LayerNorms
    (XLM's block is BERT's: attn, attn_norm, ffn, ffn_norm)."""
    modules = [*((f"self_attn.{p}", f"attn.{p}") for p in ("q_proj", "k_proj", "v_proj", "out_proj")),
               ("self_attn_norm", "attn_norm"), ("ffn.fc_in", "ffn.fc_in"), ("ffn.fc_out", "ffn.fc_out"),
               ("ffn_norm", "ffn_norm")]
    return [(f"{ours}{o}.{w}", f"{theirs}{t}.{w}") for o, t in modules for w in ("weight", "bias")]


def _check_warm_start_config(cfg: Seq2SeqConfig, xcfg: XLMConfig) -> None:
    """Config-level mismatches, each naming the field (before any tensor is looked at)."""
    def fail(field: str, ours: Any, theirs: Any, why: str = "") -> None:
        raise ValueError(f"init_from_xlm: Seq2SeqConfig.{field}={ours!r} does not fit the XLM's {theirs}"
                         + (f" ({why})" if why else ""))

    for f in ("vocab_size", "d_model", "n_heads", "d_ff", "max_seq_len", "activation"):
        if getattr(cfg, f) != getattr(xcfg, f):
            fail(f, getattr(cfg, f), f"{f}={getattr(xcfg, f)!r}")
    if cfg.tgt_vocab_size is not None and cfg.tgt_vocab_size != xcfg.vocab_size:
        fail("tgt_vocab_size", cfg.tgt_vocab_size, f"vocab_size={xcfg.vocab_size}", "the target table is copied too")
    if cfg.pre_ln:
        fail("pre_ln", cfg.pre_ln, "post-LN blocks", "use pre_ln=False, as Seq2SeqConfig.from_xlm does")
    if cfg.n_layers > xcfg.n_layers:
        fail("n_layers", cfg.n_layers, f"n_layers={xcfg.n_layers}", "every encoder block needs an XLM block")
    if cfg.decoder_layers > xcfg.n_layers:
        fail("n_decoder_layers", cfg.decoder_layers, f"n_layers={xcfg.n_layers}",
             "every decoder block needs an XLM block")
    xlm_langs = xcfg.n_langs if xcfg.use_lang_emb else 0
    if cfg.n_langs != xlm_langs:
        fail("n_langs", cfg.n_langs, f"{xlm_langs} language embeddings")


def init_from_xlm(model: Seq2SeqModel, xlm: XLMForPreTraining | XLMModel) -> dict[str, list[str]]:
    """Warm-start ``model`` from a pretrained XLM, in place (XLM paper, Conneau & Lample 2019, sec. 5.2):

    - token embeddings (and the separate target table, if any), positions into both stacks' tables,
      language embeddings, and the embedding LayerNorm into both stacks;
    - encoder block i <- XLM block i;
    - decoder block i: self-attention + its LayerNorm and FFN + its LayerNorm <- XLM block i;
      cross-attention and its LayerNorm keep their fresh init;
    - final_logits_bias <- the XLM LM head's output bias (its dense + LayerNorm transform is not used;
      nothing when ``xlm`` is a bare ``XLMModel``).

    The model must be post-LN with the XLM's shapes (`Seq2SeqConfig.from_xlm`); a mismatch raises a
    ValueError naming the config field (or the tensor and both shapes). Returns {"copied": our
    parameter names loaded from the XLM, "fresh": those left as initialised}."""
    if isinstance(xlm, XLMForPreTraining):
        xcfg, base, head_bias = xlm.cfg, "xlm.", "lm_head.bias"
    elif isinstance(xlm, XLMModel):
        xcfg, base, head_bias = xlm.cfg, "", None
    else:
        raise TypeError(f"init_from_xlm needs an XLMForPreTraining or XLMModel, got {type(xlm).__name__}")
    cfg = model.cfg
    _check_warm_start_config(cfg, xcfg)

    e = f"{base}embeddings."
    pairs = [("embed_tokens.weight", f"{e}word_embeddings.weight")]
    if model.decoder_embed_tokens is not None:
        pairs.append(("decoder_embed_tokens.weight", f"{e}word_embeddings.weight"))
    if model.lang_embeddings is not None:
        pairs.append(("lang_embeddings.weight", f"{e}lang_embeddings.weight"))
    for side in ("encoder", "decoder"):
        pairs += [(f"{side}.embed_positions.weight", f"{e}position_embeddings.weight"),
                  (f"{side}.layernorm_embedding.weight", f"{e}norm.weight"),
                  (f"{side}.layernorm_embedding.bias", f"{e}norm.bias")]
    for i in range(cfg.n_layers):
        pairs += _block_pairs(f"encoder.blocks.{i}.", f"{base}blocks.{i}.")
    for i in range(cfg.decoder_layers):
        pairs += _block_pairs(f"decoder.blocks.{i}.", f"{base}blocks.{i}.")
    if head_bias is not None:
        pairs.append(("final_logits_bias", head_bias))

    ours = dict(model.named_parameters())
    theirs = dict(xlm.named_parameters())
    for o, t in pairs:  # every shape first: a failure leaves the model untouched
        if ours[o].shape != theirs[t].shape:
            raise ValueError(f"init_from_xlm: {o} has shape {tuple(ours[o].shape)} but the XLM's {t} has "
                             f"{tuple(theirs[t].shape)}")
    with torch.no_grad():
        for o, t in pairs:
            ours[o].copy_(theirs[t])
    copied = {o for o, _ in pairs}
    return {"copied": [o for o in ours if o in copied], "fresh": [o for o in ours if o not in copied]}
