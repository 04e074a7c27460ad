"""BERT-style masked-language-model corruption (token-level and whole-word).

Everything here is a pure function: randomness comes only from the explicit
per-row seeds, inputs are never mutated, and the same seeds always yield the same
output. The draws are counter-based (a hash of (row seed, position, purpose)), not
a generator stream: a row's corruption depends on its own seed and tokens only,
never on which rows share its batch or how wide the batch is padded. So a global
batch split over N data-parallel ranks is masked exactly as one process would mask
it, and validation metrics do not depend on the number of ranks.

Both modes share one implementation built on *masking units*: in token-level mode
every eligible token is its own unit, in whole-word mode every word is a unit.
Selection (probability ``mlm_probability``) and the 80/10/10 decision
(``[MASK]`` / random token / keep) are drawn once per unit and broadcast to the
unit's tokens, so a word is always treated as a whole.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_tf.objectives.config import MaskingConfig, check_masking
from lit_tf.objectives.losses import IGNORE_INDEX

__all__ = ["keyed_uniform", "mask_tokens", "word_ids_from_word_starts"]


def _validate(
    input_ids: Tensor,
    special_mask: Tensor,
    word_ids: Tensor | None,
    mask_id: int,
    vocab_size: int,
    mlm_probability: float,
    mask_ratio: float,
    random_ratio: float,
    random_token_low: int,
) -> None:
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (B, T); got shape {tuple(input_ids.shape)}")
    if special_mask.shape != input_ids.shape:
        raise ValueError(
            f"special_mask shape {tuple(special_mask.shape)} != input_ids shape {tuple(input_ids.shape)}"
        )
    if special_mask.dtype != torch.bool:
        raise ValueError(f"special_mask must be a bool tensor; got {special_mask.dtype}")
    if word_ids is not None and word_ids.shape != input_ids.shape:
        raise ValueError(
            f"word_ids shape {tuple(word_ids.shape)} != input_ids shape {tuple(input_ids.shape)}"
        )
    check_masking(mlm_probability, mask_ratio, random_ratio)
    if not 0 <= mask_id < vocab_size:
        raise ValueError(f"mask_id {mask_id} is outside the vocabulary [0, {vocab_size})")
    if random_ratio > 0 and not 0 <= random_token_low < vocab_size:
        raise ValueError(
            f"random_token_low must be in [0, vocab_size={vocab_size}) so random replacements exist; "
            f"got {random_token_low}"
        )


def _token_units(eligible: Tensor) -> tuple[Tensor, Tensor]:
    """One unit per eligible token.

    Returns ``(unit_of_token (B, T) with -1 where ineligible, unit_row (W,))``.
    """
    flat = eligible.reshape(-1)
    unit = torch.cumsum(flat.long(), dim=0) - 1
    unit = torch.where(flat, unit, torch.full_like(unit, -1)).view_as(eligible)
    unit_row = eligible.nonzero(as_tuple=True)[0]  # row-major order == unit order
    return unit, unit_row


def _word_units(word_ids: Tensor, eligible: Tensor) -> tuple[Tensor, Tensor]:
    """One unit per (row, word id) pair among eligible tokens.

    Word ids are only compared within a row, so the same id in two rows names two
    different words. Returns the same structure as :func:`_token_units`.
    """
    B, T = word_ids.shape
    valid = eligible & (word_ids >= 0)
    wid = torch.where(valid, word_ids.long(), torch.zeros_like(word_ids, dtype=torch.long))
    span = int(wid.max().item()) + 1 if valid.any() else 1
    rows = torch.arange(B, device=word_ids.device).unsqueeze(1).expand(B, T)
    key = rows * span + wid  # unique per (row, word)
    uniq, inverse = torch.unique(key[valid], return_inverse=True)  # uniq is sorted => grouped by row
    unit = torch.full((B, T), -1, dtype=torch.long, device=word_ids.device)
    unit[valid] = inverse
    return unit, torch.div(uniq, span, rounding_mode="floor")


_M32 = 0xFFFFFFFF


def _mul32(x: Tensor, c: int) -> Tensor:
    """(x * c) mod 2**32 for int64 `x` in [0, 2**32), in 16-bit halves so no product overflows int64."""
    lo = (x & 0xFFFF) * c
    hi = (((x >> 16) * c) & 0xFFFF) << 16
    return (lo + hi) & _M32


def _mix32(x: Tensor) -> Tensor:
    """A 32-bit integer hash with good avalanche (C. Wellons' "lowbias32" constants)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


# what a draw is for: its own stream of the row's randomness
_SELECT, _FALLBACK, _DECIDE, _REPLACE = range(4)


def keyed_uniform(row_seeds: Tensor, positions: Tensor, purpose: int) -> Tensor:
    """Uniform [0, 1) float32 draws, one per element: a function of (row seed, position, purpose)
    only. `row_seeds` and `positions` broadcast against each other; seeds use their low 32 bits."""
    seed = row_seeds.long() & _M32
    counter = (positions.long() * 4 + purpose) & _M32
    h = _mix32(seed ^ _mix32(counter ^ 0x9E3779B9))
    return (h >> 8).to(torch.float32) * (1.0 / (1 << 24))  # 24 bits: exact in float32


def mask_tokens(
    input_ids: Tensor,
    *,
    special_mask: Tensor,
    mask_id: int,
    vocab_size: int,
    row_seeds: Tensor,
    mlm_probability: float = MaskingConfig.mlm_probability,
    mask_ratio: float = MaskingConfig.mask_ratio,
    random_ratio: float = MaskingConfig.random_ratio,
    word_ids: Tensor | None = None,
    random_token_low: int = 0,
) -> tuple[Tensor, Tensor]:
    """Apply BERT's MLM corruption to a batch.

    Args:
        input_ids: ``(B, T)`` int64 token ids. Not modified.
        special_mask: ``(B, T)`` bool, ``True`` where a token must never be selected
            (CLS/SEP/PAD/...).
        mask_id: id of the ``[MASK]`` token.
        vocab_size: vocabulary size; random replacements are drawn from
            ``[random_token_low, vocab_size)``.
        row_seeds: ``(B,)`` integer seed of each row, the only source of randomness
            (see the module docstring); data loaders derive it from the run seed and the
            row's place in its global batch.
        mlm_probability: probability of selecting each eligible token (or word).
        mask_ratio: share of selected units replaced by ``mask_id``.
        random_ratio: share of selected units replaced by random tokens; the rest
            (``1 - mask_ratio - random_ratio``) is left unchanged.
        word_ids: optional ``(B, T)`` word index of each token within its row
            (tokens of one word share an id, different words differ, ``-1`` for
            special/pad positions). When given, masking is whole-word: a word is
            selected with ``mlm_probability`` and all its tokens get the same
            treatment (all ``[MASK]``, all random, or all kept). Tokens with a negative
            word id are never selected.
        random_token_low: lowest id a random replacement may take; pass the number
            of special tokens (ids ``0..n_special-1``) so specials are never drawn.

    Every row with at least one eligible token gets at least one selected unit: if
    the Bernoulli draws select none, one eligible unit is chosen uniformly.

    Returns:
        ``(masked_input_ids, labels)``: a corrupted copy of ``input_ids`` and labels
        holding the original id at selected positions and ``IGNORE_INDEX`` elsewhere.
    """
    _validate(
        input_ids,
        special_mask,
        word_ids,
        mask_id,
        vocab_size,
        mlm_probability,
        mask_ratio,
        random_ratio,
        random_token_low,
    )
    device = input_ids.device
    B, T = input_ids.shape
    if row_seeds.shape != (B,):
        raise ValueError(f"row_seeds must have shape ({B},); got {tuple(row_seeds.shape)}")
    row_seeds = row_seeds.to(device)
    eligible = ~special_mask.to(device)

    if word_ids is None:
        unit, unit_row = _token_units(eligible)
    else:
        unit, unit_row = _word_units(word_ids.to(device), eligible)
    n_units = unit_row.numel()
    # A unit is keyed by its row's seed and the position of its first token.
    positions = torch.arange(T, device=device).expand(B, T)
    unit_pos = torch.full((n_units,), T, dtype=torch.long, device=device)
    unit_pos.scatter_reduce_(0, unit[unit >= 0], positions[unit >= 0], reduce="amin")
    unit_seed = row_seeds[unit_row]

    def draw(purpose: int) -> Tensor:
        return keyed_uniform(unit_seed, unit_pos, purpose)

    # 1) Bernoulli selection per unit.
    selected = draw(_SELECT) < mlm_probability

    # 2) Guarantee >= 1 selected unit per row that has any unit: order units by
    #    (row, random score) and take the first unit of each row as the fallback.
    fallback_score = draw(_FALLBACK)
    order = torch.argsort(fallback_score, stable=True)  # stable: ties keep position order, as in any batch
    order = order[torch.argsort(unit_row[order], stable=True)]
    rows_sorted = unit_row[order]
    is_first = torch.ones_like(rows_sorted, dtype=torch.bool)
    is_first[1:] = rows_sorted[1:] != rows_sorted[:-1]
    row_has_selection = torch.zeros(B, dtype=torch.bool, device=device)
    row_has_selection[unit_row[selected]] = True
    needs_fallback = is_first & ~row_has_selection[rows_sorted]
    selected[order[needs_fallback]] = True

    # 3) 80/10/10 decision per unit.
    decision = draw(_DECIDE)
    to_mask = selected & (decision < mask_ratio)
    to_random = selected & (decision >= mask_ratio) & (decision < mask_ratio + random_ratio)

    # 4) Broadcast unit decisions to tokens.
    has_unit = unit >= 0
    idx = unit.clamp(min=0)

    def per_token(flags: Tensor) -> Tensor:
        if n_units == 0:
            return torch.zeros((B, T), dtype=torch.bool, device=device)
        return flags[idx] & has_unit

    tok_selected = per_token(selected)
    tok_mask = per_token(to_mask)
    tok_random = per_token(to_random)

    n_random = vocab_size - random_token_low
    u = keyed_uniform(row_seeds.unsqueeze(1), positions, _REPLACE)  # (B, T)
    random_tokens = (random_token_low + (u * n_random).long().clamp(max=n_random - 1)).to(input_ids.dtype)

    labels = torch.where(tok_selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    masked = torch.where(tok_mask, torch.full_like(input_ids, mask_id), input_ids)
    masked = torch.where(tok_random, random_tokens, masked)
    return masked, labels


def word_ids_from_word_starts(word_start: Tensor, special_mask: Tensor) -> Tensor:
    """Turn per-token "begins a new word" flags into per-row word ids.

    Args:
        word_start: ``(B, T)`` bool, ``True`` where a token starts a new word.
        special_mask: ``(B, T)`` bool, ``True`` for special/pad tokens.

    Returns:
        ``(B, T)`` int64 word ids numbered ``0, 1, ...`` within each row, ``-1`` at
        special positions. A special token also ends the preceding word: any
        non-special token at the start of a row or right after a special token
        starts a new word even if its flag is ``False``.
    """
    if word_start.shape != special_mask.shape or word_start.dim() != 2:
        raise ValueError(
            f"word_start {tuple(word_start.shape)} and special_mask {tuple(special_mask.shape)} "
            "must both be (B, T)"
        )
    special = special_mask.bool()
    prev_special = torch.ones_like(special)
    prev_special[:, 1:] = special[:, :-1]
    starts = ~special & (word_start.bool() | prev_special)
    ids = torch.cumsum(starts.long(), dim=1) - 1
    return torch.where(special, torch.full_like(ids, -1), ids)
