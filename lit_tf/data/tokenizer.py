"""Tokenizers: train WordPiece / BPE / byte-level BPE with HF `tokenizers`, save as a versioned
artifact keyed by corpus + settings, reuse when unchanged.

Special tokens are defined once here and always take ids 0..len(SPECIAL_TOKENS)-1, so every
tokenizer agrees on them (masking draws random replacements from ids >= N_SPECIAL).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from lit_tf.data.atomic import atomic_dir

log = logging.getLogger(__name__)

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, CLS, SEP, MASK)
N_SPECIAL = len(SPECIAL_TOKENS)
KINDS = ("wordpiece", "bpe", "bytelevel_bpe")
ARTIFACT_VERSION = 1


@dataclass(frozen=True)
class TokenizerSpec:
    kind: str = "wordpiece"  # one of KINDS
    vocab_size: int = 8000  # target size including special tokens
    lowercase: bool = False  # uncased (lower-case + strip accents) vs cased
    min_frequency: int = 2  # merges/pieces seen fewer times are dropped
    max_train_docs: int | None = None  # cap the documents read to train it (None = all)
    extra_special_tokens: tuple[str, ...] = field(default_factory=tuple)  # e.g. language tags

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"data.tokenizer.kind={self.kind!r} is not one of {list(KINDS)}")
        if self.vocab_size <= N_SPECIAL + 10:
            raise ValueError(f"data.tokenizer.vocab_size={self.vocab_size} is too small")

    @classmethod
    def from_config(cls, cfg: Mapping) -> TokenizerSpec:
        cfg = dict(cfg)
        known = set(cls.__dataclass_fields__)
        unknown = set(cfg) - known - {"path"}
        if unknown:
            raise ValueError(f"data.tokenizer: unknown keys {sorted(unknown)}; valid: {sorted(known | {'path'})}")
        cfg.pop("path", None)
        cfg["extra_special_tokens"] = tuple(cfg.get("extra_special_tokens") or ())
        return cls(**cfg)

    @property
    def specials(self) -> list[str]:
        return list(SPECIAL_TOKENS) + list(self.extra_special_tokens)

    def key(self, corpus_fingerprint: str) -> str:
        payload = json.dumps({"spec": asdict(self), "corpus": corpus_fingerprint, "v": ARTIFACT_VERSION}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _build_untrained(spec: TokenizerSpec) -> tuple[Tokenizer, trainers.Trainer]:
    specials = spec.specials
    if spec.kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=UNK, max_input_chars_per_word=100))
        norm = [normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()] if spec.lowercase else [normalizers.NFC()]
        tok.normalizer = normalizers.Sequence(norm)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        trainer = trainers.WordPieceTrainer(
            vocab_size=spec.vocab_size, min_frequency=spec.min_frequency, special_tokens=specials,
            continuing_subword_prefix="##",
        )
    elif spec.kind == "bpe":
        # Subword BPE over whitespace/punctuation words with an end-of-word suffix (XLM-style).
        tok = Tokenizer(models.BPE(unk_token=UNK, end_of_word_suffix="</w>"))
        norm = [normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()] if spec.lowercase else [normalizers.NFC()]
        tok.normalizer = normalizers.Sequence(norm)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.BPEDecoder(suffix="</w>")
        trainer = trainers.BpeTrainer(
            vocab_size=spec.vocab_size, min_frequency=spec.min_frequency, special_tokens=specials,
            end_of_word_suffix="</w>",
        )
    else:  # bytelevel_bpe: GPT-2 style, no unknown tokens
        tok = Tokenizer(models.BPE())
        tok.normalizer = normalizers.Lowercase() if spec.lowercase else None
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=spec.vocab_size, min_frequency=spec.min_frequency, special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    return tok, trainer


def _finish(tok: Tokenizer) -> Tokenizer:
    """Single-sentence and pair templates: [CLS] A [SEP] (B [SEP]), segment ids 0/1."""
    cls_id, sep_id = tok.token_to_id(CLS), tok.token_to_id(SEP)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(CLS, cls_id), (SEP, sep_id)],
    )
    return tok


def train_tokenizer(spec: TokenizerSpec, texts: Iterable[str]) -> Tokenizer:
    tok, trainer = _build_untrained(spec)
    tok.train_from_iterator(texts, trainer=trainer)
    for i, s in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(s) != i:
            raise RuntimeError(f"special token {s} got id {tok.token_to_id(s)}, expected {i}")
    return _finish(tok)


@dataclass
class TokenizerArtifact:
    """A trained tokenizer on disk: `<dir>/tokenizer.json` + `<dir>/meta.json`."""

    path: Path
    tokenizer: Tokenizer
    meta: dict

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def key(self) -> str:
        return str(self.meta["key"])

    def special_id(self, token: str) -> int:
        return int(self.meta["special_ids"][token])

    @classmethod
    def load(cls, path: str | os.PathLike) -> TokenizerArtifact:
        path = Path(path)
        tj = path / "tokenizer.json" if path.is_dir() else path
        if not tj.is_file():
            raise FileNotFoundError(f"tokenizer: {tj} does not exist (expected a tokenizer.json or its folder)")
        tok = Tokenizer.from_file(str(tj))
        meta_path = tj.parent / "meta.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
        else:  # a bare tokenizer.json (e.g. from a HF model dir): derive the meta
            with open(tj, "rb") as f:
                key = hashlib.sha256(f.read()).hexdigest()[:16]
            meta = _meta(tok, key, spec=None)
        for s in (PAD, UNK, CLS, SEP, MASK):
            if tok.token_to_id(s) is None:
                raise ValueError(f"{tj}: tokenizer lacks special token {s}")
        return cls(tj.parent, tok, meta)


def _meta(tok: Tokenizer, key: str, spec: TokenizerSpec | None) -> dict:
    return {
        "key": key,
        "version": ARTIFACT_VERSION,
        "spec": asdict(spec) if spec else None,
        "vocab_size": tok.get_vocab_size(),
        "special_ids": {s: tok.token_to_id(s) for s in (spec.specials if spec else SPECIAL_TOKENS)},
    }


def _texts(docs: Iterator[list[str]], max_docs: int | None) -> Iterator[str]:
    for i, doc in enumerate(docs):
        if max_docs is not None and i >= max_docs:
            return
        yield from doc


def get_or_train_tokenizer(
    spec: TokenizerSpec, docs_factory, corpus_fingerprint: str, cache_dir: str | os.PathLike
) -> TokenizerArtifact:
    """Load `cache_dir/<key>` if present, else train from `docs_factory()` and save it there."""
    key = spec.key(corpus_fingerprint)
    final = Path(cache_dir) / f"{spec.kind}-{spec.vocab_size}-{key}"
    if (final / "meta.json").is_file():
        log.info("tokenizer: reusing %s", final)
        return TokenizerArtifact.load(final)
    log.info("tokenizer: training %s (vocab %d) -> %s", spec.kind, spec.vocab_size, final)
    tok = train_tokenizer(spec, _texts(docs_factory(), spec.max_train_docs))
    meta = _meta(tok, key, spec)
    meta["corpus_fingerprint"] = corpus_fingerprint

    with atomic_dir(final, "meta.json") as out:
        out.mkdir()
        tok.save(str(out / "tokenizer.json"))
        (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return TokenizerArtifact.load(final)


def encode_words(tok: Tokenizer, sentences: list[str]) -> list[tuple[list[int], list[bool]]]:
    """Token ids (no specials) and per-token word-start flags, for any tokenizer kind.

    Word boundaries come from the tokenizer's own pre-tokenization (`Encoding.word_ids`), so
    whole-word masking works for WordPiece and BPE alike without looking at `##` prefixes.
    """
    out = []
    for enc in tok.encode_batch(sentences, add_special_tokens=False):
        words = enc.word_ids
        starts = [i == 0 or w is None or w != words[i - 1] for i, w in enumerate(words)]
        out.append((enc.ids, starts))
    return out
