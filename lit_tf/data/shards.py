"""Corpus -> token shards on disk (numpy memmap) + `meta.json`, cached by content hash.

A shard directory holds one flat token stream and its structure:

    tokens.bin        uint16/uint32 token ids (no special tokens), all sentences back to back
    word_start.bin    uint8, 1 where a token begins a word (for whole-word masking)
    sent_bounds.npy   int64 (S+1,): token offset where each sentence starts
    doc_bounds.npy    int64 (D+1,): sentence index where each document starts
    meta.json         tokenizer content digest, vocab size, special ids, counts; written last

Writing streams documents and appends to the files, so memory stays flat as corpora grow.
The directory is built under a temporary name and renamed when complete: a crash never
leaves a shard that looks finished. Shard folders are keyed by the corpus fingerprint and the
tokenizer's content digest (never its settings), and built by global rank 0 only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from lit_tf.data.atomic import build_once
from lit_tf.data.tokenizer import TokenizerArtifact, encode_words

log = logging.getLogger(__name__)

SHARD_VERSION = 1
_ENCODE_BATCH_SENTENCES = 4096


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


class _SplitWriter:
    """Appends encoded documents of one split to its files."""

    def __init__(self, root: Path, dtype: np.dtype) -> None:
        root.mkdir(parents=True)
        self.root, self.dtype = root, dtype
        self.f_tok = open(root / "tokens.bin", "wb")
        self.f_ws = open(root / "word_start.bin", "wb")
        self.f_sl = open(root / "sent_lens.tmp", "wb")
        self.f_dc = open(root / "doc_sents.tmp", "wb")
        self.n_tokens = self.n_sents = self.n_docs = 0

    def add(self, encoded_docs: list[list[tuple[list[int], list[bool]]]]) -> None:
        ids, starts, sent_lens, doc_sents = [], [], [], []
        for doc in encoded_docs:
            kept = [(i, s) for i, s in doc if i]  # drop sentences that tokenized to nothing
            if not kept:
                continue
            for i, s in kept:
                ids.extend(i)
                starts.extend(s)
                sent_lens.append(len(i))
            doc_sents.append(len(kept))
        if not doc_sents:
            return
        np.asarray(ids, dtype=self.dtype).tofile(self.f_tok)
        np.asarray(starts, dtype=np.uint8).tofile(self.f_ws)
        np.asarray(sent_lens, dtype=np.int64).tofile(self.f_sl)
        np.asarray(doc_sents, dtype=np.int64).tofile(self.f_dc)
        self.n_tokens += len(ids)
        self.n_sents += len(sent_lens)
        self.n_docs += len(doc_sents)

    def close(self, meta: dict) -> None:
        for f in (self.f_tok, self.f_ws, self.f_sl, self.f_dc):
            f.close()
        sent_lens = np.fromfile(self.root / "sent_lens.tmp", dtype=np.int64)
        doc_sents = np.fromfile(self.root / "doc_sents.tmp", dtype=np.int64)
        np.save(self.root / "sent_bounds.npy", np.concatenate([[0], np.cumsum(sent_lens)]))
        np.save(self.root / "doc_bounds.npy", np.concatenate([[0], np.cumsum(doc_sents)]))
        (self.root / "sent_lens.tmp").unlink()
        (self.root / "doc_sents.tmp").unlink()
        meta = dict(meta, n_tokens=self.n_tokens, n_sentences=self.n_sents, n_documents=self.n_docs)
        (self.root / "meta.json").write_text(json.dumps(meta, indent=2))


def _is_val_doc(index: int, val_fraction: float) -> bool:
    """Deterministic document-level hold-out (hash of the document index)."""
    if val_fraction <= 0:
        return False
    h = int.from_bytes(hashlib.blake2b(index.to_bytes(8, "little"), digest_size=8).digest(), "little")
    return (h % 1_000_000) < val_fraction * 1_000_000


def _batched(docs: Iterable[list[str]], n_sentences: int) -> Iterator[list[list[str]]]:
    batch, count = [], 0
    for doc in docs:
        batch.append(doc)
        count += len(doc)
        if count >= n_sentences:
            yield batch
            batch, count = [], 0
    if batch:
        yield batch


def write_shards(
    docs: Iterable[list[str]],
    tokenizer: TokenizerArtifact,
    out_dir: Path,
    *,
    val_fraction: float = 0.0,
    max_docs: int | None = None,
    desc: str = "tokenizing",
    meta: Mapping | None = None,
) -> None:
    """Tokenize `docs` into `out_dir/train` (and `out_dir/val` when val_fraction > 0)."""
    dtype = token_dtype(tokenizer.vocab_size)
    base_meta = {
        "version": SHARD_VERSION,
        "tokenizer_digest": tokenizer.digest,
        "vocab_size": tokenizer.vocab_size,
        "special_ids": tokenizer.meta["special_ids"],
        "dtype": dtype.name,
        **(meta or {}),
    }
    writers = {"train": _SplitWriter(out_dir / "train", dtype)}
    if val_fraction > 0:
        writers["val"] = _SplitWriter(out_dir / "val", dtype)
    doc_index = 0
    with tqdm(desc=desc, unit=" docs", dynamic_ncols=True, mininterval=1.0) as bar:
        limited = (d for i, d in enumerate(docs) if max_docs is None or i < max_docs)
        for batch in _batched(limited, _ENCODE_BATCH_SENTENCES):
            flat = [s for doc in batch for s in doc]
            encoded = encode_words(tokenizer.tokenizer, flat)
            per_split: dict[str, list] = {k: [] for k in writers}
            pos = 0
            for doc in batch:
                split = "val" if _is_val_doc(doc_index, val_fraction) else "train"
                per_split[split].append(encoded[pos : pos + len(doc)])
                pos += len(doc)
                doc_index += 1
                if max_docs is not None and doc_index >= max_docs:
                    break
            for split, enc in per_split.items():
                writers[split].add(enc)
            bar.update(len(batch))
            bar.set_postfix(tokens=writers["train"].n_tokens)
    for split, w in writers.items():
        w.close(dict(base_meta, split=split))
        if w.n_docs == 0:
            raise ValueError(f"{desc}: the {split} split got no documents (corpus empty or val_fraction too small)")


@dataclass
class TokenShard:
    """Read-only view of one shard directory (memory-mapped)."""

    path: Path
    tokens: np.ndarray
    word_start: np.ndarray
    sent_bounds: np.ndarray
    doc_bounds: np.ndarray
    meta: dict

    @classmethod
    def open(cls, path: str | os.PathLike) -> TokenShard:
        path = Path(path)
        meta_path = path / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{path}: not a finished token shard (no meta.json)")
        meta = json.loads(meta_path.read_text())
        if meta.get("version") != SHARD_VERSION:
            raise ValueError(f"{meta_path}: shard version {meta.get('version')} != {SHARD_VERSION}; delete it to rebuild")
        n = meta["n_tokens"]
        tokens = np.memmap(path / "tokens.bin", dtype=np.dtype(meta["dtype"]), mode="r", shape=(n,))
        word_start = np.memmap(path / "word_start.bin", dtype=np.uint8, mode="r", shape=(n,))
        sent_bounds = np.load(path / "sent_bounds.npy", mmap_mode="r")
        doc_bounds = np.load(path / "doc_bounds.npy", mmap_mode="r")
        if sent_bounds[-1] != n or doc_bounds[-1] != len(sent_bounds) - 1:
            raise ValueError(f"{path}: shard files disagree with meta.json (corrupt?); delete it to rebuild")
        return cls(path, tokens, word_start, sent_bounds, doc_bounds, meta)

    @property
    def doc_token_bounds(self) -> np.ndarray:
        """(D+1,) token offset where each document starts."""
        return np.asarray(self.sent_bounds)[np.asarray(self.doc_bounds)]

    def __len__(self) -> int:
        return int(self.meta["n_tokens"])


def build_or_load_shards(
    name: str,
    source_fingerprint: str,
    docs_factory,
    tokenizer: TokenizerArtifact,
    cache_dir: str | os.PathLike,
    *,
    val_fraction: float = 0.0,
    max_docs: int | None = None,
) -> Path:
    """Return the shard root for (corpus, tokenizer content, split settings); build it if missing
    (global rank 0 only: other ranks wait for it, see `lit_tf.data.atomic.build_once`)."""
    if not tokenizer.digest:
        raise ValueError(f"shards {name}: the tokenizer has no content digest (load it with TokenizerArtifact.load)")
    key_src = json.dumps(
        {"src": source_fingerprint, "tok": tokenizer.digest, "val": val_fraction, "max_docs": max_docs,
         "v": SHARD_VERSION},
        sort_keys=True,
    )
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    final = Path(cache_dir) / f"{name}-{key}"

    def build(out: Path) -> None:
        write_shards(
            docs_factory(), tokenizer, out, val_fraction=val_fraction, max_docs=max_docs,
            desc=f"tokenizing {name}", meta={"source_fingerprint": source_fingerprint, "name": name},
        )

    return build_once(final, "train/meta.json", build, what=f"shards {name}")
