"""The `data` config group, typed: one dataclass per kind of data (conf/data/*.yaml).

- `PretrainDataConfig`: one corpus for masked or causal LM pretraining (files.yaml and the
  configs built on it: english, spanish, pydoc);
- `CrossLingualDataConfig`: per-language text and parallel pairs (xlm_*.yaml);
- `TranslationDataConfig`: parallel text for an encoder-decoder translator (wmt_*.yaml);
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
class TranslationDataConfig(DataConfig):
    """Parallel text for translation src_lang -> tgt_lang (conf/data/wmt_*.yaml).

    `parallel` and `retrieval` take the cross-lingual config's form, so a translation run can read
    the very files an XLM pretraining read: with the same files, val_fraction and max_pairs its
    validation pairs are the pairs the XLM held out (lit_tf.data.crosslingual.build_or_load_parallel)."""

    name: str = "mt"  # names its cache folders (<name>-<l1-l2>) and dataset records
    languages: list[str] = field(default_factory=list)  # language-id order, [src, tgt] at least (XLM warm start: its own)
    src_lang: str = ""  # translate from this language ...
    tgt_lang: str = ""  # ... into this one
    parallel: dict[str, ParallelText] | None = None  # line-aligned pairs l1-l2: "src-tgt", or "tgt-src" read swapped
    retrieval: dict[str, RetrievalPair] | None = None  # held-out test sets: pairs with one of their sentences are dropped
    val_fraction: float = 0.02  # held-out share of the pairs (the split is by pair index, as XLM's)
    max_pairs: int | None = None  # use only the first N pairs (after dropping retrieval sentences)
    max_val_pairs: int | None = None  # validation (loss and BLEU) reads only the first N held-out pairs
    max_docs: int | None = None  # not read: debug=smoke sets it, max_pairs interpolates it
    max_val_docs: int | None = None  # not read: likewise for max_val_pairs
    tokenizer_chars: int = 20_000_000  # characters of training text (both sides) to train the shared vocabulary

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.src_lang or not self.tgt_lang or self.src_lang == self.tgt_lang:
            raise ValueError(f"data.src_lang={self.src_lang!r} and data.tgt_lang={self.tgt_lang!r}: "
                             "give two different languages")
        for key in ("src_lang", "tgt_lang"):
            if getattr(self, key) not in self.languages:
                raise ValueError(f"data.{key}={getattr(self, key)!r} is not in data.languages={list(self.languages)}")
        if self.max_seq_len < 3:
            raise ValueError(f"data.max_seq_len={self.max_seq_len}: needs room for [CLS], a token and [SEP]")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"data.val_fraction={self.val_fraction}: must be in (0, 1) (validation pairs are held out)")
        self.direction()  # the pair exists

    def direction(self) -> tuple[str, bool]:
        """(the `parallel` pair read, whether its sides are swapped): "src-tgt" as is, else "tgt-src" swapped."""
        pairs = dict(self.parallel or {})
        forward, backward = f"{self.src_lang}-{self.tgt_lang}", f"{self.tgt_lang}-{self.src_lang}"
        if forward in pairs:
            return forward, False
        if backward in pairs:
            return backward, True
        raise ValueError(f"data.parallel has no pair for data.src_lang={self.src_lang!r} -> data.tgt_lang="
                         f"{self.tgt_lang!r}: name one {forward!r} (or {backward!r}); it has {sorted(pairs) or 'none'}")


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


def _is_translation(data: Mapping) -> bool:
    return bool({"src_lang", "tgt_lang"} & set(data))


def pretraining_data_config(data: Any, kind: str
                            ) -> PretrainDataConfig | CrossLingualDataConfig | TranslationDataConfig:
    """The typed `data` group of a pretraining objective reading `kind` batches ("crosslingual",
    "parallel" for translation, or one corpus as "masked"/"causal"); a data config of another kind
    is an error saying so."""
    cls = {"crosslingual": CrossLingualDataConfig, "parallel": TranslationDataConfig}.get(kind, PretrainDataConfig)
    if isinstance(data, cls):
        return data
    if isinstance(data, Config):  # typed for the other kind: check it as the mapping it came from
        data = data.to_dict()
    if isinstance(data, Mapping):
        name = data.get("name")
        if kind == "parallel" and not _is_translation(data):
            raise ConfigError(f"data={name!r} is not translation data: objective=translation needs data with "
                              "src_lang/tgt_lang/parallel, e.g. data=wmt_en_es")
        if kind != "parallel" and _is_translation(data):
            raise ConfigError(f"data={name!r} is parallel text for translation (src_lang -> tgt_lang): it needs "
                              "objective=translation")
        if kind not in ("crosslingual", "parallel") and data.get("languages"):
            raise ConfigError(f"data={name!r} is a multilingual corpus: it needs objective=mlm_tlm "
                              "(or another xlm objective)")
        if kind == "crosslingual" and not {"languages", "mono"} & set(data):
            raise ConfigError(f"data={name!r} is a single corpus: a cross-lingual objective needs "
                              "data with languages/mono/parallel, e.g. data=xlm_en_es")
    return cls.from_config(data)
