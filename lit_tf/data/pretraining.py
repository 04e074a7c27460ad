"""Pretraining examples read from token shards, and the collator that masks them.

- `PackedBlockDataset`: RoBERTa-style full sequences: `[CLS] tokens... [SEP]` blocks cut from the
  token stream, with a `[SEP]` inserted where a document ends inside a block.
- `SentencePairDataset`: BERT NSP pairs `[CLS] A [SEP] B [SEP]`, 50% true next segment.
- `MLMCollator`: dynamic padding + dynamic masking (80/10/10, optional whole-word) seeded per row.

Datasets take keys `(index, row_seed)` from `lit_tf.data.sampling.StreamBatchSampler` and pass
the seed through to the collator, so masking is a pure function of (seed, batch, position in it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from lit_tf.data.shards import TokenShard
from lit_tf.objectives.config import MaskingConfig
from lit_tf.objectives.losses import IGNORE_INDEX
from lit_tf.objectives.masking import mask_tokens, word_ids_from_word_starts
from lit_tf.objectives.nsp import build_nsp_examples, truncate_pair


def _split_key(key) -> tuple[int, int]:
    if isinstance(key, tuple):
        return int(key[0]), int(key[1])
    return int(key), int(key)  # plain integer index: seed masking by position


class PackedBlockDataset:
    """Fixed-length blocks over the whole token stream.

    Each example is `[bos] tokens... [eos]` (bos/eos optional) of exactly `max_seq_len` ids,
    with `doc_sep_id` inserted where a document ends inside a block. MLM uses
    bos=[CLS], eos=[SEP]; causal LM uses neither and [SEP] as the end-of-text separator.
    """

    def __init__(
        self, shard: TokenShard, max_seq_len: int, *, doc_sep_id: int, bos_id: int | None = None,
        eos_id: int | None = None,
    ) -> None:
        if max_seq_len < 8:
            raise ValueError(f"data.max_seq_len={max_seq_len} is too small (need >= 8)")
        self.shard, self.sep_id, self.bos_id, self.eos_id = shard, doc_sep_id, bos_id, eos_id
        self.block = max_seq_len - (bos_id is not None) - (eos_id is not None)
        self.n = len(shard) // self.block
        self._doc_starts = np.asarray(shard.doc_token_bounds[1:-1])  # interior document starts

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key) -> dict:
        i, seed = _split_key(key)
        a, b = i * self.block, (i + 1) * self.block
        ids = np.asarray(self.shard.tokens[a:b], dtype=np.int64)
        ws = np.asarray(self.shard.word_start[a:b], dtype=bool)
        lo, hi = np.searchsorted(self._doc_starts, [a, b], side="right")
        cuts = self._doc_starts[lo:hi] - a  # document boundaries inside (a, b)
        cuts = cuts[cuts > 0]
        if len(cuts):
            ids = np.insert(ids, cuts, self.sep_id)[: self.block]
            ws = np.insert(ws, cuts, True)[: self.block]
        head = [self.bos_id] if self.bos_id is not None else []
        tail = [self.eos_id] if self.eos_id is not None else []
        ids = np.concatenate([head, ids, tail]).astype(np.int64)
        ws = np.concatenate([[True] * len(head), ws, [True] * len(tail)]).astype(bool)
        return {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "word_start": ws, "seed": seed}


class SentencePairDataset:
    """BERT next-sentence-prediction pairs, built once from the shard's sentence index."""

    def __init__(
        self, shard: TokenShard, max_seq_len: int, cls_id: int, sep_id: int, *, seed: int,
        short_seq_prob: float = 0.1,
    ) -> None:
        self.shard, self.cls_id, self.sep_id, self.seed = shard, cls_id, sep_id, seed
        self.max_tokens = max_seq_len - 3  # [CLS] A [SEP] B [SEP]
        rng = np.random.default_rng([seed, 0x5E9])
        self.examples = build_nsp_examples(
            np.asarray(shard.sent_bounds), np.asarray(shard.doc_bounds), self.max_tokens, rng,
            short_seq_prob=short_seq_prob,
        )

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, key) -> dict:
        i, seed = _split_key(key)
        a0, a1, b0, b1, label = (int(x) for x in self.examples[i])
        a0, a1, b0, b1 = truncate_pair(a0, a1, b0, b1, self.max_tokens, np.random.default_rng([self.seed, i]))
        tok, ws = self.shard.tokens, self.shard.word_start
        ids = np.concatenate([[self.cls_id], tok[a0:a1], [self.sep_id], tok[b0:b1], [self.sep_id]]).astype(np.int64)
        starts = np.concatenate([[1], ws[a0:a1], [1], ws[b0:b1], [1]]).astype(bool)
        types = np.zeros(len(ids), dtype=np.int64)
        types[a1 - a0 + 2 :] = 1  # B and its closing [SEP]
        return {"input_ids": ids, "token_type_ids": types, "word_start": starts, "nsp_label": label, "seed": seed}


# Per-token fields a pretraining example may carry besides input_ids, and their padding value.
_EXTRA_FIELDS = {"token_type_ids": 0, "lang_ids": 0, "position_ids": 0, "word_start": False}


def pad_examples(examples: Sequence[Mapping], pad_id: int, multiple: int | None = None,
                 fields: Mapping[str, int | bool] = _EXTRA_FIELDS) -> dict[str, Tensor]:
    """Stack examples right-padded to the batch's longest row (rounded up to `multiple`, e.g. 8
    for tensor cores): `input_ids` with `pad_id`, `attention_mask` (True = real token), and each
    per-token field of `fields` the examples carry, with its padding value (a bool value makes
    a bool tensor, an int a long one). All (B, T)."""
    if not examples:
        raise ValueError("cannot collate an empty list of examples")
    B = len(examples)
    T = max(len(e["input_ids"]) for e in examples)
    T = -(-T // multiple) * multiple if multiple else T
    out = {"input_ids": torch.full((B, T), pad_id, dtype=torch.long),  # (B, T)
           "attention_mask": torch.zeros((B, T), dtype=torch.bool)}  # (B, T)
    present = [k for k in fields if k in examples[0]]
    for k in present:
        v = fields[k]
        out[k] = torch.full((B, T), v, dtype=torch.bool if isinstance(v, bool) else torch.long)  # (B, T)
    for r, e in enumerate(examples):
        n = len(e["input_ids"])
        out["input_ids"][r, :n] = torch.from_numpy(np.asarray(e["input_ids"], dtype=np.int64))
        out["attention_mask"][r, :n] = True
        for k in present:
            out[k][r, :n] = torch.from_numpy(np.asarray(e[k], dtype=bool if out[k].dtype == torch.bool else np.int64))
    return out


def _mark_padding(batch: dict) -> dict:
    """`no_padding`: True when every row is full length (packed blocks). Then attention runs without
    a mask (flash kernels on GPU); told by the collator because checking on the device is a sync."""
    batch["no_padding"] = bool(batch["attention_mask"].all())
    return batch


@dataclass
class MLMCollator:
    """Pads a list of examples and applies dynamic MLM masking, each row from its own seed."""

    pad_id: int
    mask_id: int
    vocab_size: int
    n_special: int  # ids [0, n_special) are special tokens: never masked, never drawn as random
    # the masking settings (`**asdict(objective.masking)`); their defaults are MaskingConfig's
    mlm_probability: float = MaskingConfig.mlm_probability
    mask_ratio: float = MaskingConfig.mask_ratio
    random_ratio: float = MaskingConfig.random_ratio
    whole_word: bool = MaskingConfig.whole_word
    pad_to_multiple_of: int = 8

    def __call__(self, examples: list[dict]) -> dict[str, Tensor]:
        batch = pad_examples(examples, self.pad_id, self.pad_to_multiple_of)
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        word_start = batch.pop("word_start", None)
        special = (input_ids < self.n_special) | ~attention_mask
        seeds = torch.tensor([int(e["seed"]) for e in examples], dtype=torch.long)
        word_ids = word_ids_from_word_starts(word_start, special) if self.whole_word else None
        batch["input_ids"], batch["mlm_labels"] = mask_tokens(
            input_ids, special_mask=special, mask_id=self.mask_id, vocab_size=self.vocab_size, row_seeds=seeds,
            mlm_probability=self.mlm_probability, mask_ratio=self.mask_ratio, random_ratio=self.random_ratio,
            word_ids=word_ids, random_token_low=self.n_special,
        )
        if "nsp_label" in examples[0]:
            batch["nsp_labels"] = torch.tensor([e["nsp_label"] for e in examples], dtype=torch.long)
        # Where predictions are needed, as flat indices and their targets: computed here on the CPU,
        # so the training step selects rows without a device-to-host sync (a bool mask needs one).
        flat_labels = batch["mlm_labels"].view(-1)
        batch["mlm_index"] = (flat_labels != IGNORE_INDEX).nonzero().squeeze(1)  # (N,)
        batch["mlm_targets"] = flat_labels[batch["mlm_index"]]  # (N,)
        return _mark_padding(batch)


@dataclass
class CLMCollator:
    """Pads examples for next-token prediction: `labels` are the inputs, IGNORE_INDEX at padding
    (the one-position shift happens in the objective)."""

    pad_id: int
    pad_to_multiple_of: int = 8

    def __call__(self, examples: list[dict]) -> dict[str, Tensor]:
        batch = pad_examples(examples, self.pad_id, self.pad_to_multiple_of)
        batch.pop("word_start", None)
        batch.pop("token_type_ids", None)
        batch["labels"] = batch["input_ids"].masked_fill(~batch["attention_mask"], IGNORE_INDEX)
        return _mark_padding(batch)
