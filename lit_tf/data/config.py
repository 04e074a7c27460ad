"""The `data` config group, typed: one dataclass per kind of data (conf/data/*.yaml).

- `PretrainDataConfig`: one corpus for masked or causal LM pretraining (files.yaml and the
  configs built on it: english, spanish, pydoc);
- `CrossLingualDataConfig`: per-language text and parallel pairs (xlm_*.yaml);
- `FineTuneDataConfig`: a labelled table or CoNLL files (classification.yaml and those built on it).

`lit_tf.lit.recipes` builds the one a run needs (`Cls.from_config(cfg.data)`, see
`lit_tf.objectives.config.Config`) before any data is read, and hands it to the DataModule.
`data.tokenizer` stays a mapping: `TokenizerSpec.from_config` types it when a tokenizer is trained.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from lit_tf.data.tokenizer import TokenizerSpec
from lit_tf.objectives.config import Config, ConfigError


@dataclass(frozen=True)
class DataConfig(Config):
    """What every kind of data takes: a name, the tokenizer, lengths and loaders."""

    group: ClassVar[str] = "data"

    name: str = "data"  # names cache folders and dataset records
    tokenizer: dict[str, Any] = field(default_factory=dict)  # TokenizerSpec keys, or `path` to an existing tokenizer.json
    max_seq_len: int = 128  # tokens per example including specials ([CLS]/[SEP])
    batch_size: int = 32  # per device (cross-lingual: per stream and step)
    val_batch_size: int | None = None  # null: batch_size
    num_workers: int = 0  # DataLoader workers (0 is fastest on small CPUs)
    pin_memory: bool = False  # DataLoader pin_memory

    def __post_init__(self) -> None:
        TokenizerSpec.check_keys(self.tokenizer)

    @property
    def eval_batch_size(self) -> int:
        return self.val_batch_size or self.batch_size

    @property
    def tokenizer_path(self) -> str | None:
        """`data.tokenizer.path`: an existing tokenizer.json (or its folder) instead of training one."""
        return self.tokenizer.get("path")

    def tokenizer_spec(self) -> TokenizerSpec:
        """How to train the tokenizer (`data.tokenizer` without `path`)."""
        return TokenizerSpec.from_config(self.tokenizer)


@dataclass(frozen=True)
class PretrainDataConfig(DataConfig):
    """One pretraining corpus (conf/data/files.yaml): set exactly one of train_files, hf_name, builtin."""

    name: str = "corpus"  # names its cache folders and dataset records
    train_files: list[str] | None = None  # files/globs: .txt (blank line between documents) or .jsonl
    val_files: list[str] | None = None  # same; null: hold out val_fraction of the training documents
    doc_per_line: bool = False  # .txt: every line is a document (else blank lines separate them)
    text_field: str = "text"  # jsonl field / HF dataset column with the text
    hf_name: str | None = None  # Hugging Face datasets name or local dataset dir
    hf_config: str | None = None  # the HF dataset's config name
    hf_train_split: str = "train"  # HF split read for training
    hf_val_split: str | None = None  # HF split for validation; null: hold out val_fraction
    hf_streaming: bool = False  # stream the HF dataset instead of downloading it whole
    builtin: str | None = None  # built-in corpus needing no download: pydoc
    builtin_max_files: int | None = None  # pydoc: cap on standard-library files read for docstrings
    val_fraction: float = 0.05  # share of documents held out when there are no val files
    max_docs: int | None = None  # use only the first N training documents (debug/smoke slices)
    max_val_docs: int | None = None  # same for val_files
    shard_workers: int | None = None  # corpus-encoding processes (null: LIT_TF_SHARD_WORKERS or the cores, up to 8)


@dataclass(frozen=True)
class MonoText(Config):
    """`data.mono.<lang>`: a language's monolingual text; a plain list of files is short for {files: [...]}."""

    files: list[str]  # .txt/.jsonl files or globs
    doc_per_line: bool = False  # .txt: every line is a document

    @classmethod
    def from_config(cls, cfg: Any, key: str) -> MonoText:
        return super().from_config({"files": cfg} if isinstance(cfg, (list, tuple)) else cfg, key)


@dataclass(frozen=True)
class ParallelText(Config):
    """`data.parallel.<l1-l2>`: line-aligned translations."""

    src: list[str]  # files/globs in l1
    tgt: list[str]  # the same lines in l2, file for file


@dataclass(frozen=True)
class RetrievalPair(Config):
    """`data.retrieval.<l1-l2>`: a parallel test set for val/retrieval_acc/<l1-l2>."""

    src: str  # file in l1
    tgt: str  # the same lines in l2


@dataclass(frozen=True)
class CrossLingualDataConfig(DataConfig):
    """Cross-lingual pretraining data (conf/data/xlm_*.yaml)."""

    name: str = "xlm"  # names its cache folders (<name>-<lang>, <name>-<l1-l2>) and dataset records
    languages: list[str] = field(default_factory=list)  # at least two; language ids follow this order
    mono: dict[str, MonoText] | None = None  # monolingual text per language (MLM/CLM streams)
    parallel: dict[str, ParallelText] | None = None  # translations per pair l1-l2 (TLM streams)
    retrieval: dict[str, RetrievalPair] | None = None  # retrieval test sets; their sentences leave the TLM data
    alpha: float = 0.7  # language sampling q_i ~ p_i^alpha (vocabulary, monolingual and parallel streams)
    val_fraction: float = 0.02  # held-out share of documents / pairs per stream
    max_docs: int | None = None  # use only the first N documents per language (debug slices)
    max_val_docs: int | None = None  # not read: validation is held out of each stream (debug=smoke sets it for all data)
    max_pairs: int | None = None  # use only the first N pairs per parallel stream
    shard_workers: int | None = None  # processes encoding monolingual text (null: LIT_TF_SHARD_WORKERS or the cores)
    tokenizer_chars: int = 20_000_000  # characters of alpha-sampled text to train the shared vocabulary
    text_field: str = "text"  # jsonl field with the text


@dataclass(frozen=True)
class ConllColumns(Config):
    """`data.conll`: where the token and its tag sit on a CoNLL line."""

    token_col: int = 0  # column of the token
    tag_col: int = -1  # column of the tag (negative: from the end)


@dataclass(frozen=True)
class FineTuneDataConfig(DataConfig):
    """Fine-tuning data (conf/data/classification.yaml): a labelled table or CoNLL files.

    `val` and `test` are one source, or {language: source} for per-language metrics."""

    train: str | None = None  # .tsv/.csv/.jsonl/CoNLL path (or the split name with hf_name)
    val: str | dict[str, str] | None = None  # a path, or {language: path}
    test: str | dict[str, str] | None = None  # likewise; evaluated with the best checkpoint after training
    train_lang: str = "en"  # language of the training data (XLM encoders need it)
    text_fields: list[str] = field(default_factory=lambda: ["text"])  # one field, or two for sentence pairs
    label_field: str = "label"  # the table's label column
    label_names: dict[str, str] | None = None  # {raw label: name} shown in metrics, plots, predictions, exports
    column_names: list[str] | None = None  # names for the columns of header-less files
    has_header: bool | None = None  # null: a header unless column_names are given
    format: str | None = None  # tsv | csv | jsonl (null: from the file extension)
    hf_name: str | None = None  # HF datasets name or local dataset dir; train/val/test are then split names
    hf_config: str | None = None  # the HF dataset's config name
    max_train_examples: int | None = None  # use only the first N training examples
    max_eval_examples: int | None = None  # likewise for val/test
    max_docs: int | None = None  # not read: debug=smoke sets it, max_train_examples interpolates it
    max_val_docs: int | None = None  # not read: likewise for max_eval_examples
    scheme: str = "IOB2"  # token classification tag scheme: IOB2 | IOB1 | IOBES
    conll: ConllColumns = field(default_factory=ConllColumns)  # CoNLL columns (token classification)
    group_by_length: bool = False  # training batches of similar lengths (shuffled); false: fully random batches
    pad_to_multiple_of: int | None = None  # pad each batch to its longest row, rounded up to this


def pretraining_data_config(data: Any, kind: str) -> PretrainDataConfig | CrossLingualDataConfig:
    """The typed `data` group of a pretraining objective reading `kind` batches ("crosslingual",
    or one corpus as "masked"/"causal"); a data config of the other kind is an error saying so."""
    crosslingual = kind == "crosslingual"
    cls = CrossLingualDataConfig if crosslingual else PretrainDataConfig
    if isinstance(data, cls):
        return data
    if isinstance(data, Config):  # typed for the other kind: check it as the mapping it came from
        data = data.to_dict()
    if isinstance(data, Mapping) and not crosslingual and data.get("languages"):
        raise ConfigError(f"data={data.get('name')!r} is a multilingual corpus: it needs objective=mlm_tlm "
                          "(or another xlm objective)")
    if isinstance(data, Mapping) and crosslingual and not {"languages", "mono"} & set(data):
        raise ConfigError(f"data={data.get('name')!r} is a single corpus: a cross-lingual objective needs "
                          "data with languages/mono/parallel, e.g. data=xlm_en_es")
    return cls.from_config(data)
