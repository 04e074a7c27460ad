"""Transformer building blocks shared by the model families (BERT now; GPT and XLM later).

Everything here is plain PyTorch. Shapes use B = batch, T = sequence length, C = d_model,
H = number of heads, Dh = C // H (head size).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Activation names accepted by FeedForward (and by model configs that pass them through).
ACTIVATIONS = ("gelu", "gelu_tanh")

# A cache entry for one attention layer: (keys, values), each (B, H, T_total, Dh).
KVCache = tuple[Tensor, Tensor]


def make_activation(name: str) -> nn.Module:
    """Return the activation module for ``name``: "gelu" (exact, erf) or "gelu_tanh" (GPT-2's gelu_new)."""
    if name == "gelu":
        return nn.GELU()
    if name == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}")


def count_parameters(module: nn.Module, exclude_embeddings: bool = False) -> int:
    """Number of parameters in ``module``, each shared (tied) tensor counted once.

    With ``exclude_embeddings=True`` the weights of every ``nn.Embedding`` are left out
    (including any output projection tied to one of them).
    """
    skip = set()
    if exclude_embeddings:
        skip = {id(m.weight) for m in module.modules() if isinstance(m, nn.Embedding)}
    # module.parameters() already yields each Parameter object once, so tied weights count once.
    return sum(p.numel() for p in module.parameters() if id(p) not in skip)


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention with separate q/k/v/out projections.

    ``forward`` is for encoders and full-sequence (training) passes; ``forward_with_cache``
    is for incremental causal decoding with a key/value cache.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model = d_model
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.dropout = dropout  # dropout on the attention probabilities
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def _split_heads(self, x: Tensor) -> Tensor:
        B, T, _ = x.shape
        x = x.view(B, T, self.n_heads, self.head_dim)  # (B, T, H, Dh)
        return x.transpose(1, 2)  # (B, H, T, Dh)

    def _merge_heads(self, y: Tensor) -> Tensor:
        B, H, T, Dh = y.shape
        y = y.transpose(1, 2)  # (B, T, H, Dh)
        return y.contiguous().view(B, T, H * Dh)  # (B, T, C)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool) -> Tensor:
        """SDPA over (B, H, T_q, Dh) queries and (B, H, T_k, Dh) keys/values -> (B, T_q, C).

        ``mask`` is boolean, True = may attend, broadcastable to (B, H, T_q, T_k).
        """
        if mask is not None:
            # A query row that may attend to no key at all (e.g. a sequence made only of
            # padding) would give softmax over nothing = NaN. Let such rows attend to every
            # key instead: their output is meaningless but finite, and rows with at least one
            # visible key are untouched.
            mask = mask | ~mask.any(dim=-1, keepdim=True)
        dropout_p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal)
        return self.out_proj(self._merge_heads(y))  # (B, T_q, C)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        """Self-attention over ``x`` (B, T, C) -> (B, T, C).

        key_padding_mask: optional (B, T) bool, True = real token, False = padding (never attended to).
        is_causal: if True, position t attends only to positions <= t.
        """
        B, T, _ = x.shape
        q = self._split_heads(self.q_proj(x))  # (B, H, T, Dh)
        k = self._split_heads(self.k_proj(x))  # (B, H, T, Dh)
        v = self._split_heads(self.v_proj(x))  # (B, H, T, Dh)

        if key_padding_mask is None:
            return self._attend(q, k, v, mask=None, is_causal=is_causal)

        mask = key_padding_mask.bool().view(B, 1, 1, T)  # (B, 1, 1, T_k)
        if is_causal:
            # SDPA does not take attn_mask and is_causal together: fold causality into the mask.
            causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # (T_q, T_k)
            mask = mask & causal  # (B, 1, T_q, T_k)
        return self._attend(q, k, v, mask=mask, is_causal=False)

    def forward_with_cache(self, x: Tensor, past_kv: KVCache | None = None) -> tuple[Tensor, KVCache]:
        """Causal self-attention for incremental decoding.

        x: (B, T_new, C), the new tokens. past_kv: keys/values of the earlier tokens, each
        (B, H, T_past, Dh), or None at the start. Each new token attends to all past tokens and
        to the new tokens up to and including itself.
        Returns (out (B, T_new, C), (k, v)) with k, v (B, H, T_past + T_new, Dh) to pass next time.
        """
        T_new = x.shape[1]
        q = self._split_heads(self.q_proj(x))  # (B, H, T_new, Dh)
        k = self._split_heads(self.k_proj(x))  # (B, H, T_new, Dh)
        v = self._split_heads(self.v_proj(x))  # (B, H, T_new, Dh)

        if past_kv is None:
            out = self._attend(q, k, v, mask=None, is_causal=T_new > 1)
            return out, (k, v)

        past_k, past_v = past_kv
        T_past = past_k.shape[2]
        k = torch.cat([past_k, k], dim=2)  # (B, H, T_past + T_new, Dh)
        v = torch.cat([past_v, v], dim=2)  # (B, H, T_past + T_new, Dh)
        mask = None
        if T_new > 1:
            # New token i sits at absolute position T_past + i and sees keys 0 .. T_past + i.
            # (SDPA's is_causal aligns to the top-left corner, which is wrong when T_q != T_k.)
            mask = torch.ones(T_new, T_past + T_new, dtype=torch.bool, device=x.device)  # (T_new, T_total)
            mask = mask.tril(diagonal=T_past)
        out = self._attend(q, k, v, mask=mask, is_causal=False)
        return out, (k, v)


class FeedForward(nn.Module):
    """Position-wise MLP: Linear(C, d_ff) -> activation -> Linear(d_ff, C) -> dropout."""

    def __init__(
        self, d_model: int, d_ff: int, dropout: float = 0.0, activation: str = "gelu", bias: bool = True
    ):
        super().__init__()
        self.fc_in = nn.Linear(d_model, d_ff, bias=bias)
        self.act = make_activation(activation)
        self.fc_out = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        # (..., C) -> (..., d_ff) -> (..., C)
        return self.dropout(self.fc_out(self.act(self.fc_in(x))))


class ConfigMixin:
    """Validation and dict round-trip shared by every family's config dataclass.

    A family's `__post_init__` calls `self.validate(positive=(...), flags=(...))` for the checks
    all Transformer configs share, then adds its own.
    """

    def validate(self, positive: tuple[str, ...] = (), flags: tuple[str, ...] = ()) -> None:
        name = type(self).__name__
        for f in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_seq_len", *positive):
            value = getattr(self, f)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name}.{f} must be a positive int, got {value!r}")
        if self.d_model % self.n_heads != 0:
            raise ValueError(f"{name}.d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        for f in ("dropout", "attn_dropout"):
            value = getattr(self, f)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name}.{f} must be in [0, 1), got {value!r}")
        for f in ("layer_norm_eps", "init_std"):
            value = getattr(self, f)
            if not value > 0:
                raise ValueError(f"{name}.{f} must be > 0, got {value!r}")
        for f in flags:
            if not isinstance(getattr(self, f), bool):
                raise TypeError(f"{name}.{f} must be a bool, got {getattr(self, f)!r}")
        if not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(f"{name}.pad_id must be in [0, vocab_size={self.vocab_size}), got {self.pad_id}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"{name}.activation must be one of {ACTIVATIONS}, got {self.activation!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """Build a config from a plain dict; unknown keys are an error, not silently dropped."""
        fields = dataclasses.fields(cls)
        valid = [f.name for f in fields]
        for key in d:
            if key not in valid:
                raise ValueError(
                    f"unknown {cls.__name__} field {key!r}; valid fields are: {', '.join(valid)}"
                )
        missing = [f.name for f in fields if f.default is dataclasses.MISSING and f.name not in d]
        if missing:
            raise ValueError(f"{cls.__name__} is missing required field(s): {', '.join(missing)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
