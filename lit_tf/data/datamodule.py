"""The pretraining DataModule: corpus config -> tokenizer artifact -> token shards -> loaders.

`prepare()` does all heavy, cached work (tokenizer training, sharding) and is called by the
CLI before the model is built, because the model's `vocab_size` comes from the tokenizer
artifact. Loaders only read shards.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L

from lit_tf.data import text
from lit_tf.data.config import (
    CrossLingualDataConfig,
    PretrainDataConfig,
    TranslationDataConfig,
    pretraining_data_config,
)
from lit_tf.data.pretraining import CLMCollator, MLMCollator, PackedBlockDataset, SentencePairDataset
from lit_tf.data.records import DatasetRecord, shard_record
from lit_tf.data.sampling import ResumableLoader, StreamBatchSampler, StreamDataModule
from lit_tf.data.shards import TokenShard, build_or_load_shards
from lit_tf.data.tokenizer import (
    CLS,
    MASK,
    PAD,
    SEP,
    TokenizerArtifact,
    get_or_train_tokenizer,
)
from lit_tf.objectives.config import ObjectiveConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CorpusSources:
    """Where train/val text comes from, resolved from the `data` config group."""

    train: dict
    val: dict | None  # None: hold out `val_fraction` of the training documents

    @classmethod
    def from_config(cls, cfg: PretrainDataConfig | Mapping) -> CorpusSources:
        cfg = PretrainDataConfig.from_config(cfg)
        kinds = {"train_files": bool(cfg.train_files), "hf_name": bool(cfg.hf_name), "builtin": bool(cfg.builtin)}
        chosen = [k for k, v in kinds.items() if v]
        if len(chosen) != 1:
            raise ValueError(
                f"data: set exactly one of data.train_files, data.hf_name, data.builtin (got {chosen or 'none'})"
            )
        # These dicts are hashed into the tokenizer and shard cache keys: keep their content as it is.
        field = cfg.text_field
        if chosen == ["train_files"]:
            per_line = bool(cfg.doc_per_line)
            train = {"files": list(cfg.train_files), "text_field": field, "doc_per_line": per_line}
            val = ({"files": list(cfg.val_files), "text_field": field, "doc_per_line": per_line}
                   if cfg.val_files else None)
        elif chosen == ["hf_name"]:
            hf = {"hf": cfg.hf_name, "hf_config": cfg.hf_config, "text_field": field, "streaming": bool(cfg.hf_streaming)}
            train = dict(hf, split=cfg.hf_train_split)
            val = dict(hf, split=cfg.hf_val_split) if cfg.hf_val_split else None
        else:
            train = {"builtin": cfg.builtin, "max_files": cfg.builtin_max_files}
            val = None
        if val is None and not cfg.val_fraction:
            raise ValueError("data: no validation text: set data.val_files (or data.hf_val_split) or data.val_fraction > 0")
        return cls(train, val)


class PretrainDataModule(StreamDataModule):
    """Serves masked-LM (and NSP) batches from cached shards.

    Args:
        data: the `data` config group (sources, tokenizer, max_seq_len, batch_size, ...); a plain
            mapping is typed with `PretrainDataConfig.from_config`.
        objective: the `objective` config group (nsp, masking); a mapping is typed likewise.
        cache_dir: where tokenizer artifacts and shards live (keyed by content hash).
        seed: base seed for example construction, shuffling and masking.
        accumulate_grad_batches: to translate trainer steps into consumed batches on resume.
        max_steps: length of the training stream (-1: one pass over the data per epoch).
        tokenizer: use this tokenizer (e.g. the one stored in a checkpoint being resumed) instead
            of `data.tokenizer`: nothing is trained or looked up by settings.
        causal: serve causal-LM blocks (labels = the inputs) instead of masked-LM batches.
    """

    def __init__(
        self, data: PretrainDataConfig | Mapping, objective: ObjectiveConfig | Mapping, *, cache_dir: str,
        seed: int = 0, accumulate_grad_batches: int = 1, max_steps: int = -1,
        tokenizer: TokenizerArtifact | None = None, causal: bool = False,
    ) -> None:
        super().__init__()
        self.cfg = PretrainDataConfig.from_config(data)
        self.obj = ObjectiveConfig.from_config(objective)
        self._causal = bool(causal)
        self.cache_dir, self.seed = Path(cache_dir), int(seed)
        self.accumulate, self.max_steps = int(accumulate_grad_batches), int(max_steps)
        self.sources = CorpusSources.from_config(self.cfg)
        self.tokenizer: TokenizerArtifact | None = None
        self.given_tokenizer = tokenizer
        self.shard_dirs: dict[str, Path] = {}
        self.train_set = self.val_set = None

    # ------------------------------------------------------------------ heavy, cached work
    def prepare(self) -> TokenizerArtifact:
        """Train/load the tokenizer and build/load shards. Safe to call repeatedly.

        In a distributed run, global rank 0 trains and builds; the other ranks wait for its
        folders in the cache (`lit_tf.data.atomic.build_once`)."""
        if self.tokenizer is not None:
            return self.tokenizer
        max_docs = self.cfg.max_docs
        train_fp = text.fingerprint(self.sources.train)

        def train_docs():
            return text.iter_documents(self.sources.train)

        if self.given_tokenizer is not None:
            self.tokenizer = self.given_tokenizer
        elif self.cfg.tokenizer_path:
            self.tokenizer = TokenizerArtifact.load(self.cfg.tokenizer_path)
        else:
            spec = self.cfg.tokenizer_spec()
            self.tokenizer = get_or_train_tokenizer(spec, train_docs, train_fp, self.cache_dir / "tokenizers")
        shard_root = self.cache_dir / "shards"
        name, workers = str(self.cfg.name), self.cfg.shard_workers
        if self.sources.val is None:
            root = build_or_load_shards(
                name, train_fp, train_docs, self.tokenizer, shard_root,
                val_fraction=float(self.cfg.val_fraction), max_docs=max_docs, workers=workers,
            )
            self.shard_dirs = {"train": root / "train", "val": root / "val"}
        else:
            val_src = self.sources.val
            root = build_or_load_shards(name, train_fp, train_docs, self.tokenizer, shard_root, max_docs=max_docs,
                                        workers=workers)
            vroot = build_or_load_shards(
                f"{name}-val", text.fingerprint(val_src), lambda: text.iter_documents(val_src), self.tokenizer,
                shard_root, max_docs=self.cfg.max_val_docs, workers=workers,
            )
            self.shard_dirs = {"train": root / "train", "val": vroot / "train"}
        return self.tokenizer

    def prepare_data(self) -> None:
        self.prepare()

    def dataset_records(self) -> list[DatasetRecord]:
        """The training and validation text, as built (see lit_tf.data.records)."""
        if not self.shard_dirs:
            return []
        name = str(self.cfg.name)
        train = shard_record(name, self.shard_dirs["train"], "train", self.sources.train)
        if self.sources.val is None:  # held out from the same text: same digest, its own name and counts
            val = shard_record(f"{name}-heldout", self.shard_dirs["val"], "validation", self.sources.train)
        else:
            val = shard_record(f"{name}-val", self.shard_dirs["val"], "validation", self.sources.val)
        return [train, val]

    # ------------------------------------------------------------------ datasets and loaders
    @property
    def nsp(self) -> bool:
        return self.obj.nsp

    @property
    def causal(self) -> bool:
        return self._causal

    def _dataset(self, shard: TokenShard, seed: int):
        tok = self.tokenizer
        assert tok is not None
        max_len = self.cfg.max_seq_len
        cls_id, sep_id = tok.special_id(CLS), tok.special_id(SEP)
        if self.nsp:
            return SentencePairDataset(
                shard, max_len, cls_id, sep_id, seed=seed, short_seq_prob=float(self.obj.short_seq_prob),
            )
        if self.causal:  # GPT: raw token blocks, [SEP] marks the end of each document
            return PackedBlockDataset(shard, max_len, doc_sep_id=sep_id)
        return PackedBlockDataset(shard, max_len, doc_sep_id=sep_id, bos_id=cls_id, eos_id=sep_id)

    def setup(self, stage: str | None = None) -> None:
        self.prepare()
        if self.train_set is None:
            self.train_set = self._dataset(TokenShard.open(self.shard_dirs["train"]), self.seed)
            self.val_set = self._dataset(TokenShard.open(self.shard_dirs["val"]), self.seed + 1)
            log.info("data: %d train / %d val examples", len(self.train_set), len(self.val_set))

    def collator(self) -> MLMCollator | CLMCollator:
        tok = self.tokenizer
        assert tok is not None
        if self.causal:
            return CLMCollator(pad_id=tok.special_id(PAD))
        return MLMCollator(
            pad_id=tok.special_id(PAD), mask_id=tok.special_id(MASK), vocab_size=tok.vocab_size,
            n_special=len(tok.meta["special_ids"]), **asdict(self.obj.masking),
        )

    def train_dataloader(self) -> ResumableLoader:
        rank, world = self.rank_world()
        sampler = StreamBatchSampler(
            len(self.train_set), self.cfg.batch_size, num_batches=self.train_batches(), seed=self.seed,
            shuffle=True, rank=rank, world_size=world,
        )
        return self.resumable_loader(self.train_set, sampler, self.collator())

    def val_dataloader(self):
        from torch.utils.data import DataLoader

        rank, world = self.rank_world()
        sampler = StreamBatchSampler(
            len(self.val_set), self.cfg.eval_batch_size, seed=self.seed + 1,
            shuffle=False, rank=rank, world_size=world,
        )
        return DataLoader(self.val_set, batch_sampler=sampler, **self.loader_kwargs(self.collator()))


def build_datamodule(data: PretrainDataConfig | CrossLingualDataConfig | TranslationDataConfig | Mapping,
                     objective: ObjectiveConfig | Mapping, kind: str = "masked", **kwargs: Any) -> L.LightningDataModule:
    """The DataModule an objective reads (`kind`, named by its entry in lit_tf.lit.build.OBJECTIVES):
    "crosslingual" streams, "parallel" translation pairs, or one corpus served as "masked" or
    "causal" LM batches."""
    if kind not in ("masked", "causal", "crosslingual", "parallel"):
        raise ValueError(f"unknown pretraining data kind {kind!r}: expected masked, causal, crosslingual or parallel")
    data = pretraining_data_config(data, kind)
    if isinstance(data, TranslationDataConfig):
        from lit_tf.data.translation import TranslationDataModule

        return TranslationDataModule(data, objective, **kwargs)
    if isinstance(data, CrossLingualDataConfig):
        from lit_tf.data.crosslingual import CrossLingualDataModule

        return CrossLingualDataModule(data, objective, **kwargs)
    kwargs["causal"] = kind == "causal"
    return PretrainDataModule(data, objective, **kwargs)
