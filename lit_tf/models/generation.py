"""Autoregressive sampling from a ``GPTForCausalLM``: greedy, temperature, top-k and nucleus (top-p).

Shapes use B = batch, T = prompt length, V = vocab_size. Prompts in a batch share one length
(no padding). Randomness comes only from the explicit ``generator``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_tf.models.gpt import GPTForCausalLM


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Return a copy of ``logits`` (B, V) with -inf outside the kept set (top-k first, then top-p).

    top_k: keep the k largest logits of each row.
    top_p: keep the smallest set of most likely tokens whose cumulative probability is >= top_p;
    the most likely token is always kept.
    Tokens tied with the last kept one are all kept, so the result never depends on how a sort
    orders equal values (a row can therefore keep more than k tokens when there are ties).
    """
    if top_k is not None:
        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
        k = min(top_k, logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1) smallest kept logit
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] or None, got {top_p!r}")
        sorted_logits = torch.sort(logits, dim=-1, descending=True).values  # (B, V)
        probs = sorted_logits.softmax(dim=-1)  # (B, V)
        mass_before = probs.cumsum(dim=-1) - probs  # (B, V) probability of the strictly better tokens
        # A token is needed while the tokens before it have not yet reached top_p; this is a prefix
        # of the sorted row and always includes the first token (mass_before = 0 < top_p).
        n_keep = (mass_before < top_p).sum(dim=-1, keepdim=True)  # (B, 1), >= 1
        threshold = sorted_logits.gather(-1, n_keep - 1)  # (B, 1) smallest kept logit
        logits = logits.masked_fill(logits < threshold, float("-inf"))
    return logits


def _next_token(
    logits: Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None,
) -> Tensor:
    """logits (B, V) at the last position -> next token ids (B, 1)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)  # (B, 1) greedy
    logits = filter_logits(logits / temperature, top_k=top_k, top_p=top_p)
    probs = logits.softmax(dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator)  # (B, 1)


@torch.no_grad()
def generate(
    model: GPTForCausalLM,
    prompt_ids: Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> Tensor:
    """Extend prompt_ids (B, T) by up to max_new_tokens tokens -> (B, T + n), n <= max_new_tokens.

    temperature == 0 is greedy decoding (argmax); otherwise the logits are divided by temperature,
    filtered by ``filter_logits(top_k, top_p)`` and sampled with ``generator``.
    eos_id: a row that has produced eos keeps emitting eos (as padding), and generation stops
    as soon as every row has produced it.
    use_cache: prefill the prompt once with ``forward_with_cache`` and then feed one token per step.
    Positions are learned and absolute, so a cache cannot slide: once the context would exceed
    max_seq_len, every further step recomputes the last max_seq_len tokens without a cache, which
    is exactly what use_cache=False does at every step. Both settings give the same tokens.
    The model runs in eval mode; its previous train/eval mode is restored afterwards.
    """
    if prompt_ids.dim() != 2 or prompt_ids.shape[1] == 0:
        raise ValueError(f"prompt_ids must be (B, T) with T >= 1, got shape {tuple(prompt_ids.shape)}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")

    was_training = model.training
    model.eval()
    try:
        max_len = model.cfg.max_seq_len
        ids = prompt_ids
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)  # (B,) rows past eos
        past_kv = None
        for _ in range(max_new_tokens):
            if use_cache and ids.shape[1] <= max_len:
                # The first step prefills the whole prompt; later steps feed only the newest token.
                new_ids = ids if past_kv is None else ids[:, -1:]  # (B, T) or (B, 1)
                logits, past_kv = model.forward_with_cache(new_ids, past_kv)  # (B, T_new, V)
            else:
                logits = model(ids[:, -max_len:]).lm_logits  # (B, min(T, max_len), V)
            next_id = _next_token(logits[:, -1, :], temperature, top_k, top_p, generator)  # (B, 1)
            if eos_id is not None:
                next_id = next_id.masked_fill(done.unsqueeze(1), eos_id)  # finished rows pad with eos
                done = done | (next_id.squeeze(1) == eos_id)
            ids = torch.cat([ids, next_id], dim=1)  # (B, T + 1)
            if eos_id is not None and bool(done.all()):
                break
        return ids
    finally:
        model.train(was_training)
