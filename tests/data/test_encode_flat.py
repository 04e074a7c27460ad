"""`encode_flat`'s joined path (several sentences per `Encoding`, split back by character offsets)
gives exactly what encoding each sentence alone gives, for every tokenizer it is used with; other
tokenizers are encoded one by one."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import shared_file
from tokenizers import AddedToken, Tokenizer, normalizers, pre_tokenizers

from lit_tf.data import text, tokenizer
from lit_tf.data.shards import _without_post_processor
from lit_tf.data.tokenizer import (
    TokenizerSpec,
    _encode_each,
    _encode_joined,
    encode_flat,
    joinable,
    train_tokenizer,
)

# Inputs where a joined encoding could plausibly go wrong: nothing to tokenize, whitespace at the
# edges, control and format characters, normalizations that change lengths ('İ' lower-cases to
# two characters, NFD splits accents that StripAccents then drops), non-BMP characters, pieces
# that look like WordPiece/BPE markers, special-token text, one very long line.
EDGE = [
    "", " ", "   ", "\t", "\n", "\r\n", "\x00\x07", "\x1f", "\x85", "\u200b", "\ufeff", "\u3000",
    " leading space", "trailing space ", "\tboth\t", "a\tb\tc", "line\nbreak", "word\u00a0word",
    "İstanbul", "İ", "e\u0301", "\u0301", "\u0301\u0302", "café naïve ÉTÉ", "ΟΔΟΣ ὈΔΥΣΣΕΎΣ", "Straße ǅemal ﬁne ﬃ",
    "??!!", "¿Qué?¡Sí!", "...", "##", "##ing", "## ##", "</w>", "x</w>", "[MASK] and [UNK]", "[CLS]", "[SEP][PAD]",
    "😀 ok 👍🏽", "日本語テキスト", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "a\u2028b\u2029c", "12,345.67 3½",
    " ".join(["pneumonoultramicroscopicsilicovolcanoconiosis", "de", "la", "¡ciudad!"] * 500),
    "x" * 3000, "ab" * 80,
]

KINDS = [(k, lc) for k in tokenizer.KINDS for lc in (False, True)]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    """~300 KB of real sentences: English WikiText and a Spanish novel (accents, ¿¡, «»)."""
    sents = []
    for rel in ("wikitext2/wiki.valid.raw", "spanish_novels_cligs/Alarcon_Capitan-ne0174.txt"):
        docs = text.iter_documents({"files": [str(shared_file(rel))]})
        chars = 0
        for doc in docs:
            sents.extend(doc)
            chars += sum(map(len, doc))
            if chars > 150_000:
                break
    return sents


@pytest.fixture(scope="module")
def trained(corpus) -> dict[tuple[str, bool], Tokenizer]:
    """Every lit_tf tokenizer kind, cased and uncased, trained by `train_tokenizer` on the corpus,
    as sharding encodes with it (no post-processor)."""
    return {(kind, lc): _without_post_processor(train_tokenizer(TokenizerSpec(kind, 1500, lc), corpus))
            for kind, lc in KINDS}


def _mixed(corpus: list[str]) -> list[str]:
    """Real sentences with the edge cases spread among them (and at both ends)."""
    out = list(EDGE[:5])
    step = max(1, len(corpus) // len(EDGE))
    for i, edge in enumerate(EDGE):
        out.extend(corpus[i * step:(i + 1) * step])
        out.append(edge)
    return out + corpus[len(EDGE) * step:] + EDGE[-3:]


def _assert_same(got, want) -> None:
    for g, w, name in zip(got, want, ("ids", "word_start", "lengths")):
        assert g.dtype == w.dtype, name
        assert np.array_equal(g, w), name


@pytest.mark.parametrize(("kind", "lowercase"), KINDS)
def test_joined_encoding_equals_one_by_one(trained, corpus, kind, lowercase, monkeypatch):
    tok = trained[kind, lowercase]
    sents = _mixed(corpus)
    want = _encode_each(tok, sents, np.uint16)
    _assert_same(encode_flat(tok, sents, np.uint16), want)
    assert joinable(tok) == (kind != "bytelevel_bpe")  # spaces are part of byte-level tokens
    if not joinable(tok):
        return
    assert (want[2] == 0).sum() >= 10  # sentences that tokenize to nothing are in there
    for group in (1, 3, tokenizer._JOIN_GROUP):  # sentences at every position of a group
        monkeypatch.setattr(tokenizer, "_JOIN_GROUP", group)
        got = _encode_joined(tok, sents, np.uint16)
        assert got is not None  # the offsets split cleanly: the joined path was taken
        _assert_same(got, want)
    for edge in EDGE:  # each alone, and a batch of only edge cases
        _assert_same(_encode_joined(tok, [edge], np.int64), _encode_each(tok, [edge], np.int64))
    _assert_same(_encode_joined(tok, EDGE, np.int32), _encode_each(tok, EDGE, np.int32))
    assert [len(x) for x in _encode_joined(tok, [], np.uint16)] == [0, 0, 0]


def _variant(tok: Tokenizer, **parts) -> Tokenizer:
    out = Tokenizer.from_str(tok.to_str())
    for name, value in parts.items():
        setattr(out, name, value)
    return out


def test_joinable_is_decided_by_the_components(trained, corpus):
    """A user's tokenizer.json takes the joined path only with components shown to be safe: the
    BERT normalizer and whitespace pre-tokenizers do (and give the same results), anything else,
    truncation, padding or an added token that could take in the joining space do not."""
    wp = trained["wordpiece", False]
    sents = _mixed(corpus[:400])
    safe = [
        _variant(wp, normalizer=normalizers.BertNormalizer(lowercase=True)),
        _variant(wp, normalizer=None, pre_tokenizer=pre_tokenizers.Whitespace()),
        _variant(wp, pre_tokenizer=pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                             pre_tokenizers.BertPreTokenizer()])),
        _variant(wp, normalizer=normalizers.Sequence([normalizers.NFKD(), normalizers.StripAccents()])),
    ]
    for tok in safe:
        assert joinable(tok)
        got = _encode_joined(tok, sents, np.uint16)
        assert got is not None
        _assert_same(got, _encode_each(tok, sents, np.uint16))

    truncated = _variant(wp)
    truncated.enable_truncation(8)
    padded = _variant(wp)
    padded.enable_padding()
    lstrip, spaced = _variant(wp), _variant(wp)
    lstrip.add_special_tokens([AddedToken("<mask>", lstrip=True)])
    spaced.add_tokens(["new york"])
    unsafe = [
        truncated, padded, lstrip, spaced,
        _variant(wp, pre_tokenizer=pre_tokenizers.Metaspace()),
        _variant(wp, pre_tokenizer=pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                             pre_tokenizers.ByteLevel()])),
        _variant(wp, pre_tokenizer=pre_tokenizers.Punctuation()),
        _variant(wp, pre_tokenizer=None),
        _variant(wp, pre_tokenizer=pre_tokenizers.Sequence([])),
        _variant(wp, normalizer=normalizers.Sequence([normalizers.NFC(), normalizers.Prepend("_")])),
        _variant(wp, normalizer=normalizers.Replace(" ", "")),
        trained["bytelevel_bpe", False],
    ]
    for tok in unsafe:
        assert not joinable(tok), json.loads(tok.to_str())["pre_tokenizer"]
    for tok in unsafe[2:4] + unsafe[4:6]:  # still encoded right, one by one
        _assert_same(encode_flat(tok, sents, np.uint16), _encode_each(tok, sents, np.uint16))
