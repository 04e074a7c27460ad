"""The fine-tuning DataModule: labelled files (or an HF dataset) -> encoded examples -> loaders.

Sequence classification reads tables (`.tsv`/`.csv`/`.jsonl`) with one or two text fields and a
label field; token classification reads CoNLL files. The label set is fixed from the training
split (an unseen label in val/test is an error naming the file and line). `val` and `test` may be
one file or `{language: file}` for zero-shot cross-lingual evaluation: each language becomes its
own loader and its own metrics (`test/<lang>/acc`, `test/<lang>/f1`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from tokenizers import Tokenizer
from torch.utils.data import DataLoader

from lit_tf.data import text
from lit_tf.data.config import FineTuneDataConfig
from lit_tf.data.finetune import LabelSet, TaskData
from lit_tf.data.pretraining import _split_key
from lit_tf.data.records import DatasetRecord, describe_source
from lit_tf.data.sampling import StreamBatchSampler, StreamDataModule


class _Examples:
    def __init__(self, examples: list[dict]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, key) -> dict:
        return self.examples[_split_key(key)[0]]


def _streams(spec: Any, default_lang: str) -> dict[str, Any]:
    """`path` -> {"": path}; `{lang: path}` -> itself; None -> {}."""
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        return dict(spec)
    return {"": spec}


class FineTuneDataModule(StreamDataModule):
    """Args:
    data: the `data` config group (`FineTuneDataConfig`: train/val/test, fields, max_seq_len,
        batch_size, ...); a plain mapping is typed with its `from_config`.
    task: the data half of the fine-tuning task (`lit_tf.data.finetune.TaskData`; `lit_tf.lit.tasks` names them).
    tokenizer: the tokenizer of the encoder being fine-tuned.
    lang_ids: language -> id for XLM encoders (adds `lang_ids` to batches), else None.
    """

    def __init__(self, data: FineTuneDataConfig | Mapping, task: TaskData, tokenizer: Tokenizer | None, *,
                 lang_ids: Mapping[str, int] | None = None, seed: int = 0, accumulate_grad_batches: int = 1,
                 max_steps: int = -1) -> None:
        super().__init__()
        self.cfg, self.task, self.tok = FineTuneDataConfig.from_config(data), task, tokenizer
        self.lang_ids = dict(lang_ids) if lang_ids else None
        self.seed, self.accumulate, self.max_steps = int(seed), int(accumulate_grad_batches), int(max_steps)
        self.train_lang = self.cfg.train_lang
        self.labels: LabelSet | None = None
        self.sets: dict[str, dict[str, _Examples]] = {}
        self.first_rows: list = []
        self._train_rows: list | None = None

    # ------------------------------------------------------------------ reading
    def read(self, split: str, source: Any) -> list:
        """The rows of one split as the task reads them (limited by `data.max_*_examples`; labels
        renamed by `data.label_names` when the task has named labels)."""
        c = self.cfg
        limit = c.max_train_examples if split == "train" else c.max_eval_examples
        rows = self.task.read(c, source)
        rows = rows[:limit] if limit else rows
        names = c.label_names
        if names and self.task.named_labels:
            names = {str(k): str(v) for k, v in names.items()}
            first = next((r for r in rows if r["label"] not in names), None)
            if first is not None and split == "train":  # the classes: every one needs a name
                raise ValueError(f"{first.get('where', source)}: label {first['label']!r} has no name in "
                                 f"data.label_names (it names {sorted(names)}): name every class")
            # val/test: a label training never saw stays as it is, to fail as unseen when encoded
            rows = [dict(r, label=names.get(r["label"], r["label"])) for r in rows]
        return rows

    def train_rows(self) -> list:
        """The training split's rows, read once (a scratch tokenizer is trained on them before setup)."""
        if self._train_rows is None:
            train_src = self.cfg.train
            if not train_src:
                raise ValueError("data.train: give the training file (or HF split name with data.hf_name)")
            self._train_rows = self.read("train", train_src)
            if not self._train_rows:
                raise ValueError(f"data.train={train_src}: no examples")
        return self._train_rows

    def tokenizer_texts(self) -> list[str]:
        """The training text a scratch tokenizer learns its vocabulary from."""
        return self.task.texts(self.train_rows(), self.cfg)

    def _encode(self, rows: list, source: str) -> list[dict]:
        return self.task.encode(self.tok, rows, self.cfg, self.labels, self.cfg.max_seq_len, source)

    def setup(self, stage: str | None = None) -> None:
        if self.sets:
            return
        if self.tok is None:
            raise ValueError("FineTuneDataModule.setup needs the tokenizer (train one on tokenizer_texts() first)")
        train_src = self.cfg.train
        train_rows = self.train_rows()
        self.labels = LabelSet.from_labels(self.task.labels(train_rows))
        self.first_rows = train_rows[:8]  # for example inputs (e.g. of the logged model)
        self.sets["train"] = {self.train_lang: _Examples(self._encode(train_rows, str(train_src)))}
        for split in ("val", "test"):
            self.sets[split] = {
                lang: _Examples(self._encode(self.read(split, src), str(src)))
                for lang, src in _streams(getattr(self.cfg, split), self.train_lang).items()
            }
        if not self.sets["val"]:
            raise ValueError("data.val: give a validation file (or {language: file})")

    def example_texts(self, n: int = 2) -> list[str]:
        """The first `n` training inputs as lines `lit_tf.cli.predict` (and the pyfunc model) take:
        sentence pairs joined by " ||| ", a CoNLL sentence as its words."""
        return [self.task.line(r, self.cfg) for r in self.first_rows[:n]]

    def _source(self, source: Any) -> dict:
        c = self.cfg
        if self.task.hf_tables and c.hf_name:
            return {"hf": c.hf_name, "hf_config": c.hf_config, "split": str(source)}
        return {"files": [str(source)]}

    def dataset_records(self) -> list[DatasetRecord]:
        """Every split (and language) as read: examples and their tokens after truncation."""
        name = self.cfg.name
        contexts = {"train": "train", "val": "validation", "test": "test"}
        out, digests = [], {}  # val and test are often one file: hash it once
        for split, streams in self.sets.items():
            specs = {self.train_lang: self.cfg.train} if split == "train" else _streams(getattr(self.cfg, split), "")
            for lang, examples in streams.items():
                src = self._source(specs[lang])
                source_type, where = describe_source(src)
                if repr(src) not in digests:
                    digests[repr(src)] = text.fingerprint(src)
                out.append(DatasetRecord(
                    name=f"{name}-{split}" + (f"-{lang}" if lang and split != "train" else ""),
                    digest=digests[repr(src)], source_type=source_type, source=where, context=contexts[split],
                    rows=len(examples), tokens=sum(len(e["input_ids"]) for e in examples.examples)))
        return out

    @property
    def val_streams(self) -> tuple[str, ...]:
        return tuple(self.sets["val"])

    @property
    def test_streams(self) -> tuple[str, ...]:
        return tuple(self.sets["test"])

    # ------------------------------------------------------------------ loaders
    def _collate(self, lang: str):
        pad = self.tok.token_to_id("[PAD]") or 0
        base = self.task.collate
        lang_id = None if self.lang_ids is None else self.lang_ids.get(lang or self.train_lang)
        if self.lang_ids is not None and lang_id is None:
            raise ValueError(f"language {lang!r} is not one the encoder was pretrained on: {sorted(self.lang_ids)}")

        multiple = self.cfg.pad_to_multiple_of

        def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
            batch = base(examples, pad, multiple)
            if lang_id is not None:
                batch["lang_ids"] = torch.full_like(batch["input_ids"], lang_id)
            return batch

        return collate

    def train_dataloader(self):
        rank, world = self.rank_world()
        ds = self.sets["train"][self.train_lang]
        sampler = StreamBatchSampler(len(ds), self.cfg.batch_size, num_batches=self.train_batches(),
                                     seed=self.seed, rank=rank, world_size=world, lengths=self._lengths(ds))
        return self.resumable_loader(ds, sampler, self._collate(self.train_lang))

    def _lengths(self, ds: _Examples) -> list[int] | None:
        """Example lengths when `data.group_by_length` (training batches grouped, eval passes sorted)."""
        return [len(e["input_ids"]) for e in ds.examples] if self.cfg.group_by_length else None

    def _eval_loaders(self, split: str) -> list[DataLoader]:
        rank, world = self.rank_world()
        bs = self.cfg.eval_batch_size
        return [DataLoader(ds, batch_sampler=StreamBatchSampler(len(ds), bs, shuffle=False, rank=rank, world_size=world,
                                                                lengths=self._lengths(ds)),
                           **self.loader_kwargs(self._collate(lang)))
                for lang, ds in self.sets[split].items()]

    def val_dataloader(self):
        return self._eval_loaders("val")

    def test_dataloader(self):
        return self._eval_loaders("test")
