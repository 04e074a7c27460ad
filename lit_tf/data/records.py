"""What a run trained and evaluated on, as records the tracker logs (MLflow dataset inputs).

Each DataModule lists its splits with `dataset_records()`: a name, the content digest its cache
is keyed by (`text.fingerprint`: file bytes for local files, identity for hub data), where the
data comes from, the split as context, and rows/tokens as its profile. Plain data: no tracker
imports here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lit_tf.data import text

CONTEXTS = ("train", "validation", "test")


@dataclass(frozen=True)
class DatasetRecord:
    name: str
    digest: str  # the content fingerprint the cache uses
    source_type: str  # "local" | "hugging_face" | "builtin"
    source: dict  # {"uri": ..., plus what identifies it: files, hf config and split}
    context: str  # one of CONTEXTS
    rows: int  # documents (pretraining), sentence pairs (parallel text) or examples (fine-tuning)
    tokens: int | None = None

    def __post_init__(self) -> None:
        if self.context not in CONTEXTS:
            raise ValueError(f"dataset context must be one of {CONTEXTS}, got {self.context!r}")


def describe_source(source: Mapping) -> tuple[str, dict]:
    """(source type, source dict) of a `text` source (files, an HF dataset or a builtin corpus)."""
    if source.get("files"):
        files = [str(p) for p in text.expand_files(source["files"])]
        uri = Path(files[0]).as_uri() if len(files) == 1 else Path(files[0]).parent.as_uri()
        return "local", {"uri": uri, "files": files}
    if source.get("hf"):
        return "hugging_face", {"uri": f"hf://datasets/{source['hf']}", "path": source["hf"],
                                "config_name": source.get("hf_config"), "split": source.get("split", "train")}
    return "builtin", {"uri": f"builtin:{source.get('builtin')}"}


def combined_digest(parts: Sequence[str]) -> str:
    """One digest for data made of several fingerprinted parts (e.g. the two sides of parallel text)."""
    return hashlib.sha256(json.dumps(list(parts)).encode()).hexdigest()[:16]


def shard_record(name: str, split_dir: str | Path, context: str, source: Mapping, digest: str | None = None
                 ) -> DatasetRecord:
    """The record of one built shard split (its meta.json gives documents and tokens); `digest`
    defaults to the source fingerprint the shards were keyed by."""
    split_dir = Path(split_dir)
    parts = [split_dir / "src", split_dir / "tgt"] if (split_dir / "src").is_dir() else [split_dir]
    metas = [json.loads((p / "meta.json").read_text()) for p in parts]
    source_type, where = describe_source(source)
    return DatasetRecord(
        name=name, digest=digest or str(metas[0].get("source_fingerprint") or text.fingerprint(source)),
        source_type=source_type, source=where, context=context, rows=int(metas[0].get("n_documents", 0)),
        tokens=sum(int(m.get("n_tokens", 0)) for m in metas),
    )
