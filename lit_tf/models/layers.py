"""Transformer building blocks shared by the model families (BERT now; GPT and XLM later).

Everything here is plain PyTorch. Shapes use B = batch, T = sequence length, C = d_model,
H = number of heads, Dh = C // H (head size).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Activation names accepted by FeedForward (and by model configs that pass them through).
ACTIVATIONS = ("gelu", "gelu_tanh")

# A cache entry for one attention layer: (keys, values), each (B, H, T_total, Dh).
KVCache = tuple[Tensor, Tensor]


# ----------------------------------------------------------------------------- kernel choices
@dataclasses.dataclass
class Kernels:
    """Process-wide kernel choices, like ``torch.backends`` flags: they change speed, never the
    model's parameters or what it computes (beyond fp rounding and which random draws dropout makes).
    lit_tf sets them from the run config's ``speed`` block (`set_kernels`)."""

    # CPU dropout masks from 16-bit slices of 64-bit random draws (numpy's PCG64DXSM, seeded from
    # torch's generator): ~6x fewer generator nanoseconds than torch's bernoulli; p is quantised to
    # 1/65536 (`keep_mask`). GPU: torch's own.
    fast_dropout: bool = True
    # "auto": on CPU, attention with dropout runs as explicit matmul-softmax-dropout-matmul (SDPA's
    # CPU dropout path is several times slower); everything else, and every GPU pass, uses SDPA
    # (flash / memory-efficient kernels). "sdpa" / "math": always that path.
    attention: str = "auto"


KERNELS = Kernels()
ATTENTION_PATHS = ("auto", "sdpa", "math")


def set_kernels(fast_dropout: bool | None = None, attention: str | None = None) -> Kernels:
    """Set the process-wide kernel choices (None keeps a value); returns them."""
    if attention is not None:
        if attention not in ATTENTION_PATHS:
            raise ValueError(f"speed.attention must be one of {ATTENTION_PATHS}, got {attention!r}")
        KERNELS.attention = attention
    if fast_dropout is not None:
        KERNELS.fast_dropout = bool(fast_dropout)
    return KERNELS


def keep_mask(shape: tuple[int, ...] | torch.Size, p: float, dtype: torch.dtype = torch.float32
              ) -> tuple[Tensor, float]:
    """A CPU dropout keep-mask (``shape``, 1 = keep, 0 = drop, in ``dtype``) and the drop
    probability it really has.

    Each element gets 16 random bits and is dropped when they fall below round(p * 2^16):
    P(drop) = that / 2^16, within 2^-17 of p. The bits come four to a 64-bit draw of numpy's
    PCG64DXSM, seeded from one draw of torch's global generator, so ``torch.manual_seed`` and a
    checkpoint's RNG state determine every mask (resume replays them), while the bulk draws run
    at ~1.4 ns each instead of the ~3.5 ns of torch's CPU generator (mt19937). The comparison
    writes the mask straight in ``dtype``: a bool mask would be converted to the activations'
    dtype again by every multiply that applies it."""
    n = math.prod(shape)
    threshold = min(round(p * 65536), 65535)
    seed = int(torch.randint(-(2**63), 2**63 - 1, (), dtype=torch.int64)) & (2**64 - 1)
    draws = np.random.PCG64DXSM(seed).random_raw((n + 3) // 4).view(np.int64)
    bits = torch.from_numpy(draws).view(torch.int16)[:n].view(shape)  # uniform over [-2^15, 2^15)
    keep = torch.ge(bits, threshold - 32768, out=torch.empty(shape, dtype=dtype))
    return keep, threshold / 65536


class _MaskedScale(torch.autograd.Function):
    """x * keep * scale in one pass each way (addcmul), saving only the mask for backward: masking
    and scaling as separate ops cost three passes forward and two backward. The mask is kept in
    x's dtype (4 bytes an element in fp32 instead of a bool's 1): applying a bool mask converts it
    on every use, which made each dropout's forward + backward ~1.7x slower on the CPU."""

    @staticmethod
    def forward(ctx, x: Tensor, keep: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.addcmul(x.new_zeros(()), x, keep, value=scale)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (keep,) = ctx.saved_tensors
        return torch.addcmul(grad.new_zeros(()), grad, keep, value=ctx.scale), None, None


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """``F.dropout`` with the fast CPU mask (`keep_mask`) when ``KERNELS.fast_dropout``."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or not KERNELS.fast_dropout:
        return F.dropout(x, p, training=True)
    keep, p_eff = keep_mask(x.shape, p, x.dtype)
    return _MaskedScale.apply(x, keep, 1.0 / (1.0 - p_eff))


class Dropout(nn.Dropout):
    """``nn.Dropout`` (same attributes, no parameters) drawing its CPU masks with `dropout`."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)


def math_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool, dropout_p: float) -> Tensor:
    """softmax(q k^T / sqrt(Dh) [masked]) [dropout] v, spelled out: (B, H, T_q, Dh) -> (B, H, T_q, Dh).
    Same contract as SDPA (bool mask True = may attend; is_causal aligned to the top-left)."""
    scores = torch.matmul(q * (1.0 / math.sqrt(q.shape[-1])), k.transpose(-2, -1))  # (B, H, T_q, T_k)
    if is_causal:
        # future keys: above the diagonal (top-left aligned, as SDPA's is_causal)
        future = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).triu_(1)
        scores = scores.masked_fill_(future, float("-inf"))
    if mask is not None:
        scores = scores.masked_fill_(~mask, float("-inf"))
    probs = dropout(torch.softmax(scores, dim=-1), dropout_p)
    return torch.matmul(probs, v)


# ----------------------------------------------------------------------------- fused LM head + loss
def _ce_chunk_rows(vocab_size: int) -> int:
    """Rows per chunk so one chunk's fp32 logits stay near 16 MB (at least 256 rows, so the matmuls
    stay efficient): small enough that glibc's malloc reuses the block from its heap instead of
    mapping fresh pages for every chunk; on the 2-core VM 16 MB chunks were faster than 64 MB ones
    with tcmalloc too (GPT head, 4,096 x 16k: 334 vs 344 ms forward + backward)."""
    return max(256, (1 << 22) // max(vocab_size, 1))


class _LinearCrossEntropy(torch.autograd.Function):
    """sum over rows of -log softmax(h W^T + b)[target], computed chunk by chunk: the (N, V)
    logits never exist whole. The gradients are computed in the same pass (the loss is a sum,
    so they only need scaling in backward) and the logits of a chunk are freed at once."""

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, ignore_index: int,
                count_hits: bool):
        N = hidden.shape[0]
        hits = torch.zeros((), dtype=torch.long, device=hidden.device)
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        grad_h = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if ctx.needs_input_grad[1] else None
        grad_b = (torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device)
                  if bias is not None and ctx.needs_input_grad[2] else None)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        step = _ce_chunk_rows(weight.shape[0])
        for a in range(0, N, step):
            h, t = hidden[a : a + step], targets[a : a + step]
            logits = torch.nn.functional.linear(h, weight, bias).float()  # (n, V)
            valid = (t != ignore_index).to(logits.dtype).unsqueeze(1)  # (n, 1)
            safe_t = t.clamp(min=0).unsqueeze(1)  # (n, 1)
            # one row-wise pass (each row is processed in cache), instead of max, exp, sum passes
            logp = torch.log_softmax(logits, dim=1)  # (n, V)
            if count_hits:  # evaluation: arg-max accuracy from the same chunk
                hits += ((logits.argmax(dim=1, keepdim=True) == safe_t) & (valid > 0)).sum()
            del logits
            total -= (logp.gather(1, safe_t) * valid).sum()
            if need_grad:
                # d(sum loss)/d logits = softmax - onehot(target) on scored rows, 0 on ignored ones;
                # the ignored rows are zeroed on the (n, C) side, never with a pass over (n, V)
                g = logp.exp_()
                g.scatter_add_(1, safe_t, torch.full_like(valid, -1.0))
                if grad_h is not None:
                    grad_h[a : a + step] = (g.to(weight.dtype) @ weight) * valid.to(weight.dtype)
                if grad_w is not None:
                    grad_w.addmm_(g.t(), h.float() * valid)
                if grad_b is not None:
                    grad_b += (valid.t() @ g).squeeze(0)
        ctx.save_for_backward(*(x if x is not None else torch.empty(0) for x in (grad_h, grad_w, grad_b)))
        ctx.has = (grad_h is not None, grad_w is not None, grad_b is not None)
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
        ctx.mark_non_differentiable(hits)
        return total, hits

    @staticmethod
    def backward(ctx, grad_out: Tensor, _grad_hits: Tensor | None = None):
        saved = ctx.saved_tensors
        out = [saved[i].mul(grad_out).to(ctx.dtypes[i]) if ctx.has[i] else None for i in range(3)]
        return out[0], out[1], out[2], None, None, None


def linear_cross_entropy(hidden: Tensor, weight: Tensor, targets: Tensor, bias: Tensor | None = None,
                         ignore_index: int = -100, count_hits: bool = False
                         ) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor] | None]:
    """Cross-entropy of an output projection without materialising its logits.

    hidden (N, C), weight (V, C), bias (V,) or None, targets (N,) with ``ignore_index`` where a row
    has no target. Returns ((fp32 sum of -log p(target) over scored rows, their count), hits): the
    same numbers as ``F.cross_entropy(F.linear(hidden, weight, bias).float(), targets, reduction="sum")``
    with peak extra memory of one chunk of logits (about 16 MB) instead of N x V. With
    ``count_hits``, hits = (scored rows whose arg-max is the target, scored rows), from the same
    chunks; else None."""
    n = (targets != ignore_index).sum()
    total, hits = _LinearCrossEntropy.apply(hidden, weight, bias, targets, ignore_index, count_hits)
    return (total, n), ((hits, n) if count_hits else None)


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


def select_positions(hidden: Tensor, positions: Tensor) -> Tensor:
    """The rows of hidden (B, T, C) where predictions are needed -> (N, C), in row-major order.

    positions: a (B, T) bool mask, or the (N,) flat indices b * T + t of its True entries (what
    collators hand over: indexing with them needs no device-to-host sync, a bool mask does)."""
    B, T = hidden.shape[:2]
    if positions.dtype == torch.bool:
        if positions.shape != (B, T):
            raise ValueError(f"mlm_positions must be a bool tensor of shape {(B, T)}, got {tuple(positions.shape)}")
        return hidden[positions]
    if positions.dim() != 1 or positions.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"mlm_positions as indices must be a 1-D integer tensor, got {positions.dtype} "
                         f"{tuple(positions.shape)}")
    return hidden.reshape(B * T, -1).index_select(0, positions)


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention with separate q/k/v/out projections.

    ``forward`` is for encoders and full-sequence (training) passes; ``forward_with_cache``
    is for incremental causal decoding with a key/value cache; ``project_kv`` + ``attend_kv``
    are cross-attention (queries from one sequence, keys/values projected once from another).
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
        path = KERNELS.attention
        if path == "math" or (path == "auto" and dropout_p > 0 and q.device.type == "cpu"):
            y = math_attention(q, k, v, mask, is_causal, dropout_p)
        else:
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

    # Cross-attention (an encoder-decoder's decoder attending to the encoder output) in two halves,
    # so a decoder computes the keys/values of a source once and reuses them at every decoding step.
    def project_kv(self, memory: Tensor) -> KVCache:
        """Keys and values of ``memory`` (B, S, C) -> (k, v), each (B, H, S, Dh)."""
        k = self._split_heads(self.k_proj(memory))  # (B, H, S, Dh)
        v = self._split_heads(self.v_proj(memory))  # (B, H, S, Dh)
        return k, v

    def attend_kv(self, x: Tensor, kv: KVCache, key_padding_mask: Tensor | None = None) -> Tensor:
        """Queries from ``x`` (B, T, C) attend to the projected keys/values ``kv`` (from
        `project_kv`, each (B, H, S, Dh)) -> (B, T, C). key_padding_mask: optional (B, S) bool,
        True = real key, False = padding (never attended to). No causal mask: every query sees
        every real key."""
        k, v = kv
        q = self._split_heads(self.q_proj(x))  # (B, H, T, Dh)
        mask = None
        if key_padding_mask is not None:
            mask = key_padding_mask.bool().view(k.shape[0], 1, 1, k.shape[2])  # (B, 1, 1, S)
        return self._attend(q, k, v, mask=mask, is_causal=False)


class FeedForward(nn.Module):
    """Position-wise MLP: Linear(C, d_ff) -> activation -> Linear(d_ff, C) -> dropout."""

    def __init__(
        self, d_model: int, d_ff: int, dropout: float = 0.0, activation: str = "gelu", bias: bool = True
    ):
        super().__init__()
        self.fc_in = nn.Linear(d_model, d_ff, bias=bias)
        self.act = make_activation(activation)
        self.fc_out = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = Dropout(dropout)

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
