"""Tokenizers: train WordPiece / BPE / byte-level BPE with HF `tokenizers`, save as a versioned
artifact keyed by corpus + settings, reuse when unchanged.

Special tokens are defined once here and always take ids 0..len(SPECIAL_TOKENS)-1, so every
tokenizer agrees on them (masking draws random replacements from ids >= N_SPECIAL).

Training is deterministic: the same texts and settings give a byte-identical tokenizer.json in
any process (see `train_tokenizer`). Anything derived from a tokenizer (token shards, a resumed
run) is keyed by its content digest (`TokenizerArtifact.digest`, sha256 of the tokenizer.json
bytes), never by the settings it was trained with.

Every tokenizer lit_tf reads (a trained artifact, `data.tokenizer.path`, an imported HF model's
`tokenizer.json`, the copy inside a checkpoint) goes through `parse_tokenizer`, which turns off
the file's own padding and truncation: `data.max_seq_len` alone sets lengths, and batches are
padded by the collators, to the longest row of each batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from lit_tf.data.atomic import atomic_dir, build_once
from lit_tf.errors import LitTfError

log = logging.getLogger(__name__)

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, CLS, SEP, MASK)
N_SPECIAL = len(SPECIAL_TOKENS)
KINDS = ("wordpiece", "bpe", "bytelevel_bpe")
ARTIFACT_VERSION = 2  # 2: deterministic training (pinned character ids)


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
    def check_keys(cls, cfg: Mapping) -> None:
        """`data.tokenizer` holds this spec's keys and `path` (an existing tokenizer.json), nothing else."""
        known = set(cls.__dataclass_fields__) | {"path"}
        unknown = set(cfg) - known
        if unknown:
            raise ValueError(f"data.tokenizer: unknown keys {sorted(unknown)}; valid: {sorted(known)}")

    @classmethod
    def from_config(cls, cfg: Mapping) -> TokenizerSpec:
        cls.check_keys(cfg)
        cfg = dict(cfg)
        cfg.pop("path", None)
        cfg["extra_special_tokens"] = tuple(cfg.get("extra_special_tokens") or ())
        return cls(**cfg)

    @property
    def specials(self) -> list[str]:
        return list(SPECIAL_TOKENS) + list(self.extra_special_tokens)

    def key(self, corpus_fingerprint: str) -> str:
        payload = json.dumps({"spec": asdict(self), "corpus": corpus_fingerprint, "v": ARTIFACT_VERSION}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def parse_tokenizer(tokenizer_json: str) -> Tokenizer:
    """A `Tokenizer` from tokenizer.json text, with the file's own padding and truncation off.

    HF model folders often ship `"padding": {"strategy": {"Fixed": 128}}` and a 128-token
    truncation; kept, they would pad every example to 128 (real-looking tokens the attention
    mask does not hide) whatever `data.max_seq_len` says.
    """
    tok = Tokenizer.from_str(tokenizer_json)
    tok.no_padding()
    tok.no_truncation()
    return tok


def _build_untrained(
    spec: TokenizerSpec, pinned: Sequence[str] = (), vocab_size: int | None = None
) -> tuple[Tokenizer, trainers.Trainer]:
    """An untrained tokenizer and its trainer; `pinned` pieces get the ids after the specials."""
    specials = spec.specials + [p for p in pinned if p not in spec.specials]
    vocab_size = spec.vocab_size if vocab_size is None else vocab_size
    if spec.kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=UNK, max_input_chars_per_word=100))
        norm = [normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()] if spec.lowercase else [normalizers.NFC()]
        tok.normalizer = normalizers.Sequence(norm)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, min_frequency=spec.min_frequency, special_tokens=specials,
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
            vocab_size=vocab_size, min_frequency=spec.min_frequency, special_tokens=specials,
            end_of_word_suffix="</w>",
        )
    else:  # bytelevel_bpe: GPT-2 style, no unknown tokens
        tok = Tokenizer(models.BPE())
        tok.normalizer = normalizers.Lowercase() if spec.lowercase else None
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=spec.min_frequency, special_tokens=specials,
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


Texts = Iterable[str] | Callable[[], Iterable[str]]


def _text_factory(texts: Texts) -> Callable[[], Iterable[str]]:
    if callable(texts):
        return texts
    if isinstance(texts, Iterator):
        raise TypeError("train_tokenizer: texts are read twice; pass a list or a function returning a fresh iterator, "
                        "not a one-shot iterator/generator")
    return lambda: texts


def _character_pieces(spec: TokenizerSpec, texts: Iterable[str]) -> list[str]:
    """Every single-character piece the trainer will start from, in a fixed order.

    These are the alphabet and, for `wordpiece`/`bpe`, its `##c` (inside a word) and `c</w>`
    (end of a word) variants. HF's BPE trainer (which `WordPieceTrainer` wraps) gives the
    alphabet sorted ids but hands out the variants' ids while iterating its word-count hash
    map, whose order changes with every process; merge ties are broken by pair ids, so the
    learned merges and pieces changed from run to run. A first pass with a zero-size target
    (no merges) finds the pieces; the second pass pins them, sorted, right after the specials.
    """
    tok, trainer = _build_untrained(spec, vocab_size=0)
    tok.train_from_iterator(texts, trainer=trainer)
    specials = set(spec.specials)
    pieces = [p for p in tok.get_vocab() if p not in specials]
    return sorted(p for p in pieces if len(p) == 1) + sorted(p for p in pieces if len(p) > 1)


def _unpin(tok: Tokenizer, spec: TokenizerSpec) -> Tokenizer:
    """Pinned pieces entered the trainer as special tokens: make them ordinary vocabulary again
    (special added tokens would be cut out of text before the model sees it, and dropped when
    decoding)."""
    data = json.loads(tok.to_str())
    specials = set(spec.specials)
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] in specials]
    return Tokenizer.from_str(json.dumps(data, ensure_ascii=False))


def train_tokenizer(spec: TokenizerSpec, texts: Texts) -> Tokenizer:
    """Train a tokenizer; the result depends only on `spec` and the texts (not on the process).

    `texts` is read twice: give a list of strings or a function returning a fresh iterable.
    """
    factory = _text_factory(texts)
    if spec.kind == "bytelevel_bpe":  # no prefix/suffix variants: ids are already in a fixed order
        tok, trainer = _build_untrained(spec)
        tok.train_from_iterator(factory(), trainer=trainer)
    else:
        pinned = _character_pieces(spec, factory())
        tok, trainer = _build_untrained(spec, pinned)
        tok.train_from_iterator(factory(), trainer=trainer)
        tok = _unpin(tok, spec)
    for i, s in enumerate(spec.specials):
        if tok.token_to_id(s) != i:
            raise RuntimeError(f"special token {s} got id {tok.token_to_id(s)}, expected {i}")
    return _finish(tok)


@dataclass
class TokenizerArtifact:
    """A tokenizer on disk: `<dir>/tokenizer.json` + `<dir>/meta.json`.

    `digest` is the sha256 of the tokenizer.json bytes, computed when loading (never read from
    meta.json): caches derived from a tokenizer are keyed by it. `key` is the settings key of
    a trained artifact (its cache folder name), which says nothing about the content.
    """

    path: Path
    tokenizer: Tokenizer
    meta: dict
    digest: str = ""
    json_text: str = ""  # the tokenizer.json text, exactly as on disk (what checkpoints store)

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
            raise LitTfError(f"tokenizer: {tj} does not exist (expected a tokenizer.json or its folder)")
        raw = tj.read_bytes()
        try:
            tok = parse_tokenizer(raw.decode("utf-8"))
        except Exception as e:  # tokenizers raises a bare Exception for malformed JSON
            raise LitTfError(f"{tj}: not a readable tokenizer.json ({e})") from e
        digest = content_digest(raw)
        meta_path = tj.parent / "meta.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
        else:  # a bare tokenizer.json (e.g. from a HF model dir): derive the meta
            meta = _meta(tok, digest[:16], spec=None)
        for s in (PAD, UNK, CLS, SEP, MASK):
            if tok.token_to_id(s) is None:
                raise ValueError(f"{tj}: tokenizer lacks special token {s}")
        return cls(tj.parent, tok, meta, digest, raw.decode("utf-8"))


def content_digest(data: bytes | str) -> str:
    """sha256 (hex) of a tokenizer.json's bytes: the identity of a tokenizer's content."""
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def same_tokenizer(a: str, b: str) -> bool:
    """Whether two tokenizer.json texts describe the same tokenizer (equal bytes, or equal
    once both are re-serialised: formatting, and the padding/truncation settings lit_tf
    ignores, do not make them differ)."""
    return a == b or parse_tokenizer(a).to_str() == parse_tokenizer(b).to_str()


def _meta(tok: Tokenizer, key: str, spec: TokenizerSpec | None) -> dict:
    if spec is not None:
        specials = spec.specials
    else:  # ours first, then any other special added tokens (language tags), by id
        added = sorted((i, t.content) for i, t in tok.get_added_tokens_decoder().items() if t.special)
        specials = list(SPECIAL_TOKENS) + [c for _, c in added if c not in SPECIAL_TOKENS]
    return {
        "key": key,
        "version": ARTIFACT_VERSION,
        "spec": asdict(spec) if spec else None,
        "vocab_size": tok.get_vocab_size(),
        "special_ids": {s: tok.token_to_id(s) for s in specials},
    }


def _texts(docs: Iterator[list[str]], max_docs: int | None) -> Iterator[str]:
    for i, doc in enumerate(docs):
        if max_docs is not None and i >= max_docs:
            return
        yield from doc


def get_or_train_tokenizer(
    spec: TokenizerSpec, docs_factory, corpus_fingerprint: str, cache_dir: str | os.PathLike
) -> TokenizerArtifact:
    """Load `cache_dir/<kind>-<vocab>-<key>` if present, else train from `docs_factory()` (read
    twice) and save it there. In a distributed run only global rank 0 trains; the other ranks
    wait for its artifact (`lit_tf.data.atomic.build_once`)."""
    key = spec.key(corpus_fingerprint)
    final = Path(cache_dir) / f"{spec.kind}-{spec.vocab_size}-{key}"

    def build(out: Path) -> None:
        log.info("tokenizer: training %s (vocab %d) -> %s", spec.kind, spec.vocab_size, final)
        tok = train_tokenizer(spec, lambda: _texts(docs_factory(), spec.max_train_docs))
        out.mkdir()
        tok.save(str(out / "tokenizer.json"))
        meta = _meta(tok, key, spec)
        meta["corpus_fingerprint"] = corpus_fingerprint
        meta["digest"] = content_digest((out / "tokenizer.json").read_bytes())
        (out / "meta.json").write_text(json.dumps(meta, indent=2))

    build_once(final, "meta.json", build, what="tokenizer")
    return TokenizerArtifact.load(final)


def materialize_tokenizer(tokenizer_json: str, cache_dir: str | os.PathLike) -> TokenizerArtifact:
    """Write a tokenizer given as JSON text (e.g. the one stored in a checkpoint) to
    `cache_dir/sha256-<digest>/` with exactly these bytes, and load it. Content-addressed, so any
    process may write it: all writers write the same bytes, and the first rename wins."""
    data = tokenizer_json.encode("utf-8")
    digest = content_digest(data)
    final = Path(cache_dir) / f"sha256-{digest[:16]}"
    if not (final / "meta.json").is_file():
        with atomic_dir(final, "meta.json") as out:
            out.mkdir()
            (out / "tokenizer.json").write_bytes(data)
            meta = _meta(Tokenizer.from_str(tokenizer_json), digest[:16], spec=None)
            meta["digest"] = digest
            (out / "meta.json").write_text(json.dumps(meta, indent=2))
    art = TokenizerArtifact.load(final)
    if art.digest != digest:
        raise ValueError(f"{final}/tokenizer.json: content digest {art.digest} != {digest} (folder altered?); delete it")
    return art


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


# Sentences per `Encoding` on the joined path of `encode_flat`: 16 to 64 measure the same (~25% less
# Rust time than one `Encoding` per sentence, the per-`Encoding` overhead shared); much longer
# strings get slower again.
_JOIN_GROUP = 32
# Normalizers and pre-tokenizers under which a sentence encodes to the same ids and word ids
# alone as inside `" ".join(sentences)`: normalizers that map each character (or a character and
# its combining marks; a space starts a new one) on its own, and pre-tokenizers that split on
# whitespace and drop it, so that no word and no normalized unit crosses the joining space.
# `ByteLevel` and `Metaspace` are not here: they keep spaces inside tokens.
_JOIN_NORMALIZERS = frozenset({"NFC", "NFD", "NFKC", "NFKD", "Lowercase", "StripAccents", "BertNormalizer"})
_JOIN_PRE_TOKENIZERS = frozenset({"BertPreTokenizer", "Whitespace", "WhitespaceSplit"})


def _state(component) -> dict | None:
    """A normalizer's / pre-tokenizer's JSON description (None for none; {} if unreadable)."""
    if component is None:
        return None
    try:
        return json.loads(component.__getstate__())
    except Exception:  # a custom (Python) component: nothing proven about it
        return {}


def _all_types(state: dict, children: str) -> Iterator[str]:
    if state.get("type") == "Sequence":
        for sub in state.get(children) or []:
            yield from _all_types(sub or {}, children)
    else:
        yield state.get("type", "?")


def joinable(tok: Tokenizer) -> bool:
    """Whether `encode_flat` may encode `tok`'s sentences joined by a space, several per `Encoding`.

    True only when every part of `tok` that sees the joined text is one shown to treat the joining
    space as a plain word boundary (see `_JOIN_NORMALIZERS`, `_JOIN_PRE_TOKENIZERS`), there is no
    truncation or padding (per-sentence limits), and no added token could match across sentences
    or take in the space (whitespace in it, `lstrip`/`rstrip`). Decided from the components
    themselves, not from lit_tf's kind names: lit_tf's `wordpiece` and `bpe` qualify (NFC or
    NFD+Lowercase+StripAccents, BertPreTokenizer), `bytelevel_bpe` does not (spaces are part of
    its tokens); neither does a user's tokenizer.json with any other pre-tokenizer.
    """
    if tok.truncation is not None or tok.padding is not None:
        return False
    pre = _state(tok.pre_tokenizer)
    pre_types = set(_all_types(pre, "pretokenizers")) if pre else set()
    if not pre_types or not pre_types <= _JOIN_PRE_TOKENIZERS:  # none (an empty Sequence): no word splits
        return False
    norm = _state(tok.normalizer)
    if norm is not None and not set(_all_types(norm, "normalizers")) <= _JOIN_NORMALIZERS:
        return False
    return not any(t.lstrip or t.rstrip or any(c.isspace() for c in t.content)
                   for t in tok.get_added_tokens_decoder().values())


def encode_flat(
    tok: Tokenizer, sentences: Sequence[str], dtype: np.dtype | type = np.int64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`encode_words` as flat arrays, for sharding: `(ids, word_start, lengths)`.

    `ids` (`dtype`) and `word_start` (uint8, 0/1) are all sentences' tokens back to back;
    `lengths` (int64) is each sentence's token count (0 for a sentence that tokenized to
    nothing). Same values as `encode_words`, but the word-start flags are computed with numpy
    instead of one Python comparison per token (the slow part of encoding a large corpus).

    When `joinable(tok)`, sentences are encoded `_JOIN_GROUP` at a time, joined by a space
    (`_encode_joined`), which costs ~25% less than one `Encoding` per sentence; otherwise, or if
    the joined result's offsets do not split cleanly into sentences, one by one
    (`_encode_each`). Both give identical arrays.
    """
    sentences = list(sentences)
    if joinable(tok):
        out = _encode_joined(tok, sentences, dtype)
        if out is not None:
            return out
        log.debug("encode_flat: offsets of a joined batch did not split into sentences; encoding one by one")
    return _encode_each(tok, sentences, dtype)


def _word_starts(word_lists: Iterable[list[int | None]], total: int, first: np.ndarray) -> np.ndarray:
    """Word-start flags (uint8) of `total` tokens with these word ids: a token starts a word when
    its word id differs from the previous token's, has none (a token outside any word), or is a
    sentence's first token (indices `first`)."""
    try:
        words = np.fromiter(chain.from_iterable(word_lists), dtype=np.int64, count=total)
    except TypeError:  # a token outside any word (word id None): it starts a word of its own
        words = np.fromiter((-1 if w is None else w for w in chain.from_iterable(word_lists)),
                            dtype=np.int64, count=total)
    starts = np.ones(total, dtype=bool)
    np.not_equal(words[1:], words[:-1], out=starts[1:])
    starts[words < 0] = True
    starts[first] = True
    return starts.view(np.uint8)


def _encode_each(
    tok: Tokenizer, sentences: list[str], dtype: np.dtype | type
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`encode_flat` with one `Encoding` per sentence (any tokenizer)."""
    encs = tok.encode_batch(sentences, add_special_tokens=False)
    id_lists = [e.ids for e in encs]
    lengths = np.fromiter(map(len, id_lists), dtype=np.int64, count=len(id_lists))
    total = int(lengths.sum())
    ids = np.fromiter(chain.from_iterable(id_lists), dtype=dtype, count=total)
    first = (np.cumsum(lengths) - lengths)[lengths > 0]
    return ids, _word_starts([e.word_ids for e in encs], total, first), lengths


def _encode_joined(
    tok: Tokenizer, sentences: list[str], dtype: np.dtype | type
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """`encode_flat` with `_JOIN_GROUP` sentences per `Encoding`, joined by one space; only for a
    `joinable(tok)`. None if the token offsets do not fall cleanly inside the sentences.

    Each sentence's tokens are recovered from the character offsets (characters of the joined
    string, as `encode_batch` gives them): sentence i spans `[s0[i], s0[i] + len_i)` in one
    coordinate running over all groups (a group's offsets shifted by its first sentence's `s0`),
    and its tokens are those whose start lies in `[s0[i], s0[i + 1])` (a `searchsorted`). As a
    check, every token must also start and end inside its sentence, in order;
    otherwise (a normalizer whose alignments this reasoning does not cover) None, and the caller
    encodes one by one.
    """
    n = len(sentences)
    if n == 0:
        return _encode_each(tok, sentences, dtype)
    texts = [" ".join(sentences[i:i + _JOIN_GROUP]) for i in range(0, n, _JOIN_GROUP)]
    encs = tok.encode_batch(texts, add_special_tokens=False)
    sent_len = np.fromiter(map(len, sentences), dtype=np.int64, count=n)
    s0 = np.cumsum(sent_len + 1) - (sent_len + 1)  # each sentence's first character, one space apart
    id_lists = [e.ids for e in encs]
    group_tokens = np.fromiter(map(len, id_lists), dtype=np.int64, count=len(id_lists))
    total = int(group_tokens.sum())
    offsets = np.fromiter(chain.from_iterable(chain.from_iterable(e.offsets for e in encs)),
                          dtype=np.int64, count=2 * total).reshape(total, 2)
    offsets += np.repeat(s0[::_JOIN_GROUP], group_tokens)[:, None]  # group-relative -> global
    if np.any(offsets[1:, 0] < offsets[:-1, 0]):
        return None
    first = np.searchsorted(offsets[:, 0], s0, side="left")  # each sentence's first token
    lengths = np.diff(first, append=total)
    sent_end = np.repeat(s0 + sent_len, lengths)  # the end of each token's sentence
    if np.any(offsets[:, 0] >= sent_end) or np.any(offsets[:, 1] > sent_end):
        return None
    ids = np.fromiter(chain.from_iterable(id_lists), dtype=dtype, count=total)
    return ids, _word_starts([e.word_ids for e in encs], total, first[lengths > 0]), lengths
