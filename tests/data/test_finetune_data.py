"""Fine-tuning data: real labelled tables and CoNLL files, label sets, alignment, collation."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from conftest import shared_file

from lit_tf.data.finetune import (
    LabelSet,
    collate_classification,
    collate_token_classification,
    encode_classification,
    encode_token_classification,
    predictions_to_word_tags,
    read_conll,
    read_hf_table,
    read_labeled_table,
)
from lit_tf.data.text import CorpusError
from lit_tf.data.tokenizer import CLS, PAD, SEP, TokenizerSpec, train_tokenizer
from lit_tf.objectives import IGNORE_INDEX

TRAIN_TEXTS = [
    "the cat sat on the mat", "a dog ran in the park", "John Smith lives in New York",
    "we went to Paris and Berlin", "the bank of Spain is big",
] * 3


@pytest.fixture(scope="module")
def tok():
    """A tiny WordPiece: small enough that unseen words split into many pieces."""
    return train_tokenizer(TokenizerSpec(kind="wordpiece", vocab_size=80, min_frequency=1), TRAIN_TEXTS)


def _write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# real tables
# --------------------------------------------------------------------------------------------
def test_sst2_with_header():
    rows = read_labeled_table(shared_file("sst2/dev.tsv"), ["sentence"], "label")
    assert len(rows) == 6735
    assert set(rows[0]) == {"sentence", "label", "where"}
    assert rows[0]["where"].endswith("dev.tsv:2")  # line 1 is the header
    assert LabelSet.from_labels(r["label"] for r in rows).names == ("0", "1")


def test_ag_news_without_header_named_columns():
    path = shared_file("ag_news/dev.tsv")
    rows = read_labeled_table(path, ["text"], "label", column_names=["text", "label"])
    assert len(rows) == 10001  # no line lost to a header
    assert Counter(r["label"] for r in rows) == {"Sci/Tech": 2538, "World": 2509, "Business": 2496, "Sports": 2458}
    # Without column names the first line would be taken as a header: the error says what to do.
    with pytest.raises(CorpusError, match=r"dev\.tsv:1: missing column 'text'.*column_names"):
        read_labeled_table(path, ["text"], "label")


def test_tsv_keeps_quotes_verbatim():
    # imdb sentences contain '"' characters; CSV quoting would swallow tabs/lines.
    path = shared_file("sentiment_labelled_sentences/imdb_labelled.txt")
    rows = read_labeled_table(path, ["sentence"], "label", fmt="tsv", column_names=["sentence", "label"])
    assert len(rows) == 1000
    assert Counter(r["label"] for r in rows) == {"0": 500, "1": 500}
    assert any('"' in r["sentence"] for r in rows)


def test_xnli_pair_three_columns_and_segments(tok):
    rows = read_labeled_table(shared_file("xnli/dev-part1-es.tsv"), ["premise", "hypothesis"], "label",
                              column_names=["premise", "hypothesis", "label"])
    assert len(rows) == 1245
    labels = LabelSet.from_labels(r["label"] for r in rows)
    assert labels.names == ("contradiction", "entailment", "neutral")
    assert Counter(r["label"] for r in rows) == {n: 415 for n in labels.names}
    ex = encode_classification(tok, rows[:50], ["premise", "hypothesis"], labels, max_len=32)
    cls_id, sep_id = tok.token_to_id(CLS), tok.token_to_id(SEP)
    for e, r in zip(ex, rows[:50]):
        ids, types = e["input_ids"], e["token_type_ids"]
        assert len(ids) == len(types) <= 32
        assert ids[0] == cls_id and ids[-1] == sep_id and ids.count(sep_id) == 2
        first_sep = ids.index(sep_id)
        assert types == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)
        assert e["label"] == labels.encode(r["label"])


def test_integer_column_indexes_and_header_table():
    rows = read_labeled_table(shared_file("pawsx/dev-part1-de.tsv"), ["0", "1"], "2", has_header=False)
    assert len(rows) == 1000 and {r["label"] for r in rows} == {"0", "1"}
    rows = read_labeled_table(shared_file("emoevent/es/dev.tsv"), ["tweet"], "emotion")
    assert len(rows) == 844
    assert {r["label"] for r in rows} == {"anger", "disgust", "fear", "joy", "sadness", "surprise", "others"}


def test_csv_and_jsonl(tmp_path):
    csv_path = _write(tmp_path / "t.csv", 'text,label\n"a, quoted ""film""",pos\nplain,neg\n')
    rows = read_labeled_table(csv_path, ["text"], "label")
    assert [r["text"] for r in rows] == ['a, quoted "film"', "plain"]
    jl = _write(tmp_path / "t.jsonl", json.dumps({"q": "hi", "y": 3}) + "\n\n" + json.dumps({"q": "yo", "y": 10}) + "\n")
    rows = read_labeled_table(jl, ["q"], "y")
    assert [r["label"] for r in rows] == ["3", "10"]
    assert rows[1]["where"].endswith("t.jsonl:3")


# --------------------------------------------------------------------------------------------
# errors name file:line
# --------------------------------------------------------------------------------------------
def test_table_errors_name_file_and_line(tmp_path):
    bad_cols = _write(tmp_path / "cols.tsv", "sentence\tlabel\ngood one\t1\ntoo\tmany\tcols\n")
    with pytest.raises(CorpusError, match=r"cols\.tsv:3: expected 2 columns.*got 3"):
        read_labeled_table(bad_cols, ["sentence"], "label")
    missing = _write(tmp_path / "miss.tsv", "text\tlabel\nx\t1\n")
    with pytest.raises(CorpusError, match=r"miss\.tsv:1: missing column 'sentence'; available: \['text', 'label'\]"):
        read_labeled_table(missing, ["sentence"], "label")
    empty = _write(tmp_path / "empty.tsv", "sentence\tlabel\nok\t1\n  \t0\n")
    with pytest.raises(CorpusError, match=r"empty\.tsv:3: empty text"):
        read_labeled_table(empty, ["sentence"], "label")
    jl = _write(tmp_path / "bad.jsonl", '{"text": "a", "label": 1}\n{"txt": "b", "label": 0}\n')
    with pytest.raises(CorpusError, match=r"bad\.jsonl:2: missing field 'text'; available: \['label', 'txt'\]"):
        read_labeled_table(jl, ["text"], "label")
    with pytest.raises(CorpusError, match="fmt="):
        read_labeled_table(_write(tmp_path / "x.dat", "a\t1\n"), ["0"], "1")


def test_unseen_label_in_val_is_a_clear_error(tmp_path, tok):
    train = read_labeled_table(_write(tmp_path / "train.tsv", "s\tl\nthe cat\tpos\nthe dog\tneg\n"), ["s"], "l")
    val = read_labeled_table(_write(tmp_path / "val.tsv", "s\tl\nthe mat\tpos\nthe park\tneutral\n"), ["s"], "l")
    labels = LabelSet.from_labels(r["label"] for r in train)
    with pytest.raises(ValueError, match=r"val\.tsv:3: label 'neutral' was not seen.*\['neg', 'pos'\]"):
        encode_classification(tok, val, ["s"], labels, max_len=16)


def test_conll_errors(tmp_path):
    bad = _write(tmp_path / "bad.conll", "EU NNP B-ORG\nrejects VBZ O\n\nGerman JJ\n")
    with pytest.raises(CorpusError, match=r"bad\.conll:4: 2 columns, but line 1 has 3"):
        read_conll(bad)
    with pytest.raises(CorpusError, match=r"bad\.conll:1: tag_col=5"):
        read_conll(bad, tag_col=5)


# --------------------------------------------------------------------------------------------
# labels
# --------------------------------------------------------------------------------------------
def test_labelset_order_and_round_trip():
    assert LabelSet.from_labels(["10", "2", "1", "2"]).names == ("1", "2", "10")
    assert LabelSet.from_labels(["b", "a", "10", "9"]).names == ("10", "9", "a", "b")  # not all numeric
    ls = LabelSet.from_labels(["O", "B-PER", "I-PER"])
    assert ls.names == ("B-PER", "I-PER", "O")
    assert LabelSet.from_dict(json.loads(json.dumps(ls.to_dict()))) == ls
    assert ls.encode("O") == 2 and ls.decode(0) == "B-PER" and 1 in LabelSet.from_labels([1, 0])


# --------------------------------------------------------------------------------------------
# CoNLL readers on real files
# --------------------------------------------------------------------------------------------
def test_conll2003_valid():
    sents = read_conll(shared_file("conll2003/valid.txt"))
    assert len(sents) == 3250
    assert sum(len(w) for w, _ in sents) == 51362
    assert all(w[0] != "-DOCSTART-" for w, _ in sents)
    assert {t for _, tags in sents for t in tags} == {
        "O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"}
    assert sents[0] == (["CRICKET", "-", "LEICESTERSHIRE", "TAKE", "OVER", "AT", "TOP", "AFTER", "INNINGS", "VICTORY", "."],
                        ["O", "O", "B-ORG", "O", "O", "O", "O", "O", "O", "O", "O"])
    pos = read_conll(shared_file("conll2003/valid.txt"), tag_col=1)
    assert pos[0][1][:3] == ["NNP", ":", "NNP"]


def test_conll2002_es_and_panx():
    es = read_conll(shared_file("conll2002_es/esp.testa"))
    assert (len(es), sum(len(w) for w, _ in es)) == (1915, 52923)
    assert es[0][0][:2] == ["Sao", "Paulo"] and es[0][1][:2] == ["B-LOC", "I-LOC"]
    px = read_conll(shared_file("panx/train-es.tsv"))
    assert (len(px), sum(len(w) for w, _ in px)) == (20000, 129283)
    assert {t for _, tags in px for t in tags} == {"O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"}


# --------------------------------------------------------------------------------------------
# token classification encoding
# --------------------------------------------------------------------------------------------
def test_first_subword_alignment(tok):
    words = ["Johnson", "visited", "the", "park"]
    tags = ["B-PER", "O", "O", "B-LOC"]
    labels = LabelSet.from_labels(tags)
    pieces = tok.encode(words, is_pretokenized=True, add_special_tokens=False)
    assert pieces.word_ids.count(0) >= 3  # precondition: "Johnson" splits into several pieces
    (ex,) = encode_token_classification(tok, [(words, tags)], labels, max_len=64)
    assert ex["n_words"] == 4 and ex["n_dropped_words"] == 0
    wid, lab = ex["word_ids"], ex["labels"]
    assert wid[0] == -1 and wid[-1] == -1 and lab[0] == lab[-1] == IGNORE_INDEX  # [CLS] ... [SEP]
    expected, prev = [], -1
    for w in wid:
        expected.append(labels.encode(tags[w]) if w >= 0 and w != prev else IGNORE_INDEX)
        prev = w
    assert lab == expected
    # the label sits on the first piece of "Johnson" only
    johnson = [i for i, w in enumerate(wid) if w == 0]
    assert lab[johnson[0]] == labels.encode("B-PER") and all(lab[i] == IGNORE_INDEX for i in johnson[1:])
    assert sum(v != IGNORE_INDEX for v in lab) == 4
    # predictions map back to words through the first piece
    preds = [labels.encode("O")] * len(wid)
    preds[johnson[0]] = labels.encode("B-PER")
    preds[johnson[1]] = labels.encode("B-LOC")  # a later piece's prediction is ignored
    assert predictions_to_word_tags(preds, wid, 4, labels) == ["B-PER", "O", "O", "O"]


def test_truncation_keeps_whole_words_and_counts_dropped(tok):
    words = ["the", "cat", "visited", "the", "park"]
    tags = ["O", "B-PER", "O", "O", "B-LOC"]
    labels = LabelSet.from_labels(tags)
    n_pieces = [tok.encode([w], is_pretokenized=True, add_special_tokens=False).ids for w in words]
    # room for "the cat" plus part of "visited": the partial word must be cut entirely
    max_len = 2 + len(n_pieces[0]) + len(n_pieces[1]) + 2
    assert len(n_pieces[2]) > 2
    (ex,) = encode_token_classification(tok, [(words, tags)], labels, max_len=max_len)
    assert len(ex["input_ids"]) == 2 + len(n_pieces[0]) + len(n_pieces[1]) <= max_len
    assert set(ex["word_ids"]) == {-1, 0, 1}
    assert ex["n_dropped_words"] == 3
    pred = [labels.encode("B-PER")] * len(ex["input_ids"])
    assert predictions_to_word_tags(pred, ex["word_ids"], ex["n_words"], labels) == ["B-PER", "B-PER", "O", "O", "O"]
    # a single word longer than the budget keeps its first pieces (and its label)
    (ex,) = encode_token_classification(tok, [(["visited"], ["O"])], labels, max_len=4)
    assert len(ex["input_ids"]) == 4 and ex["n_dropped_words"] == 0
    with pytest.raises(ValueError, match=r"dev\.conll: sentence 1, word 2 \('cat'\).*'B-MISC'"):
        encode_token_classification(tok, [(["the", "cat"], ["O", "B-MISC"])], labels, 8, source="dev.conll")


def test_pair_truncation_longest_first(tok):
    rows = [{"a": "the cat sat on the mat the cat sat", "b": "a dog", "label": "x"}]
    labels = LabelSet.from_labels(["x"])
    la = len(tok.encode("the cat sat on the mat the cat sat", add_special_tokens=False).ids)
    lb = len(tok.encode("a dog", add_special_tokens=False).ids)
    assert la > lb + 4
    (ex,) = encode_classification(tok, rows, ["a", "b"], labels, max_len=3 + lb + 4)
    types = ex["token_type_ids"]
    assert len(ex["input_ids"]) == 3 + lb + 4
    assert types.count(0) == 1 + 4 + 1 and types.count(1) == lb + 1  # only the long side was cut
    # both sides cut: the shorter keeps budget // 2, the longer the rest (HF fast tokenizers' rule),
    # whichever side comes first
    (ex,) = encode_classification(tok, rows, ["a", "b"], labels, max_len=3 + 2 * lb - 1)
    assert ex["token_type_ids"].count(0) - 2 == lb and ex["token_type_ids"].count(1) - 1 == lb - 1
    swapped = [{"a": rows[0]["b"], "b": rows[0]["a"], "label": "x"}]
    (ex,) = encode_classification(tok, swapped, ["a", "b"], labels, max_len=3 + 2 * lb - 1)
    assert ex["token_type_ids"].count(0) - 2 == lb - 1 and ex["token_type_ids"].count(1) - 1 == lb


# --------------------------------------------------------------------------------------------
# collation
# --------------------------------------------------------------------------------------------
def test_collate(tok):
    pad = tok.token_to_id(PAD)
    labels = LabelSet.from_labels(["neg", "pos"])
    rows = [{"s": "the cat sat on the mat", "label": "pos"}, {"s": "a dog", "label": "neg"}]
    b = collate_classification(encode_classification(tok, rows, ["s"], labels, 32), pad)
    assert b["input_ids"].shape == b["attention_mask"].shape == b["token_type_ids"].shape
    assert b["labels"].tolist() == [1, 0] and b["attention_mask"].dtype == torch.bool
    n2 = int(b["attention_mask"][1].sum())
    assert (b["input_ids"][1, n2:] == pad).all() and (b["input_ids"][1, :n2] != pad).all()

    ner = LabelSet.from_labels(["O", "B-PER"])
    ex = encode_token_classification(tok, [(["John", "Smith", "sat"], ["B-PER", "O", "O"]), (["a"], ["O"])], ner, 32)
    b = collate_token_classification(ex, pad)
    T = b["input_ids"].shape[1]
    assert b["labels"].shape == b["word_ids"].shape == (2, T)
    n2 = len(ex[1]["input_ids"])
    assert (b["labels"][1, n2:] == IGNORE_INDEX).all() and (b["word_ids"][1, n2:] == -1).all()
    assert b["labels"][0].tolist()[: len(ex[0]["labels"])] == ex[0]["labels"]
    assert b["n_words"].tolist() == [3, 1]

    # pad_to_multiple_of rounds the batch width up; the extra columns are padding everywhere
    b8 = collate_token_classification(ex, pad, 8)
    assert b8["input_ids"].shape[1] == 8 * -(-T // 8) and not b8["attention_mask"][:, T:].any()
    assert (b8["labels"][:, T:] == IGNORE_INDEX).all() and torch.equal(b8["labels"][:, :T], b["labels"])


# --------------------------------------------------------------------------------------------
# Hugging Face datasets path (a local folder of jsonl files, offline)
# --------------------------------------------------------------------------------------------
def test_hf_local_jsonl_folder(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    folder = tmp_path / "ds"
    folder.mkdir()
    _write(folder / "train.jsonl", "".join(json.dumps({"premise": p, "hypothesis": h, "label": y}) + "\n"
                                           for p, h, y in [("a cat", "an animal", "yes"), ("a dog", "a car", "no")]))
    _write(folder / "validation.jsonl", json.dumps({"premise": "x", "hypothesis": "", "label": "yes"}) + "\n")
    cache = str(tmp_path / "cache")
    rows = read_hf_table(str(folder), None, "train", ["premise", "hypothesis"], "label", cache_dir=cache)
    assert [(r["premise"], r["hypothesis"], r["label"]) for r in rows] == [("a cat", "an animal", "yes"), ("a dog", "a car", "no")]
    assert rows[1]["where"].endswith("[train] row 1")
    with pytest.raises(CorpusError, match=r"missing column 'sentence'; available: \['premise', 'hypothesis', 'label'\]"):
        read_hf_table(str(folder), None, "train", ["sentence"], "label", cache_dir=cache)
    with pytest.raises(CorpusError, match=r"\[validation\] row 0: empty text in field 'hypothesis'"):
        read_hf_table(str(folder), None, "validation", ["premise", "hypothesis"], "label", cache_dir=cache)
