"""Pretraining examples read from token shards, and the collator that masks them.

- `PackedBlockDataset`: RoBERTa-style full sequences: `[CLS] tokens... [SEP]` blocks cut from the
  token stream, with a `[SEP]` inserted where a document ends inside a block.
- `SentencePairDataset`: BERT NSP pairs `[CLS] A [SEP] B [SEP]`, 50% true next segment.
- `MLMCollator`: dynamic padding + dynamic masking (80/10/10, optional whole-word) seeded per batch.

Datasets take keys `(index, batch_seed)` from `lit_tf.data.sampling.StreamBatchSampler` and pass
the seed through to the collator, so masking is a pure function of (seed, batch position).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from lit_tf.data.shards import TokenShard
from lit_tf.objectives.masking import mask_tokens, word_ids_from_word_starts
from lit_tf.objectives.nsp import build_nsp_examples, truncate_pair


def _split_key(key) -> tuple[int, int]:
    if isinstance(key, tuple):
        return int(key[0]), int(key[1])
    return int(key), int(key)  # plain integer index: seed masking by position


class PackedBlockDataset:
    """Fixed-length blocks over the whole token stream (no NSP)."""

    def __init__(self, shard: TokenShard, max_seq_len: int, cls_id: int, sep_id: int) -> None:
        if max_seq_len < 8:
            raise ValueError(f"data.max_seq_len={max_seq_len} is too small (need >= 8)")
        self.shard, self.cls_id, self.sep_id = shard, cls_id, sep_id
        self.block = max_seq_len - 2  # room for [CLS] ... [SEP]
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
        ids = np.concatenate([[self.cls_id], ids, [self.sep_id]])
        ws = np.concatenate([[True], ws, [True]])
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


@dataclass
class MLMCollator:
    """Pads a list of examples and applies dynamic MLM masking with a per-batch generator."""

    pad_id: int
    mask_id: int
    vocab_size: int
    n_special: int  # ids [0, n_special) are special tokens: never masked, never drawn as random
    mlm_probability: float = 0.15
    mask_ratio: float = 0.8
    random_ratio: float = 0.1
    whole_word: bool = False
    pad_to_multiple_of: int = 8

    def __call__(self, examples: list[dict]) -> dict[str, Tensor]:
        B = len(examples)
        T = max(len(e["input_ids"]) for e in examples)
        m = self.pad_to_multiple_of
        T = -(-T // m) * m if m else T
        input_ids = torch.full((B, T), self.pad_id, dtype=torch.long)
        token_type_ids = torch.zeros((B, T), dtype=torch.long)
        attention_mask = torch.zeros((B, T), dtype=torch.bool)
        word_start = torch.zeros((B, T), dtype=torch.bool)
        for r, e in enumerate(examples):
            n = len(e["input_ids"])
            input_ids[r, :n] = torch.from_numpy(np.asarray(e["input_ids"], dtype=np.int64))
            token_type_ids[r, :n] = torch.from_numpy(np.asarray(e["token_type_ids"], dtype=np.int64))
            attention_mask[r, :n] = True
            word_start[r, :n] = torch.from_numpy(np.asarray(e["word_start"], dtype=bool))
        special = (input_ids < self.n_special) | ~attention_mask
        gen = torch.Generator().manual_seed(int(examples[0]["seed"]) % (2**63))
        word_ids = word_ids_from_word_starts(word_start, special) if self.whole_word else None
        masked, labels = mask_tokens(
            input_ids, special_mask=special, mask_id=self.mask_id, vocab_size=self.vocab_size, generator=gen,
            mlm_probability=self.mlm_probability, mask_ratio=self.mask_ratio, random_ratio=self.random_ratio,
            word_ids=word_ids, random_token_low=self.n_special,
        )
        batch = {
            "input_ids": masked,
            "token_type_ids": token_type_ids,
            "attention_mask": attention_mask,
            "mlm_labels": labels,
        }
        if "nsp_label" in examples[0]:
            batch["nsp_labels"] = torch.tensor([e["nsp_label"] for e in examples], dtype=torch.long)
        return batch
