"""Behavioural tests for MLM corruption (token-level and whole-word)."""

from __future__ import annotations

import pytest
import torch

from lit_tf.objectives import IGNORE_INDEX, mask_tokens, word_ids_from_word_starts

VOCAB = 1000
N_SPECIAL = 5  # ids 0..4 are specials; [MASK] = 4
MASK_ID = 4
CLS, SEP, PAD = 1, 2, 0


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(B: int = 64, T: int = 512, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids in the non-special range, CLS/SEP framed, with variable padding."""
    g = _gen(seed)
    ids = torch.randint(N_SPECIAL, VOCAB, (B, T), generator=g)
    lengths = torch.randint(T // 2, T + 1, (B,), generator=g)
    pos = torch.arange(T).unsqueeze(0)
    ids[pos >= lengths.unsqueeze(1)] = PAD
    ids[:, 0] = CLS
    ids[torch.arange(B), lengths - 1] = SEP
    special = ids < N_SPECIAL
    return ids, special


def _mask(ids, special, seed=123, **kw):
    return mask_tokens(
        ids,
        special_mask=special,
        mask_id=MASK_ID,
        vocab_size=VOCAB,
        row_seeds=torch.randint(0, 2**32, (ids.shape[0],), generator=_gen(seed)),
        random_token_low=N_SPECIAL,
        **kw,
    )


def test_token_level_statistics_and_invariants():
    ids, special = _batch()
    original = ids.clone()
    masked, labels = _mask(ids, special)

    assert torch.equal(ids, original), "input must not be mutated"
    selected = labels != IGNORE_INDEX
    eligible = ~special

    # Selection rate over eligible tokens, and never on specials.
    assert not (selected & special).any()
    assert torch.equal(masked[special], ids[special])
    rate = selected.sum().item() / eligible.sum().item()
    assert abs(rate - 0.15) < 0.01, rate

    # Labels: original ids where selected, IGNORE elsewhere.
    assert torch.equal(labels[selected], ids[selected])
    assert (labels[~selected] == IGNORE_INDEX).all()
    # Unselected tokens unchanged.
    assert torch.equal(masked[~selected], ids[~selected])

    # 80 / 10 / 10 split among selected positions.
    n_sel = selected.sum().item()
    is_mask = selected & (masked == MASK_ID)
    changed = selected & (masked != ids) & (masked != MASK_ID)
    kept = selected & (masked == ids)
    assert abs(is_mask.sum().item() / n_sel - 0.8) < 0.02
    # A random draw can coincide with the original id (p ~ 1/995); "kept" absorbs it.
    assert abs(changed.sum().item() / n_sel - 0.1) < 0.02
    assert abs(kept.sum().item() / n_sel - 0.1) < 0.02

    # Random replacements never special tokens and always in-vocab.
    replaced = masked[selected & (masked != MASK_ID)]
    assert (replaced >= N_SPECIAL).all() and (replaced < VOCAB).all()


def test_random_replacements_respect_random_token_low():
    ids, special = _batch(B=16, T=128)
    # Force every selected token to be a random replacement.
    masked, labels = _mask(ids, special, mask_ratio=0.0, random_ratio=1.0, mlm_probability=0.5)
    sel = labels != IGNORE_INDEX
    assert (masked[sel] >= N_SPECIAL).all()
    assert (masked[sel] != ids[sel]).float().mean() > 0.95


def test_determinism_and_seed_sensitivity():
    ids, special = _batch(B=8, T=128)
    m1, l1 = _mask(ids, special, seed=7)
    m2, l2 = _mask(ids, special, seed=7)
    _, l3 = _mask(ids, special, seed=8)
    assert torch.equal(m1, m2) and torch.equal(l1, l2)
    assert not torch.equal(l1, l3)


def test_every_row_with_eligible_tokens_gets_a_selection():
    # Very short rows: [CLS] x [SEP] -> one eligible token, p=0.15 would often miss.
    B = 200
    ids = torch.full((B, 6), PAD)
    ids[:, 0] = CLS
    ids[:, 1] = torch.arange(B) + N_SPECIAL
    ids[:, 2] = SEP
    ids[:4, 1] = PAD  # four rows with no eligible token at all
    special = ids < N_SPECIAL
    _, labels = _mask(ids, special)
    n_sel = (labels != IGNORE_INDEX).sum(dim=1)
    assert (n_sel[4:] == 1).all()
    assert (n_sel[:4] == 0).all()
    assert (labels[4:, 1] == ids[4:, 1]).all()


def test_fallback_selects_exactly_one_when_bernoulli_misses():
    # Rows of 10 eligible tokens at p=0.01: most rows select nothing by chance,
    # so the fallback must add exactly one, spread over positions.
    ids = torch.randint(N_SPECIAL, VOCAB, (500, 10), generator=_gen(3))
    special = torch.zeros_like(ids, dtype=torch.bool)
    _, labels = _mask(ids, special, mlm_probability=0.01)
    n_sel = (labels != IGNORE_INDEX).sum(dim=1)
    assert (n_sel >= 1).all()
    assert (n_sel == 1).float().mean() > 0.85
    positions = (labels != IGNORE_INDEX).float().sum(dim=0)
    assert (positions > 20).all(), positions  # roughly uniform over the 10 positions


@pytest.mark.parametrize(
    "kw",
    [
        {"mlm_probability": 0.0},
        {"mlm_probability": 1.0},
        {"mask_ratio": 0.9, "random_ratio": 0.2},
        {"mask_ratio": -0.1},
    ],
)
def test_invalid_ratios_raise(kw):
    ids, special = _batch(B=2, T=16)
    with pytest.raises(ValueError):
        _mask(ids, special, **kw)


# --------------------------------------------------------------------------- whole-word


def _word_batch(B: int = 64, T: int = 512, seed: int = 1):
    """Batch with multi-token words (1-4 tokens each) and specials/padding."""
    g = _gen(seed)
    ids, special = _batch(B, T, seed)
    word_start = torch.rand((B, T), generator=g) < 0.4
    word_ids = word_ids_from_word_starts(word_start, special)
    return ids, special, word_ids


def test_whole_word_masking_is_per_word():
    ids, special, word_ids = _word_batch()
    masked, labels = _mask(ids, special, word_ids=word_ids)
    selected = labels != IGNORE_INDEX
    assert not (selected & special).any()

    # Per-word counts, vectorised: give every (row, word) a global index.
    in_word = word_ids >= 0
    key = (torch.arange(ids.shape[0]).unsqueeze(1) * ids.shape[1] + word_ids)[in_word]
    _, word = torch.unique(key, return_inverse=True)
    n_words = int(word.max()) + 1

    def per_word(flags: torch.Tensor) -> torch.Tensor:
        return torch.zeros(n_words, dtype=torch.long).index_add_(0, word, flags[in_word].long())

    size = per_word(torch.ones_like(selected))
    n_sel = per_word(selected)
    n_mask = per_word(selected & (masked == MASK_ID))
    n_same = per_word(selected & (masked == ids))
    n_rand = per_word(selected & (masked != ids) & (masked != MASK_ID))

    assert ((n_sel == 0) | (n_sel == size)).all(), "word partially selected"
    sel_word = n_sel > 0
    assert (size[sel_word] > 1).sum() > 100  # multi-token words really got selected
    all_mask = sel_word & (n_mask == size)
    all_kept = sel_word & (n_same == size)
    # Random: every token replaced (a draw equal to the original is possible but rare).
    all_rand = sel_word & (n_mask == 0) & (n_rand + n_same == size) & (n_rand > 0)
    assert (all_mask | all_kept | all_rand)[sel_word].all(), "mixed treatment within a word"
    assert (masked[selected & (masked != MASK_ID)] >= N_SPECIAL).all()

    n_sel_words = sel_word.sum().item()
    assert abs(n_sel_words / n_words - 0.15) < 0.01
    assert abs(all_mask.sum().item() / n_sel_words - 0.8) < 0.03
    assert abs(all_rand.sum().item() / n_sel_words - 0.1) < 0.03
    assert abs(all_kept.sum().item() / n_sel_words - 0.1) < 0.03


def test_whole_word_same_ids_in_different_rows_are_different_words():
    # Identical word ids in every row must not couple rows' decisions.
    B, T = 256, 12
    ids = torch.randint(N_SPECIAL, VOCAB, (B, T), generator=_gen(5))
    special = torch.zeros((B, T), dtype=torch.bool)
    word_ids = (torch.arange(T) // 3).expand(B, T)  # 4 words of 3 tokens per row
    _, labels = _mask(ids, special, word_ids=word_ids)
    sel_word0 = labels[:, 0] != IGNORE_INDEX
    assert 0.05 < sel_word0.float().mean() < 0.6  # neither all nor none
    sel = (labels != IGNORE_INDEX).view(B, 4, 3)
    assert ((sel.all(-1)) | (~sel.any(-1))).all()
    assert (sel.any(-1).sum(-1) >= 1).all()


def test_word_ids_from_word_starts_hand_built():
    # Row 0: [CLS] a ##b c [SEP] d ##e [SEP] PAD PAD
    # Row 1: [CLS] ##x y [SEP] z PAD ...  (non-start after special starts a word)
    word_start = torch.tensor(
        [
            [0, 1, 0, 1, 0, 1, 0, 0, 0, 0],
            [0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
        ],
        dtype=torch.bool,
    )
    special = torch.tensor(
        [
            [1, 0, 0, 0, 1, 0, 0, 1, 1, 1],
            [1, 0, 0, 1, 0, 1, 1, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    expected = torch.tensor(
        [
            [-1, 0, 0, 1, -1, 2, 2, -1, -1, -1],
            [-1, 0, 1, -1, 2, -1, -1, -1, -1, -1],
        ]
    )
    assert torch.equal(word_ids_from_word_starts(word_start, special), expected)


def test_word_ids_first_token_without_flag_starts_word():
    word_start = torch.tensor([[0, 0, 1, 0]], dtype=torch.bool)
    special = torch.zeros_like(word_start)
    assert word_ids_from_word_starts(word_start, special).tolist() == [[0, 0, 1, 1]]


@pytest.mark.parametrize("whole_word", [False, True])
def test_a_rows_masking_does_not_depend_on_its_batch(whole_word):
    """Data parallelism splits a global batch over ranks: each rank pads its half to its own
    width. Every row must come out exactly as when the whole batch is masked in one process."""
    ids, special = _batch(B=16, T=96, seed=4)
    seeds = torch.randint(0, 2**32, (16,), generator=_gen(9))
    word_ids = (word_ids_from_word_starts(torch.rand(ids.shape, generator=_gen(2)) < 0.4, special)
                if whole_word else None)

    def mask(rows, width):
        kw = {"word_ids": word_ids[rows, :width]} if whole_word else {}
        return mask_tokens(ids[rows, :width], special_mask=special[rows, :width], mask_id=MASK_ID,
                           vocab_size=VOCAB, row_seeds=seeds[rows], random_token_low=N_SPECIAL, **kw)

    full_m, full_l = mask(torch.arange(16), 96)
    for rows in (torch.arange(8), torch.arange(8, 16), torch.tensor([3, 11, 5])):
        width = int((~special[rows]).nonzero()[:, 1].max()) + 2  # this shard's own padded width
        m, lab = mask(rows, width)
        assert torch.equal(m, full_m[rows, :width]) and torch.equal(lab, full_l[rows, :width])
    assert (full_l != IGNORE_INDEX).any()


def test_keyed_draws_are_uniform_and_independent():
    from lit_tf.objectives.masking import keyed_uniform

    seeds = torch.arange(2000).unsqueeze(1)
    u = keyed_uniform(seeds, torch.arange(500).unsqueeze(0), 0)  # (2000, 500)
    assert 0.0 <= float(u.min()) and float(u.max()) < 1.0
    hist = torch.histc(u, bins=10, min=0.0, max=1.0) / u.numel()
    assert (hist - 0.1).abs().max() < 0.002, hist  # 1e6 draws: sd of a bin share ~3e-4
    v = keyed_uniform(seeds, torch.arange(500).unsqueeze(0), 1)  # another purpose: unrelated draws
    corr = torch.corrcoef(torch.stack([u.flatten(), v.flatten()]))[0, 1]
    assert abs(float(corr)) < 0.005
    nxt = torch.corrcoef(torch.stack([u[:, :-1].flatten(), u[:, 1:].flatten()]))[0, 1]  # neighbouring positions
    assert abs(float(nxt)) < 0.005
