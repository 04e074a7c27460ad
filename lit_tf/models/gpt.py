"""GPT (Radford et al., 2018/2019): a pre-LayerNorm causal Transformer decoder with a tied LM head.

Read top to bottom: config -> block -> backbone -> init policy -> causal-LM model.
Shapes use B = batch, T = sequence length, C = d_model, V = vocab_size, H = heads, Dh = C // H.
The model returns logits at every position; the causal shift (logits at t score token t + 1)
happens in the objective, never here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lit_tf.models.layers import (
    ConfigMixin,
    Dropout,
    FeedForward,
    KVCache,
    MultiHeadAttention,
    count_parameters,
    linear_cross_entropy,
)
from lit_tf.models.outputs import CausalLMOutput, EncoderOutput


@dataclass
class GPTConfig(ConfigMixin):
    vocab_size: int  # number of tokens in the vocabulary (V)
    d_model: int = 256  # hidden size (C)
    n_layers: int = 4  # number of Transformer blocks
    n_heads: int = 4  # attention heads per block; must divide d_model
    d_ff: int = 1024  # inner size of the feed-forward MLP
    max_seq_len: int = 256  # number of learned position embeddings = longest context
    dropout: float = 0.1  # dropout on embeddings and on both residual branches
    attn_dropout: float = 0.1  # dropout on the attention probabilities
    layer_norm_eps: float = 1e-5  # epsilon of every LayerNorm (GPT-2's value)
    init_std: float = 0.02  # std of the normal init of Linear and Embedding weights
    pad_id: int = 0  # id used to pad batches; the model masks padding via attention_mask, not by id
    activation: str = "gelu_tanh"  # MLP activation: "gelu_tanh" (GPT-2's gelu_new) or "gelu" (erf)
    bias: bool = True  # biases in the Linear layers and LayerNorms (the LM head never has one)

    def __post_init__(self) -> None:
        self.validate(flags=("bias",))


class GPTBlock(nn.Module):
    """Pre-LN block: x = x + drop(attn(ln_1(x))); x = x + mlp(ln_2(x)). Attention is always causal."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, dropout=cfg.attn_dropout, bias=cfg.bias)
        self.resid_drop = Dropout(cfg.dropout)  # residual dropout on the attention branch
        self.ln_2 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps, bias=cfg.bias)
        # FeedForward ends with its own Dropout(cfg.dropout): that is the MLP branch's residual dropout.
        self.mlp = FeedForward(
            cfg.d_model, cfg.d_ff, dropout=cfg.dropout, activation=cfg.activation, bias=cfg.bias
        )

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """x (B, T, C); key_padding_mask (B, T) bool, True = real token."""
        x = x + self.resid_drop(self.attn(self.ln_1(x), key_padding_mask=key_padding_mask, is_causal=True))
        x = x + self.mlp(self.ln_2(x))  # (B, T, C)
        return x

    def forward_with_cache(self, x: Tensor, past_kv: KVCache | None = None) -> tuple[Tensor, KVCache]:
        """x (B, T_new, C) new positions; past_kv this block's cache or None -> (x, updated cache)."""
        h, kv = self.attn.forward_with_cache(self.ln_1(x), past_kv)  # (B, T_new, C)
        x = x + self.resid_drop(h)
        x = x + self.mlp(self.ln_2(x))  # (B, T_new, C)
        return x, kv


class GPTModel(nn.Module):
    """The GPT backbone: token + learned position embeddings, n_layers pre-LN blocks, final LayerNorm."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)  # token embeddings (tied to the LM head)
        self.wpe = nn.Embedding(cfg.max_seq_len, cfg.d_model)  # learned absolute positions
        self.drop = Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([GPTBlock(cfg) for _ in range(cfg.n_layers)])
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps, bias=cfg.bias)
        _init_gpt_weights(self, cfg)

    def _embed(self, input_ids: Tensor, position_ids: Tensor) -> Tensor:
        return self.drop(self.wte(input_ids) + self.wpe(position_ids))  # (B, T, C)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, position_ids: Tensor | None = None
    ) -> EncoderOutput:
        """input_ids (B, T) long; attention_mask (B, T) bool/int with 1 = real token, 0 = padding
        (default: all real); position_ids (B, T) long (default 0..T-1, right for right padding;
        pass them explicitly for left-padded batches)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
        T = input_ids.shape[1]
        if T > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {T} exceeds max_seq_len={self.cfg.max_seq_len}")
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device).unsqueeze(0)  # (1, T), broadcast over B
        key_padding_mask = None if attention_mask is None else attention_mask.bool()  # (B, T), True = real

        x = self._embed(input_ids, position_ids)  # (B, T, C)
        for block in self.blocks:
            x = block(x, key_padding_mask=key_padding_mask)  # (B, T, C)
        return EncoderOutput(hidden=self.ln_f(x))

    def forward_with_cache(
        self, input_ids: Tensor, past_kv: list[KVCache] | None = None
    ) -> tuple[Tensor, list[KVCache]]:
        """Incremental causal pass over new tokens input_ids (B, T_new), whose positions continue
        from the cache length. past_kv: one (k, v) per block, each (B, H, T_past, Dh), or None.
        Returns (hidden (B, T_new, C), the updated per-block caches). No padding support."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
        if past_kv is not None and len(past_kv) != len(self.blocks):
            raise ValueError(
                f"past_kv must hold one cache per block ({len(self.blocks)}), got {len(past_kv)}"
            )
        T_past = 0 if past_kv is None else past_kv[0][0].shape[2]
        T_new = input_ids.shape[1]
        if T_past + T_new > self.cfg.max_seq_len:
            raise ValueError(
                f"cached length {T_past} + new length {T_new} exceeds max_seq_len={self.cfg.max_seq_len}"
            )
        position_ids = torch.arange(T_past, T_past + T_new, device=input_ids.device)  # (T_new,)
        position_ids = position_ids.unsqueeze(0)  # (1, T_new), broadcast over B

        x = self._embed(input_ids, position_ids)  # (B, T_new, C)
        new_kv = []
        for i, block in enumerate(self.blocks):
            x, kv = block.forward_with_cache(x, None if past_kv is None else past_kv[i])  # (B, T_new, C)
            new_kv.append(kv)
        return self.ln_f(x), new_kv

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        return count_parameters(self, exclude_embeddings=exclude_embeddings)


def _init_gpt_weights(module: nn.Module, cfg: GPTConfig) -> None:
    """The single init policy: normal(0, init_std) Linear/Embedding weights, zero biases,
    LayerNorm = identity; then GPT-2's scaled residual init: every projection that writes into
    the residual stream (attention out_proj, MLP fc_out) gets std init_std / sqrt(2 * n_layers),
    since each of the 2 * n_layers residual branches adds to the same stream."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=cfg.init_std)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    residual_std = cfg.init_std / math.sqrt(2 * cfg.n_layers)
    for m in module.modules():
        if isinstance(m, GPTBlock):
            nn.init.normal_(m.attn.out_proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(m.mlp.fc_out.weight, mean=0.0, std=residual_std)


class GPTForCausalLM(nn.Module):
    """GPTModel + LM head whose weight is the token embedding matrix. Returns logits, never a loss."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.transformer = GPTModel(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied: same Parameter, (V, C)
        # Re-apply the same policy to the whole model so the head is covered too.
        _init_gpt_weights(self, cfg)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, position_ids: Tensor | None = None,
        targets: Tensor | None = None,
    ) -> CausalLMOutput:
        """See ``GPTModel.forward``. lm_logits[:, t] scores the token at t + 1.

        targets: optional (B, T) token ids, IGNORE (-100) where a position has no target. Then the
        head is fused into the loss (`linear_cross_entropy`): the output carries ``nll`` (and, in
        eval mode, ``hits``) for those targets and no logits; the caller aligns targets to
        positions (for next-token prediction, targets[:, t] = input_ids[:, t + 1])."""
        hidden = self.transformer(input_ids, attention_mask=attention_mask, position_ids=position_ids).hidden
        if targets is None:
            return CausalLMOutput(hidden=hidden, lm_logits=self.lm_head(hidden))  # (B, T, C), (B, T, V)
        flat_h, flat_t = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)  # (B*T, C), (B*T,)
        nll, hits = linear_cross_entropy(flat_h, self.lm_head.weight, flat_t, count_hits=not self.training)
        return CausalLMOutput(hidden=hidden, lm_logits=None, nll=nll, hits=hits)

    def forward_with_cache(
        self, input_ids: Tensor, past_kv: list[KVCache] | None = None
    ) -> tuple[Tensor, list[KVCache]]:
        """Incremental decoding: input_ids (B, T_new) -> (logits (B, T_new, V), updated caches).
        See ``GPTModel.forward_with_cache``."""
        hidden, new_kv = self.transformer.forward_with_cache(input_ids, past_kv)  # (B, T_new, C)
        return self.lm_head(hidden), new_kv

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Tied weights count once; exclude_embeddings drops wte (= lm_head) and wpe."""
        return count_parameters(self, exclude_embeddings=exclude_embeddings)
