"""Translation data: line-aligned parallel text -> source/target batches for an encoder-decoder.

- Pairs come from `data.parallel.<l1-l2>` (the cross-lingual config's form) and are split, built
  and cached by `lit_tf.data.crosslingual.build_or_load_parallel`, as XLM pretraining's TLM pairs
  are: pairs with a sentence in `data.retrieval` are dropped, and the held-out pairs are chosen by
  pair index (`_is_val_doc`), never by tokens. So with the same files, val_fraction and max_pairs,
  the validation pairs here are exactly those an XLM pretrained on these files held out, whatever
  the tokenizer (a translator warm-started from that XLM is validated on pairs it never saw).
- One subword vocabulary is shared by both languages, trained on both sides of the training pairs
  (never on validation pairs or retrieval sentences), unless a tokenizer is given (a resumed or
  warm-start checkpoint's) or named by `data.tokenizer.path`.
- Both sides are framed `[CLS] sentence [SEP]` (cut to max_seq_len). The decoder reads the target
  without its last token and predicts it without its first: `decoder_input_ids = tgt[:-1]`,
  `labels = tgt[1:]` (IGNORE_INDEX at padding), so the shift happens here, once.
- Training batches hold pairs of similar length (`StreamBatchSampler(lengths=...)`), in an order
  that is a function of (seed, step), so a resumed run reads the same batches. Validation is one
  pass over the held-out pairs, longest first, split across ranks.

Batch (all (B, S) for the source, (B, T) for the target; right-padded):
    input_ids, attention_mask (True = real token),
    decoder_input_ids, decoder_attention_mask, labels
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from torch.utils.data import DataLoader

from lit_tf.data import text
from lit_tf.data.config import TranslationDataConfig
from lit_tf.data.crosslingual import _normalize, build_or_load_parallel, check_parallel_files, read_parallel
from lit_tf.data.pretraining import _split_key
from lit_tf.data.records import DatasetRecord, combined_digest, shard_record
from lit_tf.data.sampling import ResumableLoader, StreamBatchSampler, StreamDataModule
from lit_tf.data.shards import TokenShard, _is_val_doc
from lit_tf.data.tokenizer import CLS, PAD, SEP, TokenizerArtifact, get_or_train_tokenizer
from lit_tf.objectives.losses import IGNORE_INDEX

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# framing and padding (also used by the BLEU evaluation and lit_tf.cli.translate)
# --------------------------------------------------------------------------------------------
def frame(ids: Sequence[int] | np.ndarray, cls_id: int, sep_id: int, max_seq_len: int) -> np.ndarray:
    """`[CLS] ids[: max_seq_len - 2] [SEP]` as int64."""
    body = np.asarray(ids, dtype=np.int64)[: max_seq_len - 2]
    return np.concatenate([[cls_id], body, [sep_id]]).astype(np.int64)


def encode_sources(tokenizer: Tokenizer | TokenizerArtifact, texts: Sequence[str], max_seq_len: int) -> list[list[int]]:
    """Raw sentences -> source rows `[CLS] tokens [SEP]`, cut to max_seq_len, exactly as training
    frames them (the shards are encoded the same way: no specials, then framed)."""
    tok = tokenizer.tokenizer if isinstance(tokenizer, TokenizerArtifact) else tokenizer
    cls_id, sep_id = tok.token_to_id(CLS), tok.token_to_id(SEP)
    encs = tok.encode_batch(list(texts), add_special_tokens=False)
    return [frame(e.ids, cls_id, sep_id, max_seq_len).tolist() for e in encs]


def pad_batch(rows: Sequence[Sequence[int] | np.ndarray], pad_id: int, *, multiple: int | None = None,
              max_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad rows to the longest (rounded up to `multiple`, never past `max_len`):
    (ids (B, T) long with `pad_id`, mask (B, T) bool, True = real token)."""
    if not rows:
        raise ValueError("pad_batch: no rows")
    T = max(len(r) for r in rows)
    if multiple:
        T = -(-T // multiple) * multiple
        if max_len is not None:
            T = max(min(T, max_len), max(len(r) for r in rows))
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), T), dtype=torch.bool)  # (B, T)
    for i, r in enumerate(rows):
        n = len(r)
        ids[i, :n] = torch.as_tensor(np.asarray(r, dtype=np.int64))
        mask[i, :n] = True
    return ids, mask


def padding_efficiency(batch: Mapping[str, torch.Tensor]) -> float:
    """Share of the batch's source and target positions that hold real tokens (1.0: no padding)."""
    real = int(batch["attention_mask"].sum()) + int(batch["decoder_attention_mask"].sum())
    slots = batch["attention_mask"].numel() + batch["decoder_attention_mask"].numel()
    return real / max(1, slots)


@dataclass
class TranslationCollator:
    """Examples `{"src": [CLS] s [SEP], "tgt": [CLS] t [SEP]}` -> a padded translation batch."""

    pad_id: int
    max_seq_len: int | None = None  # padding never goes past it (the model's positions)
    pad_to_multiple_of: int | None = 8

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        kw = {"multiple": self.pad_to_multiple_of, "max_len": self.max_seq_len}
        input_ids, attention_mask = pad_batch([e["src"] for e in examples], self.pad_id, **kw)  # (B, S)
        tgt = [e["tgt"] for e in examples]
        decoder_input_ids, decoder_attention_mask = pad_batch([t[:-1] for t in tgt], self.pad_id, **kw)  # (B, T)
        labels, _ = pad_batch([t[1:] for t in tgt], IGNORE_INDEX, **kw)  # (B, T)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "decoder_input_ids": decoder_input_ids,
                "decoder_attention_mask": decoder_attention_mask, "labels": labels}


class TranslationPairs:
    """Framed (src, tgt) examples from aligned shards; the first `limit` pairs when given.
    `swap`: read the shards' target side as the source (translating l2 -> l1 of a pair l1-l2)."""

    def __init__(self, root: Path, max_seq_len: int, cls_id: int, sep_id: int, *, swap: bool = False,
                 limit: int | None = None) -> None:
        a, b = TokenShard.open(root / "src"), TokenShard.open(root / "tgt")
        if len(a.sent_bounds) != len(b.sent_bounds):
            raise ValueError(f"{root}: src and tgt shards are not aligned")
        self.src, self.tgt = (b, a) if swap else (a, b)
        self.max_len, self.cls_id, self.sep_id = max_seq_len, cls_id, sep_id
        n = len(a.sent_bounds) - 1
        self.n = n if limit is None else min(n, int(limit))

    def __len__(self) -> int:
        return self.n

    def lengths(self) -> np.ndarray:
        """(N,) the longer side of each framed pair, in tokens: what a batch pads to."""
        s = np.diff(np.asarray(self.src.sent_bounds))[: self.n]
        t = np.diff(np.asarray(self.tgt.sent_bounds))[: self.n]
        return np.minimum(np.maximum(s, t) + 2, self.max_len)

    def tokens(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The unframed token ids of pair i (source, target)."""
        out = []
        for shard in (self.src, self.tgt):
            lo, hi = shard.sent_bounds[i : i + 2]
            out.append(np.asarray(shard.tokens[int(lo) : int(hi)], dtype=np.int64))
        return out[0], out[1]

    def __getitem__(self, key) -> dict[str, np.ndarray]:
        i, _ = _split_key(key)
        if not 0 <= i < self.n:
            raise IndexError(f"pair {i} out of range [0, {self.n})")
        s, t = self.tokens(i)
        return {"src": frame(s, self.cls_id, self.sep_id, self.max_len),
                "tgt": frame(t, self.cls_id, self.sep_id, self.max_len)}


# --------------------------------------------------------------------------------------------
# the DataModule
# --------------------------------------------------------------------------------------------
class TranslationDataModule(StreamDataModule):
    """Serves translation batches src_lang -> tgt_lang from cached aligned shards.

    Args:
        data: the `data` config group (`TranslationDataConfig`); a plain mapping is typed with its `from_config`.
        objective: not read (taken so that `build_datamodule` calls every module alike).
        cache_dir: where tokenizer artifacts and shards live (keyed by content hash).
        seed: base seed of the training order.
        accumulate_grad_batches / max_steps: what the module uses without a trainer (see StreamDataModule).
        tokenizer: use this tokenizer (a resumed run's, an XLM warm start's) and keep its vocabulary.
    """

    def __init__(self, data: TranslationDataConfig | Mapping, objective: Any = None, *, cache_dir: str,
                 seed: int = 0, accumulate_grad_batches: int = 1, max_steps: int = -1,
                 tokenizer: TokenizerArtifact | None = None) -> None:
        super().__init__()
        self.cfg = TranslationDataConfig.from_config(data)
        self.cache_dir, self.seed = Path(cache_dir), int(seed)
        self.accumulate, self.max_steps = int(accumulate_grad_batches), int(max_steps)
        self.pair, self.swapped = self.cfg.direction()
        self.files = self.cfg.parallel[self.pair]
        self.held_out = [f for r in (self.cfg.retrieval or {}).values() for f in (r.src, r.tgt)]
        self.given_tokenizer = tokenizer
        self.tokenizer: TokenizerArtifact | None = None
        self.root: Path | None = None
        self.train_set: TranslationPairs | None = None
        self.val_set: TranslationPairs | None = None
        self._val_texts: tuple[list[str], list[str]] | None = None

    @property
    def src_lang(self) -> str:
        return self.cfg.src_lang

    @property
    def tgt_lang(self) -> str:
        return self.cfg.tgt_lang

    @property
    def languages(self) -> list[str]:
        return list(self.cfg.languages)

    # ------------------------------------------------------------------ the pairs, as build_or_load_parallel numbers them
    def _pairs(self) -> Iterator[tuple[int, str, str]]:
        """(pair index, l1 sentence, l2 sentence) of the pair's files, numbered as the shards'
        train/val split numbers them: after dropping retrieval sentences, up to max_pairs."""
        banned = {_normalize(ln) for f in text.expand_files(self.held_out, key="data.retrieval")
                  for ln in f.read_text(encoding="utf-8").split("\n") if ln.strip()} if self.held_out else set()
        k, cap = 0, self.cfg.max_pairs
        for s, t in read_parallel(self.files.src, self.files.tgt, where=f"data.parallel.{self.pair}"):
            if cap is not None and k >= cap:
                return
            if _normalize(s) in banned or _normalize(t) in banned:
                continue
            yield k, s, t
            k += 1

    def _tokenizer_texts(self) -> Iterator[str]:
        """Both sides of the training pairs (no validation pair), up to tokenizer_chars characters."""
        budget, got, vf = int(self.cfg.tokenizer_chars), 0, float(self.cfg.val_fraction)
        for k, s, t in self._pairs():
            if _is_val_doc(k, vf):
                continue
            yield s
            yield t
            got += len(s) + len(t)
            if got >= budget:
                return

    def _corpus_fingerprint(self) -> str:
        parts = {"src": text.fingerprint({"files": list(self.files.src)}),
                 "tgt": text.fingerprint({"files": list(self.files.tgt)}),
                 "exclude": text.fingerprint({"files": self.held_out}) if self.held_out else None,
                 "val_fraction": self.cfg.val_fraction, "max_pairs": self.cfg.max_pairs,
                 "chars": self.cfg.tokenizer_chars}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ heavy, cached work
    def prepare(self) -> TokenizerArtifact:
        """Check the files, get the tokenizer (given, `data.tokenizer.path`, or trained and cached),
        build/load the aligned shards. Safe to call repeatedly."""
        if self.tokenizer is not None:
            return self.tokenizer
        # cheap checks first: nothing is trained or built from misaligned files
        check_parallel_files(self.files.src, self.files.tgt, where=f"data.parallel.{self.pair}")
        if self.held_out:
            text.expand_files(self.held_out, key="data.retrieval")
        if self.given_tokenizer is not None:
            tok = self.given_tokenizer
        elif self.cfg.tokenizer_path:
            tok = TokenizerArtifact.load(self.cfg.tokenizer_path)
        else:
            tok = get_or_train_tokenizer(self.cfg.tokenizer_spec(), lambda: ([s] for s in self._tokenizer_texts()),
                                         self._corpus_fingerprint(), self.cache_dir / "tokenizers")
        # the pair's own orientation (src = l1), as XLM builds it: both directions share the shards
        self.root = build_or_load_parallel(
            f"{self.cfg.name}-{self.pair}", self.files.src, self.files.tgt, tok, self.cache_dir / "shards",
            val_fraction=float(self.cfg.val_fraction), max_pairs=self.cfg.max_pairs, exclude_files=self.held_out)
        self.tokenizer = tok
        return tok

    def prepare_data(self) -> None:
        self.prepare()

    def dataset_records(self) -> list[DatasetRecord]:
        """The pairs trained on and the held-out validation pairs (as built)."""
        if self.root is None:
            return []
        name = f"{self.cfg.name}-{self.pair}"
        digest = combined_digest([text.fingerprint({"files": list(self.files.src)}),
                                  text.fingerprint({"files": list(self.files.tgt)})])
        src = {"files": [*self.files.src, *self.files.tgt]}
        return [shard_record(name, self.root / "train", "train", src, digest),
                shard_record(f"{name}-heldout", self.root / "val", "validation", src, digest)]

    # ------------------------------------------------------------------ datasets and loaders
    def _dataset(self, split: str, limit: int | None = None) -> TranslationPairs:
        tok = self.tokenizer
        ds = TranslationPairs(self.root / split, int(self.cfg.max_seq_len), tok.special_id(CLS), tok.special_id(SEP),
                              swap=self.swapped, limit=limit)
        if len(ds) == 0:
            raise ValueError(f"data.parallel.{self.pair}: no {split} pairs")
        return ds

    def setup(self, stage: str | None = None) -> None:
        self.prepare()
        if self.train_set is None:
            self.train_set = self._dataset("train")
            self.val_set = self._dataset("val", self.cfg.max_val_pairs)
            log.info("data: %d train / %d val pairs %s -> %s", len(self.train_set), len(self.val_set),
                     self.src_lang, self.tgt_lang)

    def collator(self) -> TranslationCollator:
        return TranslationCollator(pad_id=self.tokenizer.special_id(PAD), max_seq_len=int(self.cfg.max_seq_len))

    def train_sampler(self, *, grouped: bool = True) -> StreamBatchSampler:
        """Training batches of similar-length pairs (`grouped=False`: plain random batches)."""
        rank, world = self.rank_world()
        ds = self.train_set
        return StreamBatchSampler(len(ds), int(self.cfg.batch_size), num_batches=self.train_batches(), seed=self.seed,
                                  shuffle=True, rank=rank, world_size=world, lengths=ds.lengths() if grouped else None)

    def train_dataloader(self) -> ResumableLoader:
        return self.resumable_loader(self.train_set, self.train_sampler(), self.collator())

    def val_dataloader(self) -> DataLoader:
        rank, world = self.rank_world()
        ds = self.val_set
        sampler = StreamBatchSampler(len(ds), self.cfg.eval_batch_size, seed=self.seed + 1, shuffle=False,
                                     rank=rank, world_size=world, lengths=ds.lengths())
        return DataLoader(ds, batch_sampler=sampler, **self.loader_kwargs(self.collator()))

    # ------------------------------------------------------------------ raw text of the validation pairs
    def val_texts(self) -> tuple[list[str], list[str]]:
        """(sources, references): the raw text of the validation pairs, in the val shard's order and
        capped like it (max_val_pairs), for sacreBLEU (references untokenized)."""
        self.prepare()
        if self._val_texts is None:
            vf, cap = float(self.cfg.val_fraction), self.cfg.max_val_pairs
            held = [(s, t) for k, s, t in self._pairs() if _is_val_doc(k, vf)]
            # the shards drop a pair whose side tokenizes to nothing: so do we, to stay aligned
            tok = self.tokenizer.tokenizer
            enc_s = tok.encode_batch([s for s, _ in held], add_special_tokens=False) if held else []
            enc_t = tok.encode_batch([t for _, t in held], add_special_tokens=False) if held else []
            held = [p for p, es, et in zip(held, enc_s, enc_t) if es.ids and et.ids]
            n_shard = int(json.loads((self.root / "val" / "src" / "meta.json").read_text())["n_documents"])
            if len(held) != n_shard:
                raise RuntimeError(f"{self.root}/val holds {n_shard} pairs but the files give {len(held)}: "
                                   "the files changed since the shards were built? delete the folder to rebuild")
            if cap is not None:
                held = held[: int(cap)]
            l1, l2 = [s for s, _ in held], [t for _, t in held]
            self._val_texts = (l2, l1) if self.swapped else (l1, l2)
        return list(self._val_texts[0]), list(self._val_texts[1])
