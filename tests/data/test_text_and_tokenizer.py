"""Corpus readers and tokenizers: formats, errors that name the file/line, caching, word groups."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from conftest import shared_file

from lit_tf.data import text
from lit_tf.data.tokenizer import (
    N_SPECIAL,
    SPECIAL_TOKENS,
    TokenizerArtifact,
    TokenizerSpec,
    encode_words,
    get_or_train_tokenizer,
)
from lit_tf.objectives import mask_tokens, word_ids_from_word_starts

# --------------------------------------------------------------------------- corpus readers


def test_txt_blank_lines_separate_documents(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("First doc line one. It has two sentences.\nLine two.\n\n\nSecond doc.\n  \nThird doc!\n")
    docs = list(text.iter_documents({"files": [str(f)]}))
    assert docs == [["First doc line one.", "It has two sentences.", "Line two."], ["Second doc."], ["Third doc!"]]


def test_jsonl_and_globs(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.jsonl").write_text(json.dumps({"text": "Hello there. General Kenobi."}) + "\n\n"
                                            + json.dumps({"text": "Line a\nLine b"}) + "\n")
    (tmp_path / "d" / "y.txt").write_text("plain text")
    docs = list(text.iter_documents({"files": [str(tmp_path / "d" / "*")]}))
    assert docs == [["Hello there.", "General Kenobi."], ["Line a", "Line b"], ["plain text"]]


@pytest.mark.parametrize(
    "content, match",
    [
        ('{"text": "ok"}\n{"text": "broken"\n', r"bad\.jsonl:2: invalid JSON"),
        ('{"text": "ok"}\n{"body": "x"}\n', r"bad\.jsonl:2: no 'text' field \(found \['body'\]\)"),
        ('{"text": 5}\n', r"bad\.jsonl:1: field 'text' is not a string"),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path, content, match):
    f = tmp_path / "bad.jsonl"
    f.write_text(content)
    with pytest.raises(text.CorpusError, match=match):
        list(text.iter_documents({"files": [str(f)]}))


def test_missing_files_and_bad_encoding_are_clear(tmp_path):
    with pytest.raises(text.CorpusError, match=r"no file matches '.*nothing\*\.txt'"):
        text.expand_files([str(tmp_path / "nothing*.txt")])
    f = tmp_path / "latin1.txt"
    f.write_bytes("caf\xe9 con le\xf1a".encode("latin-1"))
    with pytest.raises(text.CorpusError, match=r"latin1\.txt: not valid UTF-8"):
        list(text.iter_documents({"files": [str(f)]}))
    with pytest.raises(text.CorpusError, match="exactly one of"):
        list(text.iter_documents({"files": ["a"], "builtin": "pydoc"}))


def test_builtin_corpus_is_english_prose():
    docs = list(text.iter_builtin_documents("pydoc", max_files=50))
    words = [w for d in docs for s in d for w in s.split()]
    assert len(docs) > 300 and len(words) > 50_000
    common = sum(w.lower() in {"the", "a", "of", "to", "is", "and"} for w in words) / len(words)
    assert common > 0.1  # function words: this is prose, not code


def test_fingerprint_tracks_content(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("one")
    a = text.fingerprint({"files": [str(f)]})
    f.write_text("two")
    assert text.fingerprint({"files": [str(f)]}) != a


# --------------------------------------------------------------------------- tokenizers


@pytest.fixture(scope="module")
def shakespeare_docs():
    path = shared_file("tinyshakespeare/input.txt")
    return list(text.iter_documents({"files": [str(path)]}))[:1500]


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "bytelevel_bpe"])
def test_tokenizer_specials_and_cache(tmp_path, shakespeare_docs, kind):
    spec = TokenizerSpec(kind=kind, vocab_size=600, lowercase=False)
    calls = []

    def docs():
        calls.append(1)
        return iter(shakespeare_docs)

    art = get_or_train_tokenizer(spec, docs, "fp1", tmp_path)
    assert [art.tokenizer.token_to_id(s) for s in SPECIAL_TOKENS] == list(range(N_SPECIAL))
    assert art.vocab_size <= 600 and art.meta["special_ids"]["[MASK]"] == 4
    trained_calls = len(calls)  # training reads the corpus twice (see train_tokenizer)
    again = get_or_train_tokenizer(spec, docs, "fp1", tmp_path)  # cached: not retrained
    assert again.path == art.path and len(calls) == trained_calls
    other = get_or_train_tokenizer(spec, docs, "fp2", tmp_path)  # other corpus: new artifact
    assert other.path != art.path and len(calls) == 2 * trained_calls
    reloaded = TokenizerArtifact.load(art.path / "tokenizer.json")
    assert reloaded.key == art.key
    # the content digest is computed from the file's bytes, and recorded in meta.json
    assert reloaded.digest == hashlib.sha256((art.path / "tokenizer.json").read_bytes()).hexdigest()
    assert reloaded.digest == art.meta["digest"] == other.digest  # same texts, same settings: same bytes
    enc = reloaded.tokenizer.encode("To be, or not", "that is the question")
    assert enc.tokens[0] == "[CLS]" and enc.tokens.count("[SEP]") == 2
    assert set(enc.type_ids) == {0, 1}


def test_tokenizer_spec_errors():
    with pytest.raises(ValueError, match=r"data.tokenizer.kind='sentencepiece' is not one of"):
        TokenizerSpec(kind="sentencepiece")
    with pytest.raises(ValueError, match=r"unknown keys \['vocab'\]"):
        TokenizerSpec.from_config({"vocab": 10})


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "bytelevel_bpe"])
def test_whole_word_groups_match_words(tmp_path, shakespeare_docs, kind):
    """Word-start flags from the tokenizer rebuild each whitespace word, for any tokenizer kind;
    whole-word masking then masks all pieces of a word or none."""
    art = get_or_train_tokenizer(TokenizerSpec(kind=kind, vocab_size=400), lambda: iter(shakespeare_docs), "fp", tmp_path)
    sentence = "Unquestionably the shepherds overwhelmingly misunderstood Northumberland"
    (ids, starts), = encode_words(art.tokenizer, [sentence])
    assert len(ids) > len(sentence.split())  # rare words are split into several pieces
    groups: list[list[int]] = []
    for i, s in zip(ids, starts):
        if s:
            groups.append([])
        groups[-1].append(i)
    decoded = [art.tokenizer.decode(g).strip().replace(" ", "") for g in groups]
    assert [d.lower() for d in decoded] == [w.lower() for w in sentence.split()]

    t = torch.tensor([ids] * 200)
    ws = torch.tensor([starts] * 200)
    special = torch.zeros_like(ws)
    word_ids = word_ids_from_word_starts(ws, special)
    _, labels = mask_tokens(t, special_mask=special, mask_id=4, vocab_size=art.vocab_size,
                            row_seeds=torch.arange(len(t)), word_ids=word_ids, random_token_low=N_SPECIAL)
    selected = labels != -100
    for w in word_ids[0].unique():
        cols = word_ids[0] == w
        per_row = selected[:, cols]
        assert bool((per_row.all(1) | ~per_row.any(1)).all()), f"word {w} partially masked"


def test_hf_datasets_path_with_local_files(tmp_path, monkeypatch):
    """The `data.hf_name` code path is the real `datasets.load_dataset`, here on a local folder."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    d = tmp_path / "my_corpus"
    d.mkdir()
    rows = [{"text": "The first article. It is short."}, {"text": ""}, {"text": "Second one."}]
    (d / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (d / "validation.jsonl").write_text(json.dumps({"text": "Held out text."}) + "\n")
    from lit_tf.data.datamodule import CorpusSources

    src = CorpusSources.from_config({"hf_name": str(d), "hf_val_split": "validation", "text_field": "text"})
    assert list(text.iter_documents(src.train)) == [["The first article.", "It is short."], ["Second one."]]
    assert list(text.iter_documents(src.val)) == [["Held out text."]]
    bad = CorpusSources.from_config({"hf_name": str(d), "text_field": "body", "val_fraction": 0.1})
    with pytest.raises(text.CorpusError, match="no column 'body'"):
        list(text.iter_documents(bad.train))
