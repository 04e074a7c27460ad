"""Corpus -> token shards on disk (numpy memmap) + `meta.json`, cached by content hash.

A shard directory holds one flat token stream and its structure:

    tokens.bin        uint16/uint32 token ids (no special tokens), all sentences back to back
    word_start.bin    uint8, 1 where a token begins a word (for whole-word masking)
    sent_bounds.npy   int64 (S+1,): token offset where each sentence starts
    doc_bounds.npy    int64 (D+1,): sentence index where each document starts
    meta.json         tokenizer content digest, vocab size, special ids, counts; written last

Writing streams documents and appends to the files, so memory stays flat as corpora grow;
encoding runs in worker processes (`lit_tf.data.shard_workers`), with files identical to an
in-process build. Reading (`TokenShard`) uses positional reads, not memory maps, so a training
process's RSS does not grow with the shard files either (`ShardArray`).
The directory is built under a temporary name and renamed when complete: a crash never
leaves a shard that looks finished. Shard folders are keyed by the corpus fingerprint and the
tokenizer's content digest (never its settings), and built by global rank 0 only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from lit_tf.data.atomic import build_once
from lit_tf.data.shard_workers import EncoderPool, default_workers
from lit_tf.data.tokenizer import TokenizerArtifact, encode_flat

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
        """Append documents given as lists of `(ids, word_starts)` per sentence (`encode_words`)."""
        sents = [(d, i, s) for d, doc in enumerate(encoded_docs) for i, s in doc]
        self.add_arrays(
            np.fromiter((t for _, i, _ in sents for t in i), dtype=self.dtype),
            np.fromiter((t for _, _, s in sents for t in s), dtype=np.uint8),
            np.fromiter((len(i) for _, i, _ in sents), dtype=np.int64, count=len(sents)),
            np.fromiter((d for d, _, _ in sents), dtype=np.int64, count=len(sents)),
        )

    def add_arrays(self, ids: np.ndarray, starts: np.ndarray, lengths: np.ndarray, sent_doc: np.ndarray) -> None:
        """Append sentences given flat (`encode_flat`): their tokens and word-start flags back to
        back, each sentence's token count, and the (non-decreasing) document each belongs to.
        Sentences that tokenized to nothing are dropped, and documents left with none."""
        keep = lengths > 0
        lengths, sent_doc = lengths[keep], sent_doc[keep]
        if not len(lengths):
            return
        _, doc_sents = np.unique(sent_doc, return_counts=True)  # sorted = document order
        np.asarray(ids, dtype=self.dtype).tofile(self.f_tok)
        np.asarray(starts, dtype=np.uint8).tofile(self.f_ws)
        lengths.astype(np.int64).tofile(self.f_sl)
        doc_sents.astype(np.int64).tofile(self.f_dc)
        self.n_tokens += len(ids)
        self.n_sents += len(lengths)
        self.n_docs += len(doc_sents)

    def abort(self) -> None:
        for f in (self.f_tok, self.f_ws, self.f_sl, self.f_dc):
            f.close()

    def close(self, meta: dict) -> None:
        for f in (self.f_tok, self.f_ws, self.f_sl, self.f_dc):
            f.close()
        _save_bounds(self.root / "sent_lens.tmp", self.root / "sent_bounds.npy", self.n_sents)
        _save_bounds(self.root / "doc_sents.tmp", self.root / "doc_bounds.npy", self.n_docs)
        (self.root / "sent_lens.tmp").unlink()
        (self.root / "doc_sents.tmp").unlink()
        meta = dict(meta, n_tokens=self.n_tokens, n_sentences=self.n_sents, n_documents=self.n_docs)
        (self.root / "meta.json").write_text(json.dumps(meta, indent=2))


def _save_bounds(counts: Path, out: Path, n: int, chunk: int = 1 << 20) -> None:
    """`np.save(out, [0, *cumsum(counts)])` for the int64 file `counts` of `n` items, a chunk at a
    time (the same bytes as `np.save`, in constant memory however many sentences there are)."""
    i64 = np.dtype(np.int64)
    with open(counts, "rb") as src, open(out, "wb") as dst:
        np.lib.format.write_array_header_1_0(
            dst, {"descr": np.lib.format.dtype_to_descr(i64), "fortran_order": False, "shape": (n + 1,)})
        total = np.zeros(1, dtype=i64)
        total.tofile(dst)
        while len(part := np.fromfile(src, dtype=i64, count=chunk)):
            bounds = np.cumsum(part) + total[0]
            bounds.tofile(dst)
            total[0] = bounds[-1]


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


def _route(batch: list[list[str]], encoded: tuple[np.ndarray, np.ndarray, np.ndarray], first_doc: int,
           val_fraction: float, writers: dict[str, _SplitWriter]) -> None:
    """Append one encoded batch of documents (numbered from `first_doc`) to the split files."""
    ids, starts, lengths = encoded
    n_sents = np.fromiter(map(len, batch), dtype=np.int64, count=len(batch))
    sent_doc = np.repeat(np.arange(len(batch), dtype=np.int64), n_sents)
    if "val" not in writers:
        writers["train"].add_arrays(ids, starts, lengths, sent_doc)
        return
    is_val = np.fromiter((_is_val_doc(first_doc + k, val_fraction) for k in range(len(batch))), dtype=bool,
                         count=len(batch))
    for split, in_split in (("train", ~is_val), ("val", is_val)):
        sent_sel = in_split[sent_doc]
        tok_sel = np.repeat(sent_sel, lengths)
        writers[split].add_arrays(ids[tok_sel], starts[tok_sel], lengths[sent_sel], sent_doc[sent_sel])


def _without_post_processor(tok: Tokenizer) -> Tokenizer:
    """A copy of `tok` without its post-processor, for encoding without special tokens.

    Post-processors (templates, BERT/RoBERTa, byte-level offset trimming) only add special tokens
    and adjust offsets and type ids; with `add_special_tokens=False` the ids and word ids are the
    same without them, and encoding takes ~10% less time.
    """
    out = Tokenizer.from_str(tok.to_str())
    out.post_processor = None
    return out


def write_shards(
    docs: Iterable[list[str]],
    tokenizer: TokenizerArtifact,
    out_dir: Path,
    *,
    val_fraction: float = 0.0,
    max_docs: int | None = None,
    desc: str = "tokenizing",
    meta: Mapping | None = None,
    workers: int | None = None,
) -> None:
    """Tokenize `docs` into `out_dir/train` (and `out_dir/val` when val_fraction > 0).

    `workers`: encoder processes (`lit_tf.data.shard_workers`; None: `default_workers()`, i.e.
    `LIT_TF_SHARD_WORKERS` or this machine's cores, at most 8; 0 or 1: encode in this process).
    Documents are read here and the results written in order, so the files are byte-identical
    whatever the number of workers. The first batch is always encoded here: a corpus of one
    batch never starts a worker.
    """
    dtype = token_dtype(tokenizer.vocab_size)
    base_meta = {
        "version": SHARD_VERSION,
        "tokenizer_digest": tokenizer.digest,
        "vocab_size": tokenizer.vocab_size,
        "special_ids": tokenizer.meta["special_ids"],
        "dtype": dtype.name,
        **(meta or {}),
    }
    n_workers = default_workers() if workers is None else int(workers)
    encoder = _without_post_processor(tokenizer.tokenizer)
    writers = {"train": _SplitWriter(out_dir / "train", dtype)}
    pool: EncoderPool | None = None
    try:
        if val_fraction > 0:
            writers["val"] = _SplitWriter(out_dir / "val", dtype)
        with tqdm(desc=desc, unit=" docs", dynamic_ncols=True, mininterval=1.0) as bar:
            doc_index = 0

            def write(batch: list[list[str]], encoded: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
                nonlocal doc_index
                _route(batch, encoded, doc_index, val_fraction, writers)
                doc_index += len(batch)
                bar.update(len(batch))
                bar.set_postfix(tokens=writers["train"].n_tokens, refresh=False)

            submitted: deque[list[list[str]]] = deque()  # batches in the pool, oldest first
            for i, batch in enumerate(_batched(islice(docs, max_docs), _ENCODE_BATCH_SENTENCES)):
                flat = [s for doc in batch for s in doc]
                if i == 0 or n_workers <= 1:
                    write(batch, encode_flat(encoder, flat, dtype))
                    continue
                if pool is None:
                    pool = EncoderPool(encoder.to_str(), dtype, n_workers, what=desc)
                pool.submit(flat)
                submitted.append(batch)
                if pool.in_flight >= pool.capacity:
                    write(submitted.popleft(), pool.next_result())
            while submitted:
                write(submitted.popleft(), pool.next_result())
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    finally:
        if pool is not None:
            pool.close()
    for split, w in writers.items():
        w.close(dict(base_meta, split=split))
        if w.n_docs == 0:
            raise ValueError(f"{desc}: the {split} split got no documents (corpus empty or val_fraction too small)")


class ShardArray:
    """A read-only 1-D array in a file, read with positional reads (`os.preadv`), not mapped.

    Indexing (an int, a slice, an array of ints) returns an in-memory copy of just those items;
    `np.asarray(a)` reads it all. Why not `np.memmap`: every page of a mapping that training
    touches stays mapped into the process, with the readahead around it, so a run's RSS
    climbed to the size of the shard files (a 50x corpus: +80 MB in 100 steps). Pages read with
    `pread` stay in the OS page cache, shared and reclaimable, and RSS stays flat however large
    the corpus. Pickles by path (a DataLoader worker reopens the file), never by content.
    """

    ndim = 1
    _GATHER_CHUNK = 1 << 18  # items read at once by a gather (`take`)

    def __init__(self, path: Path, dtype: np.dtype, n: int, offset: int = 0) -> None:
        self.path, self.dtype, self.offset = Path(path), np.dtype(dtype), int(offset)
        self.shape = (int(n),)
        self._fd: int | None = None
        self._pid = -1

    @classmethod
    def npy(cls, path: Path) -> ShardArray:
        """A 1-D `.npy` file (its header read, its data left on disk)."""
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            if len(shape) != 1 or dtype.hasobject:
                raise ValueError(f"{path}: expected a 1-D numeric array, got shape {shape} dtype {dtype}")
            return cls(path, dtype, shape[0], f.tell())

    @property
    def size(self) -> int:
        return self.shape[0]

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"ShardArray({str(self.path)!r}, dtype={self.dtype}, n={len(self)})"

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_fd", "_pid")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _fd=None, _pid=-1)

    def __del__(self) -> None:
        try:
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
        except Exception:  # interpreter shutdown, or __init__ never finished
            pass

    def _read(self, lo: int, hi: int) -> np.ndarray:
        out = np.empty(max(0, hi - lo), dtype=self.dtype)
        if not len(out):
            return out
        if self._pid != os.getpid():  # first read in this process (a forked worker opens its own)
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        at = self.offset + lo * self.dtype.itemsize
        if hasattr(os, "preadv"):  # straight into the array
            got = os.preadv(self._fd, [memoryview(out).cast("B")], at)
        else:  # macOS < 11
            data = os.pread(self._fd, out.nbytes, at)
            got = len(data)
            out[: got // self.dtype.itemsize] = np.frombuffer(data[: got - got % self.dtype.itemsize], self.dtype)
        if got != out.nbytes:
            raise ValueError(f"{self.path}: file shorter than its {len(self)} items (corrupt?); delete the shard")
        return out

    def __getitem__(self, key):
        n = len(self)
        if isinstance(key, slice):
            lo, hi, step = key.indices(n)
            if step == 1:
                return self._read(lo, max(lo, hi))
            span = range(lo, hi, step)
            if not span:
                return self._read(0, 0)
            first, last = min(span[0], span[-1]), max(span[0], span[-1])
            return self._read(first, last + 1)[span[0] - first:: step]
        if isinstance(key, (int, np.integer)):
            i = int(key) + n if key < 0 else int(key)
            if not 0 <= i < n:
                raise IndexError(f"index {int(key)} is out of bounds for a shard array of {n} items")
            return self._read(i, i + 1)[0]
        return self.take(np.asarray(key))

    def take(self, index: np.ndarray) -> np.ndarray:
        """Items at integer positions `index`, reading the file a chunk at a time (sorted indexes,
        e.g. `doc_bounds`, need no extra copies)."""
        index = np.asarray(index)
        if index.dtype == bool or not np.issubdtype(index.dtype, np.integer):
            raise TypeError(f"ShardArray takes integer positions, not {index.dtype}; read a slice first")
        flat = index.ravel()
        if len(flat) and flat.min() < 0:
            flat = np.where(flat < 0, flat + len(self), flat)
        if len(flat) and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError(f"index out of bounds for a shard array of {len(self)} items")
        out = np.empty(len(flat), dtype=self.dtype)
        ordered = bool(np.all(flat[1:] >= flat[:-1]))
        order = None if ordered else np.argsort(flat, kind="stable")
        srt = flat if ordered else flat[order]
        for lo in range(0, len(self), self._GATHER_CHUNK):
            a, b = np.searchsorted(srt, [lo, lo + self._GATHER_CHUNK])
            if a < b:
                chunk = self._read(lo, min(len(self), lo + self._GATHER_CHUNK))[srt[a:b] - lo]
                if ordered:
                    out[a:b] = chunk
                else:
                    out[order[a:b]] = chunk
        return out.reshape(index.shape)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self._read(0, len(self))
        return out if dtype is None else out.astype(dtype)


@dataclass
class TokenShard:
    """Read-only view of one shard directory: arrays read from disk on demand (`ShardArray`)."""

    path: Path
    tokens: ShardArray
    word_start: ShardArray
    sent_bounds: ShardArray
    doc_bounds: ShardArray
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
        tokens = ShardArray(path / "tokens.bin", np.dtype(meta["dtype"]), n)
        word_start = ShardArray(path / "word_start.bin", np.dtype(np.uint8), n)
        sent_bounds = ShardArray.npy(path / "sent_bounds.npy")
        doc_bounds = ShardArray.npy(path / "doc_bounds.npy")
        sizes_ok = all(a.path.stat().st_size == a.offset + a.size * a.dtype.itemsize
                       for a in (tokens, word_start, sent_bounds, doc_bounds))
        if not sizes_ok or sent_bounds[-1] != n or doc_bounds[-1] != len(sent_bounds) - 1:
            raise ValueError(f"{path}: shard files disagree with meta.json (corrupt?); delete it to rebuild")
        return cls(path, tokens, word_start, sent_bounds, doc_bounds, meta)

    @property
    def doc_token_bounds(self) -> np.ndarray:
        """(D+1,) token offset where each document starts (read without loading `sent_bounds`)."""
        return self.sent_bounds.take(np.asarray(self.doc_bounds))

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
    workers: int | None = None,
) -> Path:
    """Return the shard root for (corpus, tokenizer content, split settings); build it if missing
    (global rank 0 only: other ranks wait for it, see `lit_tf.data.atomic.build_once`).

    `workers`: encoder processes for the build (see `write_shards`); not part of the cache key,
    since the files do not depend on it."""
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
            workers=workers,
        )

    return build_once(final, "train/meta.json", build, what=f"shards {name}")
