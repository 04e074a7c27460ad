"""Text sources: turn files, HF datasets or the built-in corpus into a stream of documents.

A *document* is a list of sentences (strings). Everything downstream (tokenizer training,
sharding, NSP pairs) consumes `iter_documents(source)` lazily, so memory stays flat however
large the corpus is.

Sources are described by a small dict (from the Hydra config):

- ``{"files": ["data/*.txt", "more.jsonl"], "text_field": "text", "doc_per_line": False}``: local
  files, globs allowed. ``.txt``: plain text, blank lines separate documents (or, with
  ``doc_per_line``, each line is a document). ``.jsonl``: one JSON object per line
  with a text field (one document per object).
- ``{"hf": "wikitext", "hf_config": "wikitext-2-raw-v1", "split": "train", "text_field": "text"}``:
  a Hugging Face `datasets` name (needs network unless cached) or local dataset dir.
- ``{"builtin": "pydoc"}``: English prose that ships with every Python installation
  (pydoc topic help + standard-library docstrings), assembled here; no download.
"""

from __future__ import annotations

import ast
import glob
import hashlib
import json
import os
import re
import sysconfig
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from lit_tf.errors import LitTfError

Document = list[str]

# Split after sentence-final punctuation followed by whitespace and an upper-case letter, digit
# or quote. Deliberately simple: NSP needs plausible sentence units, not linguistic precision.
_SENT_END = re.compile(r"(?<=[.!?])\s+(?=[\"'¿¡(\[A-ZÁÉÍÓÚÑÜÀÈÌÒÙÂÊÎÔÛÇ0-9])")


class CorpusError(LitTfError):
    """Bad corpus input; the message names the file (and line) at fault."""


# Longest line a .txt/.jsonl corpus may have (characters). Lines are read at most this far, so a
# file without line structure (a 50 MB single line, minified or binary data) fails at once with
# its file:line instead of being loaded whole and tokenized as one document. 4M characters is a
# long book on one line: every real corpus with a paragraph or a document per line fits.
MAX_LINE_CHARS = 1 << 22


def _read_lines(f, path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of an open text file, refusing a line longer than MAX_LINE_CHARS."""
    lineno = 0
    while raw := f.readline(MAX_LINE_CHARS + 1):
        lineno += 1
        if len(raw) > MAX_LINE_CHARS and not raw.endswith("\n"):
            raise CorpusError(
                f"{path}:{lineno}: line longer than {MAX_LINE_CHARS:,} characters (the limit is "
                "lit_tf.data.text.MAX_LINE_CHARS); expected text with one paragraph or document per line"
            )
        yield lineno, raw


def split_sentences(text: str) -> list[str]:
    """Split one line/paragraph into sentences (non-empty, stripped)."""
    return [s.strip() for s in _SENT_END.split(text) if s.strip()]


def _doc_from_lines(lines: Sequence[str]) -> Document:
    sents: Document = []
    for line in lines:
        sents.extend(split_sentences(line))
    return sents


# --------------------------------------------------------------------------------------------
# local files
# --------------------------------------------------------------------------------------------
def expand_files(patterns: Sequence[str] | str, *, key: str = "files") -> list[Path]:
    """Expand globs (sorted, de-duplicated); error naming the pattern when nothing matches."""
    if isinstance(patterns, (str, os.PathLike)):
        patterns = [str(patterns)]
    out: list[Path] = []
    for pat in patterns:
        pat = os.path.expanduser(str(pat))
        hits = sorted(glob.glob(pat, recursive=True)) if glob.has_magic(pat) else [pat]
        hits = [h for h in hits if os.path.isfile(h)]
        if not hits:
            raise CorpusError(f"{key}: no file matches {pat!r} (cwd={os.getcwd()})")
        out.extend(Path(h).resolve() for h in hits)
    seen: set[Path] = set()
    out = [p for p in out if not (p in seen or seen.add(p))]
    if all(p.stat().st_size == 0 for p in out):
        shown = ", ".join(str(p) for p in out[:3]) + (f" and {len(out) - 3} more" if len(out) > 3 else "")
        raise CorpusError(f"{key}: {shown}: empty file{'s' if len(out) > 1 else ''}; expected text")
    return out


def _iter_txt(path: Path, doc_per_line: bool = False) -> Iterator[Document]:
    block: list[str] = []
    with open(path, encoding="utf-8", newline="\n") as f:
        try:
            for _, raw in _read_lines(f, path):
                line = raw.rstrip("\n").strip()
                if line and doc_per_line:
                    doc = _doc_from_lines([line])
                    if doc:
                        yield doc
                elif line:
                    block.append(line)
                elif block:
                    doc = _doc_from_lines(block)
                    if doc:
                        yield doc
                    block = []
        except UnicodeDecodeError as e:
            raise CorpusError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from e
    if block:
        doc = _doc_from_lines(block)
        if doc:
            yield doc


def _iter_jsonl(path: Path, text_field: str) -> Iterator[Document]:
    with open(path, encoding="utf-8", newline="\n") as f:
        for lineno, raw in _read_lines(f, path):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                raise CorpusError(f"{path}:{lineno}: invalid JSON ({e.msg})") from e
            if not isinstance(obj, dict) or text_field not in obj:
                keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
                raise CorpusError(f"{path}:{lineno}: no {text_field!r} field (found {keys})")
            text = obj[text_field]
            if not isinstance(text, str):
                raise CorpusError(f"{path}:{lineno}: field {text_field!r} is not a string")
            doc = _doc_from_lines([ln for ln in text.split("\n") if ln.strip()])
            if doc:
                yield doc


def iter_file_documents(
    paths: Sequence[Path], text_field: str = "text", doc_per_line: bool = False
) -> Iterator[Document]:
    """Documents of local files. `.txt`: blank lines separate documents, or with `doc_per_line`
    every line is one (corpora with one paragraph or article per line)."""
    for path in paths:
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json"):
            yield from _iter_jsonl(path, text_field)
        else:
            yield from _iter_txt(path, doc_per_line)


# --------------------------------------------------------------------------------------------
# Hugging Face datasets (online users; tests point it at local files)
# --------------------------------------------------------------------------------------------
def iter_hf_documents(
    name: str, config: str | None, split: str, text_field: str, streaming: bool
) -> Iterator[Document]:
    import datasets  # heavy import, only when used

    ds = datasets.load_dataset(name, config, split=split, streaming=streaming)
    cols = getattr(ds, "column_names", None)
    if cols is not None and text_field not in cols:
        raise CorpusError(f"HF dataset {name!r} split {split!r}: no column {text_field!r} (has {cols})")
    # Rows that are blank act as document separators (e.g. wikitext); other rows are lines.
    block: list[str] = []
    for row in ds:
        text = row[text_field] or ""
        lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
        if not lines:
            if block:
                yield _doc_from_lines(block)
                block = []
            continue
        block.extend(lines)
        if "\n\n" in text or len(text) > 2000:  # one row is one document in most datasets
            yield _doc_from_lines(block)
            block = []
    if block:
        yield _doc_from_lines(block)


# --------------------------------------------------------------------------------------------
# built-in corpus: English prose shipped with Python itself
# --------------------------------------------------------------------------------------------
def _stdlib_docstring_docs(max_files: int | None) -> Iterator[Document]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.rglob("*.py") if not ({"test", "tests", "idlelib", "site-packages"} & set(p.parts)))
    for path in files[:max_files]:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        for node in nodes:
            doc = ast.get_docstring(node)
            if not doc or len(doc) < 200:
                continue
            # Paragraphs are documents; skip code samples and option tables.
            for para in re.split(r"\n\s*\n", doc):
                lines = [ln.strip() for ln in para.split("\n")]
                if any(ln.startswith((">>>", "...", "$", "-", "*", ":")) for ln in lines):
                    continue
                text = " ".join(ln for ln in lines if ln)
                if len(text) >= 120 and sum(c.isalpha() for c in text) > 0.7 * len(text):
                    sents = split_sentences(text)
                    if sents:
                        yield sents


def _pydoc_topic_docs() -> Iterator[Document]:
    from pydoc_data.topics import topics

    for key in sorted(topics):
        for para in re.split(r"\n\s*\n", topics[key]):
            lines = [ln.strip() for ln in para.split("\n")]
            # Indented code blocks and grammar rules are not prose.
            if not lines or para.startswith("   ") or any("::=" in ln for ln in lines):
                continue
            text = " ".join(ln for ln in lines if ln and not set(ln) <= set("*=-~^"))
            if len(text) >= 80:
                sents = split_sentences(text)
                if sents:
                    yield sents


def iter_builtin_documents(name: str, max_files: int | None = None) -> Iterator[Document]:
    if name != "pydoc":
        raise CorpusError(f"data.*.builtin: unknown built-in corpus {name!r}; valid: ['pydoc']")
    yield from _pydoc_topic_docs()
    yield from _stdlib_docstring_docs(max_files)


# --------------------------------------------------------------------------------------------
# one entry point + a content fingerprint for caching
# --------------------------------------------------------------------------------------------
SOURCE_KINDS = ("files", "hf", "builtin")


def _kind(source: Mapping) -> str:
    kinds = [k for k in SOURCE_KINDS if source.get(k)]
    if len(kinds) != 1:
        raise CorpusError(
            f"a text source needs exactly one of {list(SOURCE_KINDS)}, got {dict(source)!r}"
        )
    return kinds[0]


def iter_documents(source: Mapping) -> Iterator[Document]:
    """Stream the documents of a source dict (see module docstring)."""
    kind = _kind(source)
    if kind == "files":
        yield from iter_file_documents(
            expand_files(source["files"]), source.get("text_field", "text"), bool(source.get("doc_per_line", False))
        )
    elif kind == "hf":
        yield from iter_hf_documents(
            source["hf"], source.get("hf_config"), source.get("split", "train"),
            source.get("text_field", "text"), bool(source.get("streaming", False)),
        )
    else:
        yield from iter_builtin_documents(source["builtin"], source.get("max_files"))


def fingerprint(source: Mapping) -> str:
    """A content hash of a source: file bytes for local files, identity for hub/builtin data."""
    h = hashlib.sha256()
    kind = _kind(source)
    h.update(json.dumps({k: source.get(k) for k in sorted(source)}, sort_keys=True, default=str).encode())
    if kind == "files":
        for path in expand_files(source["files"]):
            h.update(str(path.name).encode())
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
    elif kind == "builtin":
        h.update(sysconfig.get_python_version().encode())
    return h.hexdigest()[:16]
