"""Fine-tuning data: labelled tables and CoNLL files -> encoded examples -> padded batches.

Sequence classification (single sentences or pairs)::

    rows = read_labeled_table("sst2/train.tsv", ["sentence"], "label")
    labels = LabelSet.from_labels(r["label"] for r in rows)
    examples = encode_classification(tokenizer, rows, ["sentence"], labels, max_len=128)
    batch = collate_classification(examples[:32], pad_id=0)

Token classification (NER)::

    sents = read_conll("conll2003/train.txt")
    labels = LabelSet.from_labels(t for _, tags in sents for t in tags)
    examples = encode_token_classification(tokenizer, sents, labels, max_len=128)
    batch = collate_token_classification(examples[:32], pad_id=0)
    ...
    word_tags = predictions_to_word_tags(pred_ids, ex["word_ids"], ex["n_words"], labels)

A *row* is ``{<text field>: str, ..., "label": str, "where": "file:line"}``: labels are kept as
strings (an integer label ``1`` becomes ``"1"``) and ``where`` lets later errors point back to the
source line. Every error names the file and line (or dataset row) at fault.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Encoding, Tokenizer
from torch import Tensor

from lit_tf.data.config import FineTuneDataConfig
from lit_tf.data.pretraining import pad_examples
from lit_tf.data.text import CorpusError
from lit_tf.objectives.losses import IGNORE_INDEX

log = logging.getLogger(__name__)

__all__ = [
    "LabelSet",
    "collate_classification",
    "collate_token_classification",
    "encode_classification",
    "encode_token_classification",
    "predictions_to_word_tags",
    "read_conll",
    "read_hf_table",
    "read_labeled_table",
]

FORMATS = ("tsv", "csv", "jsonl")
_FMT_BY_SUFFIX = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}
PAIR_SEP = " ||| "  # separates the two texts of a sentence pair on one line (predict, pyfunc inputs)
_RESERVED = ("label", "where")  # keys every row carries besides its text fields

Sentence = tuple[list[str], list[str]]  # (words, tags)


# --------------------------------------------------------------------------------------------
# labelled tables
# --------------------------------------------------------------------------------------------
def _check_fields(text_fields: Sequence[str], label_field: str) -> None:
    if isinstance(text_fields, str):
        raise TypeError(f"text_fields must be a list of field names, got the string {text_fields!r}")
    if not 1 <= len(text_fields) <= 2:
        raise ValueError(f"text_fields must name 1 (single) or 2 (pair) fields, got {list(text_fields)}")
    clash = [f for f in text_fields if f in _RESERVED or f == label_field]
    if clash:
        raise ValueError(f"text field(s) {clash} clash with the label field or reserved keys {list(_RESERVED)}")


def _make_row(rec: Mapping, text_fields: Sequence[str], label_field: str, where: str) -> dict:
    """One validated row from a record whose keys are already the requested field names."""
    row: dict = {}
    for f in text_fields:
        text = rec[f]
        if not isinstance(text, str):
            raise CorpusError(f"{where}: field {f!r} is not text (got {type(text).__name__})")
        if not text.strip():
            raise CorpusError(f"{where}: empty text in field {f!r}")
        row[f] = text.strip()
    label = rec[label_field]
    label = "" if label is None else str(label).strip()
    if not label:
        raise CorpusError(f"{where}: empty label in field {label_field!r}")
    row["label"] = label
    row["where"] = where
    return row


def _resolve_column(name: str, columns: Sequence[str], where: str, hint: str) -> int:
    """Index of a field given by column name or by an integer index written as a string."""
    if name in columns:
        return list(columns).index(name)
    if re.fullmatch(r"-?\d+", name) and -len(columns) <= int(name) < len(columns):
        return int(name) % len(columns)
    raise CorpusError(f"{where}: missing column {name!r}; available: {list(columns)}{hint}")


def _delimited_lines(path: Path, fmt: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, values) of a TSV (plain split on tabs, no quoting) or CSV file; blank lines skipped."""
    try:
        if fmt == "tsv":
            # newline="\n": split on "\n" only, so a U+0085 inside a sentence stays inside it.
            with open(path, encoding="utf-8", newline="\n") as f:
                for lineno, raw in enumerate(f, start=1):
                    line = raw.rstrip("\n").removesuffix("\r")
                    if line.strip():
                        yield lineno, line.split("\t")
        else:
            with open(path, encoding="utf-8", newline="") as f:
                reader = csv.reader(f)
                for values in reader:
                    if any(v.strip() for v in values):
                        yield reader.line_num, values
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from e
    except csv.Error as e:
        raise CorpusError(f"{path}: malformed CSV ({e})") from e


def _delimited_records(
    path: Path, fmt: str, text_fields: Sequence[str], label_field: str,
    has_header: bool | None, column_names: Sequence[str] | None,
) -> Iterator[tuple[str, dict]]:
    if has_header is None:
        has_header = column_names is None
    lines = _delimited_lines(path, fmt)
    columns: list[str] | None = list(column_names) if column_names is not None else None
    header_where = f"{path}"
    if has_header:
        first = next(lines, None)
        if first is None:
            raise CorpusError(f"{path}: empty file (expected a header line)")
        lineno, header = first
        header_where = f"{path}:{lineno}"
        if columns is None:
            columns = [h.strip() for h in header]
        elif len(columns) != len(header):
            raise CorpusError(f"{header_where}: header has {len(header)} columns, column_names has {len(columns)}")
    idx: dict[str, int] | None = None
    for lineno, values in lines:
        where = f"{path}:{lineno}"
        if columns is None:  # no header, no names: columns are "0", "1", ...
            columns = [str(i) for i in range(len(values))]
        if idx is None:
            if column_names is not None:
                hint = " (from column_names)"
            elif has_header:
                hint = " (read from the header line; for a header-less file pass column_names=[...])"
            else:
                hint = " (no header: pass column_names=[...] or integer indexes)"
            idx = {f: _resolve_column(f, columns, header_where if has_header else where, hint)
                   for f in [*text_fields, label_field]}
        if len(values) != len(columns):
            raise CorpusError(
                f"{where}: expected {len(columns)} columns {columns}, got {len(values)} "
                f"({'tab' if fmt == 'tsv' else 'comma'}-separated)"
            )
        yield where, {f: values[i] for f, i in idx.items()}


def _jsonl_records(path: Path, fields: Sequence[str]) -> Iterator[tuple[str, dict]]:
    try:
        with open(path, encoding="utf-8", newline="\n") as f:
            for lineno, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    obj = json.loads(raw)
                except json.JSONDecodeError as e:
                    raise CorpusError(f"{where}: invalid JSON ({e.msg})") from e
                if not isinstance(obj, dict):
                    raise CorpusError(f"{where}: expected a JSON object, got {type(obj).__name__}")
                missing = [k for k in fields if k not in obj]
                if missing:
                    raise CorpusError(f"{where}: missing field {missing[0]!r}; available: {sorted(obj)}")
                yield where, obj
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from e


def read_labeled_table(
    path: str | os.PathLike,
    text_fields: Sequence[str],
    label_field: str,
    *,
    fmt: str | None = None,
    has_header: bool | None = None,
    column_names: Sequence[str] | None = None,
) -> list[dict]:
    """Read a labelled ``.tsv`` / ``.csv`` / ``.jsonl`` file into rows (see the module docstring).

    Args:
        path: the file. ``fmt`` defaults from its extension (``.json`` is read as JSON lines).
        text_fields: one field (single sentence) or two (a pair, e.g. premise + hypothesis).
        label_field: the label's field.
        fmt: ``"tsv"`` (split on tabs, *no* quoting: sentences keep their ``"``), ``"csv"``
            (the ``csv`` module, RFC-4180 quoting) or ``"jsonl"`` (one object per line).
        has_header: whether the first line of a TSV/CSV names the columns. Default: True unless
            ``column_names`` is given.
        column_names: names for the columns of a header-less file (or to rename a header's).
            Fields may also be integer column indexes written as strings (``"0"``, ``"-1"``).

    Raises:
        CorpusError naming ``file:line``: a missing column (listing the available ones), a line
        with the wrong number of columns, an empty text or label, invalid JSON / UTF-8.
    """
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: no such file (cwd={os.getcwd()})")
    _check_fields(text_fields, label_field)
    fmt = fmt or _FMT_BY_SUFFIX.get(path.suffix.lower())
    if fmt not in FORMATS:
        raise CorpusError(f"{path}: unknown table format {fmt or path.suffix!r}; pass fmt= one of {list(FORMATS)}")
    fields = [*text_fields, label_field]
    if fmt == "jsonl":
        records = _jsonl_records(path, fields)
    else:
        records = _delimited_records(path, fmt, text_fields, label_field, has_header, column_names)
    rows = [_make_row(rec, text_fields, label_field, where) for where, rec in records]
    if not rows:
        raise CorpusError(f"{path}: no examples")
    return rows


def read_hf_table(
    name: str,
    config: str | None,
    split: str,
    text_fields: Sequence[str],
    label_field: str,
    **load_kwargs,
) -> list[dict]:
    """Rows of a Hugging Face dataset split (hub name or local folder), same checks as files.

    ``ClassLabel`` labels become their names (``"entailment"``, not ``0``); a label outside the
    class range (``-1`` marks unlabelled test splits) is an error. ``load_kwargs`` go to
    ``datasets.load_dataset`` (e.g. ``data_files=``, ``cache_dir=``).
    """
    import datasets  # heavy import, only when used

    _check_fields(text_fields, label_field)
    ds = datasets.load_dataset(name, config, split=split, **load_kwargs)
    src = f"HF dataset {name!r}" + (f" ({config})" if config else "") + f"[{split}]"
    for f in [*text_fields, label_field]:
        if f not in ds.column_names:
            raise CorpusError(f"{src}: missing column {f!r}; available: {ds.column_names}")
    feature = ds.features[label_field]
    class_names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    columns = {f: ds[f] for f in dict.fromkeys([*text_fields, label_field])}  # columnar: fast
    rows = []
    for i in range(len(ds)):
        rec = {f: col[i] for f, col in columns.items()}
        where = f"{src} row {i}"
        if class_names is not None:
            y = rec[label_field]
            if y is None or not 0 <= int(y) < len(class_names):
                raise CorpusError(f"{where}: label {y!r} is not a class of {class_names} (an unlabelled split?)")
            rec[label_field] = class_names[int(y)]
        rows.append(_make_row(rec, text_fields, label_field, where))
    if not rows:
        raise CorpusError(f"{src}: no examples")
    return rows


# --------------------------------------------------------------------------------------------
# labels
# --------------------------------------------------------------------------------------------
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True)
class LabelSet:
    """The label vocabulary, fixed from the training split and saved with the model.

    Order: sorted as strings, or numerically when every label looks like a number
    (``"2" < "10"``), so the same training labels always give the same ids.
    """

    names: tuple[str, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = tuple(str(n) for n in self.names)
        if not names:
            raise ValueError("LabelSet: no labels")
        if len(set(names)) != len(names):
            raise ValueError(f"LabelSet: duplicate labels in {list(names)}")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "_index", {n: i for i, n in enumerate(names)})

    @classmethod
    def from_labels(cls, labels: Iterable[object]) -> LabelSet:
        """Distinct labels of the training data, in the stable order described above."""
        distinct = {str(x).strip() for x in labels}
        if distinct and all(_NUMBER.fullmatch(x) for x in distinct):
            ordered = sorted(distinct, key=lambda x: (float(x), x))
        else:
            ordered = sorted(distinct)
        return cls(tuple(ordered))

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, label: object) -> bool:
        return str(label).strip() in self._index

    def encode(self, label: object, where: str = "") -> int:
        """Id of a label; CorpusError (a ValueError) naming ``where`` (file:line) and the known labels if unseen."""
        try:
            return self._index[str(label).strip()]
        except KeyError:
            prefix = f"{where}: " if where else ""
            raise CorpusError(
                f"{prefix}label {label!r} was not seen in the training data; known labels: {list(self.names)}"
            ) from None

    def decode(self, index: int) -> str:
        return self.names[int(index)]

    def to_dict(self) -> dict:
        return {"names": list(self.names)}

    @classmethod
    def from_dict(cls, d: Mapping) -> LabelSet:
        return cls(tuple(d["names"]))


# --------------------------------------------------------------------------------------------
# sequence classification examples
# --------------------------------------------------------------------------------------------
def _longest_first(la: int, lb: int, budget: int) -> tuple[int, int]:
    """Lengths after longest-first truncation, as HF's fast tokenizers (``tokenizers``) compute
    them, so that lit_tf and an HF pipeline on the same tokenizer see the same tokens: only the
    longer side is cut while that is enough; otherwise the shorter side keeps ``budget // 2``
    and the longer side the rest (the first side counts as the shorter on a tie)."""
    if la + lb <= budget:
        return la, lb
    swap = la > lb
    short, long_ = (lb, la) if swap else (la, lb)
    long_ = max(short, budget - short)
    if short + long_ > budget:
        short, long_ = budget // 2, budget - budget // 2
    return (long_, short) if swap else (short, long_)


def _truncated(enc: Encoding, n: int) -> Encoding:
    if n < len(enc.ids):
        enc.truncate(n)
    return enc


def encode_classification(
    tokenizer: Tokenizer,
    rows: Sequence[Mapping],
    text_fields: Sequence[str],
    labels: LabelSet,
    max_len: int,
) -> list[dict]:
    """Rows -> ``{"input_ids", "token_type_ids", "label"}`` examples (lists of ints, an int).

    Specials and segment ids come from the tokenizer's post-processor (``[CLS] a [SEP]`` and
    ``[CLS] a [SEP] b [SEP]`` with segments 0/1 for lit_tf tokenizers). Texts are cut
    longest-first so that the whole example has at most ``max_len`` tokens. Labels are checked
    before any tokenization: an unseen label raises CorpusError naming the row's file:line.
    """
    _check_fields(text_fields, "label")
    pair = len(text_fields) == 2
    budget = max_len - tokenizer.num_special_tokens_to_add(pair)
    if budget < len(text_fields):
        raise ValueError(f"max_len={max_len} leaves no room for text after the special tokens")
    label_ids = [labels.encode(r["label"], r.get("where", f"row {i}")) for i, r in enumerate(rows)]
    columns = [tokenizer.encode_batch([r[f] for r in rows], add_special_tokens=False) for f in text_fields]
    examples = []
    for i, label_id in enumerate(label_ids):
        a = columns[0][i]
        b = columns[1][i] if pair else None
        la, lb = _longest_first(len(a.ids), len(b.ids) if b is not None else 0, budget)
        enc = tokenizer.post_process(_truncated(a, la), _truncated(b, lb) if b is not None else None, True)
        examples.append({"input_ids": enc.ids, "token_type_ids": enc.type_ids, "label": label_id})
    return examples


# --------------------------------------------------------------------------------------------
# CoNLL token classification
# --------------------------------------------------------------------------------------------
def read_conll(
    path: str | os.PathLike, *, token_col: int = 0, tag_col: int = -1, sep: str | None = None
) -> list[Sentence]:
    """Sentences of a CoNLL-style file as ``(tokens, tags)``.

    One token per line, columns separated by ``sep``; by default a tab if the first data line
    contains one, else any run of whitespace. Blank lines end sentences; ``-DOCSTART-`` lines are
    skipped. Every line must have as many columns as the first data line: CorpusError with
    ``file:line`` otherwise (and for an empty token/tag or a column index out of range).
    """
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: no such file (cwd={os.getcwd()})")
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    n_cols = first_lineno = 0

    def flush() -> None:
        nonlocal tokens, tags
        if tokens:
            sentences.append((tokens, tags))
            tokens, tags = [], []

    try:
        with open(path, encoding="utf-8", newline="\n") as f:
            for lineno, raw in enumerate(f, start=1):
                line = raw.rstrip("\n").removesuffix("\r")
                if not line.strip() or line.startswith("-DOCSTART-"):
                    flush()
                    continue
                if sep is None:
                    sep = "\t" if "\t" in line else " "
                cols = [c.strip() for c in (line.split() if sep == " " else line.split(sep))]
                if not n_cols:
                    n_cols, first_lineno = len(cols), lineno
                    for name, col in (("token_col", token_col), ("tag_col", tag_col)):
                        if not -n_cols <= col < n_cols:
                            raise CorpusError(f"{path}:{lineno}: {name}={col} but the line has {n_cols} columns: {line!r}")
                if len(cols) != n_cols:
                    raise CorpusError(
                        f"{path}:{lineno}: {len(cols)} columns, but line {first_lineno} has {n_cols} "
                        f"(separator {sep!r}): {line!r}"
                    )
                token, tag = cols[token_col], cols[tag_col]
                if not token or not tag:
                    raise CorpusError(f"{path}:{lineno}: empty token or tag: {line!r}")
                tokens.append(token)
                tags.append(tag)
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from e
    flush()
    if not sentences:
        raise CorpusError(f"{path}: no sentences")
    return sentences


def _whole_word_cut(word_ids: Sequence[int], budget: int) -> int:
    """How many sub-tokens to keep: at most ``budget``, ending on a word boundary when possible.
    A first word longer than the budget keeps its first ``budget`` pieces (its label survives)."""
    if len(word_ids) <= budget:
        return len(word_ids)
    cut = budget
    while cut > 0 and word_ids[cut - 1] == word_ids[budget]:
        cut -= 1
    return cut or budget


def encode_token_classification(
    tokenizer: Tokenizer,
    sentences: Sequence[Sentence],
    labels: LabelSet,
    max_len: int,
    *,
    source: str = "sentences",
) -> list[dict]:
    """Pre-split sentences -> token-classification examples, one label per word.

    Each example has ``input_ids``, ``token_type_ids``, ``labels`` (the word's tag id on its
    *first* sub-token; IGNORE_INDEX on later sub-tokens and specials), ``word_ids`` (word index
    per position, -1 on specials, to map predictions back to words), ``n_words`` and
    ``n_dropped_words``.

    Truncation to ``max_len`` cuts between words where possible. Words that get no labelled
    position (cut off by ``max_len``, or that tokenize to nothing) are *dropped*: the model makes
    no prediction for them, :func:`predictions_to_word_tags` gives them ``"O"``, and they must
    still be scored against their gold tags (so a dropped entity counts as missed).
    ``n_dropped_words`` counts them per sentence, and the total is logged.
    Unseen tags raise ValueError naming ``source``, the sentence and the word.
    """
    budget = max_len - tokenizer.num_special_tokens_to_add(False)
    if budget < 1:
        raise ValueError(f"max_len={max_len} leaves no room for words after the special tokens")
    tag_ids = []
    for i, (words, tags) in enumerate(sentences):
        if len(words) != len(tags):
            raise ValueError(f"{source}: sentence {i + 1} has {len(words)} words but {len(tags)} tags")
        tag_ids.append([labels.encode(t, f"{source}: sentence {i + 1}, word {j + 1} ({w!r})")
                        for j, (w, t) in enumerate(zip(words, tags))])
    encs = tokenizer.encode_batch([list(w) for w, _ in sentences], is_pretokenized=True, add_special_tokens=False)
    examples = []
    n_dropped_total = n_words_total = 0
    for (words, _), ids, enc in zip(sentences, tag_ids, encs):
        enc = tokenizer.post_process(_truncated(enc, _whole_word_cut(enc.word_ids, budget)), None, True)
        word_ids = [-1 if w is None else w for w in enc.word_ids]
        label_row, labelled, prev = [], 0, -1
        for w in word_ids:
            first = w >= 0 and w != prev
            label_row.append(ids[w] if first else IGNORE_INDEX)
            labelled += first
            prev = w
        dropped = len(words) - labelled
        n_dropped_total += dropped
        n_words_total += len(words)
        examples.append({
            "input_ids": enc.ids, "token_type_ids": enc.type_ids, "labels": label_row,
            "word_ids": word_ids, "n_words": len(words), "n_dropped_words": dropped,
        })
    if n_dropped_total:
        log.warning("%s: %d of %d words get no prediction (beyond max_len=%d or no sub-tokens); "
                    "they are scored as 'O'", source, n_dropped_total, n_words_total, max_len)
    return examples


def predictions_to_word_tags(
    pred_ids: Sequence[int], word_ids: Sequence[int], n_words: int, labels: LabelSet, fill: str = "O"
) -> list[str]:
    """Per-word tags from per-position predicted ids: each word takes its first sub-token's
    prediction; dropped words (no position, see :func:`encode_token_classification`) get ``fill``.
    Padding positions (``word_ids == -1``) are ignored, so padded batch rows can be passed as is."""
    tags = [fill] * n_words
    prev = -1
    for p, w in zip(pred_ids, word_ids):
        w = int(w)
        if w >= 0 and w != prev:
            tags[w] = labels.decode(p)
        prev = w
    return tags


# --------------------------------------------------------------------------------------------
# collation
# --------------------------------------------------------------------------------------------
def collate_classification(examples: Sequence[Mapping], pad_id: int, pad_to_multiple_of: int | None = None
                           ) -> dict[str, Tensor]:
    """``input_ids``, ``token_type_ids``, ``attention_mask`` (B, T), padded to the batch's longest
    row (rounded up to ``pad_to_multiple_of``), and ``labels`` (B,)."""
    batch = pad_examples(examples, pad_id, pad_to_multiple_of, {"token_type_ids": 0})
    batch["labels"] = torch.tensor([int(e["label"]) for e in examples], dtype=torch.long)  # (B,)
    return batch


def collate_token_classification(examples: Sequence[Mapping], pad_id: int, pad_to_multiple_of: int | None = None
                                 ) -> dict[str, Tensor]:
    """As :func:`collate_classification`, with ``labels`` (B, T) padded with IGNORE_INDEX,
    ``word_ids`` (B, T) padded with -1, and ``n_words`` / ``n_dropped_words`` (B,)."""
    batch = pad_examples(examples, pad_id, pad_to_multiple_of,
                         {"token_type_ids": 0, "labels": IGNORE_INDEX, "word_ids": -1})
    batch["n_words"] = torch.tensor([e["n_words"] for e in examples], dtype=torch.long)  # (B,)
    batch["n_dropped_words"] = torch.tensor([e["n_dropped_words"] for e in examples], dtype=torch.long)
    return batch


# --------------------------------------------------------------------------------------------
# the data half of a fine-tuning task (lit_tf.lit.tasks bundles it with the rest)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskData:
    """How one fine-tuning task reads, labels, encodes, batches and shows its examples.

    `data_cfg` is the typed `data` group (`lit_tf.data.config.FineTuneDataConfig`).
    `read(data_cfg, source)` -> rows; `labels(rows)` -> every label the rows carry (the training
    split's define the label set); `encode(tokenizer, rows, data_cfg, labels, max_len, source)` ->
    examples; `collate(examples, pad_id, pad_to_multiple_of)` -> a batch; `line(row, data_cfg)` ->
    the row as the input line `lit_tf.cli.predict` takes; `texts(rows, data_cfg)` -> the text a
    scratch tokenizer is trained on. `named_labels`: `data.label_names` renames its labels;
    `hf_tables`: it reads HF datasets (`data.hf_name`)."""

    read: Callable[[FineTuneDataConfig, object], list]
    labels: Callable[[Sequence], Iterable[str]]
    encode: Callable[..., list[dict]]
    collate: Callable[..., dict[str, Tensor]]
    line: Callable[[object, FineTuneDataConfig], str]
    texts: Callable[[Sequence, FineTuneDataConfig], list[str]]
    named_labels: bool = False
    hf_tables: bool = False


def _read_table(c: FineTuneDataConfig, source: object) -> list[dict]:
    if c.hf_name:
        return read_hf_table(c.hf_name, c.hf_config, str(source), list(c.text_fields), c.label_field)
    return read_labeled_table(str(source), list(c.text_fields), c.label_field, fmt=c.format,
                              has_header=c.has_header, column_names=c.column_names)


def _read_conll(c: FineTuneDataConfig, source: object) -> list[Sentence]:
    return read_conll(str(source), token_col=c.conll.token_col, tag_col=c.conll.tag_col)


SEQUENCE_DATA = TaskData(
    read=_read_table,
    labels=lambda rows: (r["label"] for r in rows),
    encode=lambda tok, rows, c, labels, max_len, source: encode_classification(
        tok, rows, list(c.text_fields), labels, max_len),
    collate=collate_classification,
    line=lambda row, c: PAIR_SEP.join(str(row[f]) for f in c.text_fields),
    texts=lambda rows, c: [r[f] for r in rows for f in c.text_fields],
    named_labels=True,
    hf_tables=True,
)
TOKEN_DATA = TaskData(
    read=_read_conll,
    labels=lambda sents: (t for _, tags in sents for t in tags),
    encode=lambda tok, sents, c, labels, max_len, source: encode_token_classification(
        tok, sents, labels, max_len, source=source),
    collate=collate_token_classification,
    line=lambda sent, c: " ".join(sent[0]),
    texts=lambda sents, c: [" ".join(words) for words, _ in sents],
)
