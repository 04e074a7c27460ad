"""Cross-lingual (XLM-style) data: per-language monolingual streams and parallel pairs.

- One shared subword vocabulary is trained over all languages, the text of each language
  sampled by the alpha rule (q_i proportional to p_i^alpha) so small languages are not
  drowned by large ones.
- Monolingual text of each language becomes its own token shard (MLM or CLM blocks, language
  ids on every token); parallel sentences become aligned source/target shards (TLM pairs:
  `[CLS] src [SEP] tgt [SEP]`, positions restarting at the target, per-token language ids).
- Each training step draws, per term, one stream by alpha sampling over its streams (separately
  for monolingual and parallel data) and a batch from that stream. Batch positions are
  functions of (seed, step), so resume reproduces them. Validation reads every stream
  separately, giving per-language metrics.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from lit_tf.data import text
from lit_tf.data.atomic import build_once
from lit_tf.data.config import CrossLingualDataConfig
from lit_tf.data.pretraining import CLMCollator, MLMCollator, PackedBlockDataset, _split_key
from lit_tf.data.records import DatasetRecord, combined_digest, shard_record
from lit_tf.data.sampling import ResumableLoader, StreamBatchSampler, StreamDataModule
from lit_tf.data.shards import (
    SHARD_VERSION,
    TokenShard,
    _is_val_doc,
    _SplitWriter,
    build_or_load_shards,
    token_dtype,
)
from lit_tf.data.tokenizer import (
    CLS,
    MASK,
    PAD,
    SEP,
    TokenizerArtifact,
    encode_words,
    get_or_train_tokenizer,
)
from lit_tf.objectives.config import ObjectiveConfig
from lit_tf.objectives.crosslingual import LanguageSampler, alpha_sampling_probs, build_tlm_example

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# parallel text
# --------------------------------------------------------------------------------------------
def _count_lines(path: Path) -> int:
    """Lines as `read_parallel` counts them (split on "\n", no trailing empty line), in 1 MiB reads."""
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


def check_parallel_files(src_files, tgt_files, *, where: str) -> None:
    """Before any tokenization: as many source as target files, pairwise with equal line counts."""
    src_paths, tgt_paths = text.expand_files(src_files, key=f"{where}.src"), text.expand_files(tgt_files, key=f"{where}.tgt")
    if len(src_paths) != len(tgt_paths):
        raise text.CorpusError(f"{where}: {len(src_paths)} source files but {len(tgt_paths)} target files")
    for sp, tp in zip(src_paths, tgt_paths):
        ns, nt = _count_lines(sp), _count_lines(tp)
        if ns != nt:
            raise text.CorpusError(f"{where}: {sp} has {ns} lines but {tp} has {nt}: not aligned")


def read_parallel(src_files, tgt_files, *, where: str) -> Iterator[tuple[str, str]]:
    """Yield aligned (src, tgt) lines; a line-count mismatch is an error naming the files."""
    src_paths, tgt_paths = text.expand_files(src_files, key=f"{where}.src"), text.expand_files(tgt_files, key=f"{where}.tgt")
    if len(src_paths) != len(tgt_paths):
        raise text.CorpusError(f"{where}: {len(src_paths)} source files but {len(tgt_paths)} target files")
    for sp, tp in zip(src_paths, tgt_paths):
        # split on "\n" only: some corpora hold U+0085 inside lines, which str.splitlines() would split on
        src = sp.read_text(encoding="utf-8").split("\n")
        tgt = tp.read_text(encoding="utf-8").split("\n")
        if src and src[-1] == "":
            src.pop()
        if tgt and tgt[-1] == "":
            tgt.pop()
        if len(src) != len(tgt):
            raise text.CorpusError(f"{where}: {sp} has {len(src)} lines but {tp} has {len(tgt)}: not aligned")
        for s, t in zip(src, tgt):
            if s.strip() and t.strip():
                yield s.strip(), t.strip()


def _normalize(s: str) -> str:
    return " ".join(s.lower().split())


def build_or_load_parallel(
    name: str, src_files, tgt_files, tokenizer: TokenizerArtifact, cache_dir: Path, *, val_fraction: float,
    max_pairs: int | None = None, exclude_files=(),
) -> Path:
    """Aligned shards `<root>/{train,val}/{src,tgt}`: sentence i of src translates sentence i of tgt.

    Pairs with either side among the lines of `exclude_files` (e.g. a retrieval test set drawn
    from the same source) are dropped, so evaluation never sees training sentences.
    """
    exclude_files = [str(f) for f in exclude_files]
    fp = hashlib.sha256(json.dumps([text.fingerprint({"files": list(src_files)}),
                                    text.fingerprint({"files": list(tgt_files)}), tokenizer.digest, val_fraction,
                                    max_pairs, text.fingerprint({"files": exclude_files}) if exclude_files else None],
                                   sort_keys=True).encode()).hexdigest()[:16]
    final = cache_dir / f"{name}-{fp}"

    def build(out: Path) -> None:
        dtype = token_dtype(tokenizer.vocab_size)
        splits = ("train", "val") if val_fraction > 0 else ("train",)
        writers = {(sp, side): _SplitWriter(out / sp / side, dtype) for sp in splits for side in ("src", "tgt")}
        banned = {_normalize(ln) for f in text.expand_files(exclude_files, key="data.retrieval") if exclude_files
                  for ln in f.read_text(encoding="utf-8").split("\n") if ln.strip()} if exclude_files else set()
        pairs = (p for p in read_parallel(src_files, tgt_files, where=f"data.parallel.{name}")
                 if _normalize(p[0]) not in banned and _normalize(p[1]) not in banned)
        batch: list[tuple[str, str]] = []

        def flush(start_index: int) -> None:
            enc_s = encode_words(tokenizer.tokenizer, [s for s, _ in batch])
            enc_t = encode_words(tokenizer.tokenizer, [t for _, t in batch])
            for k, (es, et) in enumerate(zip(enc_s, enc_t)):
                if not es[0] or not et[0]:
                    continue  # a side tokenized to nothing: drop the pair, keep alignment
                sp = "val" if _is_val_doc(start_index + k, val_fraction) else "train"
                writers[(sp, "src")].add([[es]])
                writers[(sp, "tgt")].add([[et]])

        seen = 0
        for pair in pairs:
            if max_pairs is not None and seen >= max_pairs:
                break
            batch.append(pair)
            seen += 1
            if len(batch) == 4096:
                flush(seen - len(batch))
                batch = []
        if batch:
            flush(seen - len(batch))
        meta = {"version": SHARD_VERSION, "tokenizer_digest": tokenizer.digest, "vocab_size": tokenizer.vocab_size,
                "special_ids": tokenizer.meta["special_ids"], "dtype": dtype.name, "name": name}
        for (sp, side), w in writers.items():
            w.close(dict(meta, split=sp, side=side))
            if w.n_docs == 0:
                raise ValueError(f"data.parallel.{name}: no {sp} pairs (files empty or val_fraction too small)")

    return build_once(final, "train/tgt/meta.json", build, what=f"parallel shards {name}")


# --------------------------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------------------------
class MonolingualDataset:
    """Packed blocks of one language, with its language id on every token."""

    def __init__(self, shard: TokenShard, max_seq_len: int, lang_id: int, cls_id: int, sep_id: int, causal: bool):
        frame = {} if causal else {"bos_id": cls_id, "eos_id": sep_id}
        self.blocks = PackedBlockDataset(shard, max_seq_len, doc_sep_id=sep_id, **frame)
        self.lang_id = lang_id

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, key) -> dict:
        ex = self.blocks[key]
        n = len(ex["input_ids"])
        ex.pop("token_type_ids")
        ex["lang_ids"] = np.full(n, self.lang_id, dtype=np.int64)
        ex["position_ids"] = np.arange(n, dtype=np.int64)
        return ex


class ParallelDataset:
    """TLM examples from aligned shards: `[CLS] src [SEP] tgt [SEP]`, positions restart at tgt."""

    def __init__(self, src: TokenShard, tgt: TokenShard, max_seq_len: int, src_lang: int, tgt_lang: int,
                 cls_id: int, sep_id: int):
        if len(src.sent_bounds) != len(tgt.sent_bounds):
            raise ValueError(f"{src.path} and {tgt.path} are not aligned")
        self.src, self.tgt, self.max_len = src, tgt, max_seq_len
        self.langs, self.cls_id, self.sep_id = (src_lang, tgt_lang), cls_id, sep_id

    def __len__(self) -> int:
        return len(self.src.sent_bounds) - 1

    def __getitem__(self, key) -> dict:
        i, seed = _split_key(key)
        sb, tb = self.src.sent_bounds, self.tgt.sent_bounds
        src_ids = np.asarray(self.src.tokens[sb[i] : sb[i + 1]], dtype=np.int64)
        tgt_ids = np.asarray(self.tgt.tokens[tb[i] : tb[i + 1]], dtype=np.int64)
        ex = build_tlm_example(src_ids, tgt_ids, self.langs[0], self.langs[1], cls_id=self.cls_id, sep_id=self.sep_id,
                               max_len=self.max_len)
        # word starts for whole-word masking: recompute from the shards, truncated like the ids
        n_s = int((ex["lang_ids"] == self.langs[0]).sum()) - 2
        n_t = len(ex["input_ids"]) - n_s - 3
        ws = np.concatenate([[1], self.src.word_start[sb[i] : sb[i] + n_s], [1],
                             self.tgt.word_start[tb[i] : tb[i] + n_t], [1]]).astype(bool)
        return {**ex, "word_start": ws, "seed": seed}


class StreamMixture:
    """Routes keys `(stream, index, seed)` to the stream's dataset and tags the example."""

    def __init__(self, streams: Mapping[str, Any], stream_terms: Mapping[str, str]):
        self.streams, self.stream_terms = dict(streams), dict(stream_terms)

    def __len__(self) -> int:
        return sum(len(d) for d in self.streams.values())

    def __getitem__(self, key) -> dict:
        stream, i, seed = key
        ex = self.streams[stream][(i, seed)]
        ex["stream"] = stream
        return ex


class MixtureBatchSampler:
    """For each global step b and each term: draw a stream (alpha sampling, seeded by (seed, b,
    term)) and take batch b of that stream's own endless shuffled order. Yields lists of
    `(stream, index, seed)` keys, one group per term."""

    def __init__(self, stream_sizes: Mapping[str, int], term_probs: Mapping[str, Mapping[str, float]],
                 batch_size: int, num_batches: int, seed: int, rank: int = 0, world_size: int = 1):
        self.samplers = {s: StreamBatchSampler(n, batch_size, num_batches=num_batches, seed=seed + k, rank=rank,
                                               world_size=world_size)
                         for k, (s, n) in enumerate(sorted(stream_sizes.items()))}
        self.pickers = {t: LanguageSampler(p, seed=seed + 7919 * (k + 1)) for k, (t, p) in enumerate(sorted(term_probs.items()))}
        self.num_batches, self.seed, self.rank = num_batches, seed, rank
        self.start_batch = 0
        self._skip = 0

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        skip, self._skip = self._skip, 0
        for i in range(skip, self.num_batches):
            b = self.start_batch + i
            keys = []
            for term, picker in self.pickers.items():
                stream = picker.sample(b)
                idx, seeds = self.samplers[stream].batch_keys(b)
                salt = zlib.crc32(term.encode())  # two terms drawing the same stream mask differently
                keys += [(stream, int(j), int(s) ^ salt) for j, s in zip(idx, seeds)]
            yield keys


class GroupingCollator:
    """Collates a mixed list of examples into `{name: sub_batch}`, one sub-batch per term
    (training) or per stream (validation), each with its own collator and `term` tag."""

    def __init__(self, collators: Mapping[str, Any], stream_terms: Mapping[str, str], by_stream: bool):
        self.collators, self.stream_terms, self.by_stream = dict(collators), dict(stream_terms), by_stream

    def __call__(self, examples: list[dict]) -> dict[str, dict]:
        groups: dict[str, list[dict]] = {}
        for e in examples:
            term = self.stream_terms[e["stream"]]
            name = f"{e['stream']}/{term}" if self.by_stream else term
            groups.setdefault(name, []).append(e)
        out = {}
        for name, exs in groups.items():
            term = self.stream_terms[exs[0]["stream"]]
            sub = self.collators[term](exs)
            sub["term"] = term
            sub["stream"] = exs[0]["stream"]  # one stream per term and step (training) or per batch (validation)
            out[name] = sub
        return out


# --------------------------------------------------------------------------------------------
# the DataModule
# --------------------------------------------------------------------------------------------
class CrossLingualDataModule(StreamDataModule):
    """Args:
    data: the `data` config group (`CrossLingualDataConfig`: `languages`, `mono`, `parallel`,
        `alpha`, tokenizer, max_seq_len, batch sizes); a plain mapping is typed with its `from_config`.
    objective: the `objective` config group (mlm/tlm/clm terms via `weights`, masking settings).
    tokenizer: use this tokenizer (e.g. a resumed checkpoint's) instead of `data.tokenizer`.
    """

    def __init__(self, data: CrossLingualDataConfig | Mapping, objective: ObjectiveConfig | Mapping, *,
                 cache_dir: str, seed: int = 0, accumulate_grad_batches: int = 1, max_steps: int = -1,
                 tokenizer: TokenizerArtifact | None = None) -> None:
        super().__init__()
        self.cfg = CrossLingualDataConfig.from_config(data)
        self.obj = ObjectiveConfig.from_config(objective)
        self.cache_dir, self.seed = Path(cache_dir), int(seed)
        self.accumulate, self.max_steps = int(accumulate_grad_batches), int(max_steps)
        self.languages: list[str] = list(self.cfg.languages)
        if len(self.languages) < 2:
            raise ValueError("data.languages: list at least two languages, e.g. [en, es]")
        self.lang_id = {lang: i for i, lang in enumerate(self.languages)}
        self.mono_files = dict(self.cfg.mono or {})
        self.parallel_files = dict(self.cfg.parallel or {})
        for lang in self.mono_files:
            if lang not in self.lang_id:
                raise ValueError(f"data.mono.{lang}: language not in data.languages={self.languages}")
        for pair in self.parallel_files:
            l1, _, l2 = pair.partition("-")
            if l1 not in self.lang_id or l2 not in self.lang_id:
                raise ValueError(f"data.parallel.{pair}: name pairs as 'l1-l2' with both in data.languages={self.languages}")
        self.mono_term = self.obj.mono_term
        if self.mono_term not in ("mlm", "clm"):
            raise ValueError(f"objective.mono_term={self.mono_term!r} is not one of ['mlm', 'clm']")
        self.causal = self.mono_term == "clm"
        self.use_tlm = "tlm" in self.obj.weights and bool(self.parallel_files)
        if self.causal and self.use_tlm:
            raise ValueError("objective: TLM needs a bidirectional model; use mono_term=mlm with tlm, or drop tlm for CLM")
        self.stream_terms = {lang: self.mono_term for lang in self.mono_files}
        if self.use_tlm:
            self.stream_terms.update({pair: "tlm" for pair in self.parallel_files})
        self.tokenizer: TokenizerArtifact | None = None
        self.given_tokenizer = tokenizer
        self.mono_dirs: dict[str, Path] = {}
        self.para_dirs: dict[str, Path] = {}
        self.train_sets: dict[str, Any] = {}
        self.val_sets: dict[str, Any] = {}

    # ------------------------------------------------------------------ prepare
    def _mono_source(self, lang: str) -> dict:
        m = self.mono_files[lang]  # hashed into the cache keys: keep this dict's content as it is
        return {"files": list(m.files), "text_field": self.cfg.text_field, "doc_per_line": bool(m.doc_per_line)}

    def _tokenizer_texts(self, counts: Mapping[str, int], budget: int) -> Iterator[str]:
        """Sentences for the shared vocabulary: each language contributes in proportion to
        q_i = p_i^alpha / sum_j p_j^alpha (upsampling small languages by repetition)."""
        q = alpha_sampling_probs(counts, float(self.cfg.alpha))
        for lang in self.languages:
            if lang not in counts:
                continue
            want = int(q[lang] * budget)
            got = 0
            while got < want:
                before = got
                for doc in text.iter_documents(self._mono_source(lang)):
                    for s in doc:
                        yield s
                        got += len(s)
                        if got >= want:
                            break
                    if got >= want:
                        break
                if got == before:
                    break

    def prepare(self) -> TokenizerArtifact:
        if self.tokenizer is not None:
            return self.tokenizer
        for pair, files in self.parallel_files.items():  # cheap checks first: nothing is built from bad pairs
            check_parallel_files(files.src, files.tgt, where=f"data.parallel.{pair}")
        max_docs = self.cfg.max_docs
        if self.given_tokenizer is not None:
            self.tokenizer = self.given_tokenizer
        elif self.cfg.tokenizer_path:
            self.tokenizer = TokenizerArtifact.load(self.cfg.tokenizer_path)
        else:
            spec = self.cfg.tokenizer_spec()
            counts = {}
            for lang in self.mono_files:  # characters per language (bounded by max_docs)
                n = 0
                for i, doc in enumerate(text.iter_documents(self._mono_source(lang))):
                    if max_docs is not None and i >= max_docs:
                        break
                    n += sum(len(s) for s in doc)
                counts[lang] = max(n, 1)
            # Cap at the text there is: beyond it, repetition adds no information, only time.
            budget = min(int(self.cfg.tokenizer_chars), sum(counts.values()))
            fp = hashlib.sha256(json.dumps(
                {lang: text.fingerprint(self._mono_source(lang)) for lang in sorted(self.mono_files)}
                | {"alpha": self.cfg.alpha, "budget": budget, "counts": counts}, sort_keys=True,
            ).encode()).hexdigest()[:16]
            self.tokenizer = get_or_train_tokenizer(
                spec, lambda: ([s] for s in self._tokenizer_texts(counts, budget)), fp, self.cache_dir / "tokenizers")
        tok = self.tokenizer
        vf, name = float(self.cfg.val_fraction), self.cfg.name
        for lang in self.mono_files:
            src = self._mono_source(lang)
            root = build_or_load_shards(f"{name}-{lang}", text.fingerprint(src),
                                        lambda src=src: text.iter_documents(src), tok, self.cache_dir / "shards",
                                        val_fraction=vf, max_docs=max_docs, workers=self.cfg.shard_workers)
            self.mono_dirs[lang] = root
        held_out = [f for r in (self.cfg.retrieval or {}).values() for f in (r.src, r.tgt)]
        for pair, files in self.parallel_files.items():
            self.para_dirs[pair] = build_or_load_parallel(
                f"{name}-{pair}", files.src, files.tgt, tok, self.cache_dir / "shards",
                val_fraction=vf, max_pairs=self.cfg.max_pairs, exclude_files=held_out)
        return tok

    def prepare_data(self) -> None:
        self.prepare()

    def dataset_records(self) -> list[DatasetRecord]:
        """Each language's text and each parallel pair, train and held-out validation parts."""
        name = str(self.cfg.name)
        out = []
        for lang, root in self.mono_dirs.items():
            src = self._mono_source(lang)
            out += [shard_record(f"{name}-{lang}", root / "train", "train", src),
                    shard_record(f"{name}-{lang}-heldout", root / "val", "validation", src)]
        for pair, root in self.para_dirs.items():
            files = self.parallel_files[pair]
            digest = combined_digest([text.fingerprint({"files": list(files.src)}),
                                      text.fingerprint({"files": list(files.tgt)})])
            src = {"files": [*files.src, *files.tgt]}
            out += [shard_record(f"{name}-{pair}", root / "train", "train", src, digest),
                    shard_record(f"{name}-{pair}-heldout", root / "val", "validation", src, digest)]
        return out

    # ------------------------------------------------------------------ datasets and loaders
    def _sets(self, split: str) -> dict[str, Any]:
        tok = self.tokenizer
        cls_id, sep_id = tok.special_id(CLS), tok.special_id(SEP)
        L_ = self.cfg.max_seq_len
        sets: dict[str, Any] = {}
        for lang, root in self.mono_dirs.items():
            sets[lang] = MonolingualDataset(TokenShard.open(root / split), L_, self.lang_id[lang], cls_id, sep_id,
                                            self.causal)
        if self.use_tlm:
            for pair, root in self.para_dirs.items():
                l1, _, l2 = pair.partition("-")
                sets[pair] = ParallelDataset(TokenShard.open(root / split / "src"), TokenShard.open(root / split / "tgt"),
                                             L_, self.lang_id[l1], self.lang_id[l2], cls_id, sep_id)
        for name, ds in sets.items():
            if len(ds) == 0:
                raise ValueError(f"data: the {split} stream {name!r} has no examples (too little text for max_seq_len?)")
        return sets

    def setup(self, stage: str | None = None) -> None:
        self.prepare()
        if not self.train_sets:
            self.train_sets, self.val_sets = self._sets("train"), self._sets("val")

    def _collators(self) -> dict[str, Any]:
        tok = self.tokenizer
        mlm = MLMCollator(
            pad_id=tok.special_id(PAD), mask_id=tok.special_id(MASK), vocab_size=tok.vocab_size,
            n_special=len(tok.meta["special_ids"]), **asdict(self.obj.masking))
        return {"mlm": mlm, "tlm": mlm, "clm": CLMCollator(pad_id=tok.special_id(PAD))}

    def term_probs(self) -> dict[str, dict[str, float]]:
        """Per term, the probability of drawing each of its streams (alpha rule on stream sizes)."""
        alpha = float(self.cfg.alpha)
        by_term: dict[str, dict[str, int]] = {}
        for name, term in self.stream_terms.items():
            by_term.setdefault(term, {})[name] = len(self.train_sets[name])
        return {t: alpha_sampling_probs(sizes, alpha) for t, sizes in by_term.items()}

    def train_dataloader(self) -> ResumableLoader:
        rank, world = self.rank_world()
        bs = self.cfg.batch_size
        # without max_steps, an "epoch" is one pass over the largest stream
        num_batches = self.train_batches() or max(1, max(len(v) for v in self.train_sets.values()) // (bs * world))
        sampler = MixtureBatchSampler({k: len(v) for k, v in self.train_sets.items()}, self.term_probs(),
                                      bs, num_batches, self.seed, rank, world)
        return self.resumable_loader(StreamMixture(self.train_sets, self.stream_terms), sampler,
                                     GroupingCollator(self._collators(), self.stream_terms, by_stream=False))

    def val_dataloader(self) -> list[DataLoader]:
        rank, world = self.rank_world()
        loaders = []
        collate = GroupingCollator(self._collators(), self.stream_terms, by_stream=True)
        bs = self.cfg.eval_batch_size
        for k, (name, ds) in enumerate(sorted(self.val_sets.items())):
            sampler = _TaggedSampler(name, StreamBatchSampler(len(ds), bs, seed=self.seed + 1 + k, shuffle=False,
                                                              rank=rank, world_size=world))
            loaders.append(DataLoader(StreamMixture({name: ds}, self.stream_terms), batch_sampler=sampler,
                                      **self.loader_kwargs(collate)))
        return loaders

    @property
    def val_streams(self) -> dict[str, str]:
        return dict(self.stream_terms)


class _TaggedSampler:
    """Wraps a StreamBatchSampler so its keys name their stream."""

    def __init__(self, stream: str, inner: StreamBatchSampler):
        self.stream, self.inner = stream, inner

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self):
        for keys in self.inner:
            yield [(self.stream, i, s) for i, s in keys]
