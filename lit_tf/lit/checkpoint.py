"""Rebuild a trained model (and its tokenizer) from a lit_tf checkpoint, without the config tree.

Every checkpoint written by `lit_tf.lit.module.LitModule` carries `checkpoint["lit_tf"]`: the model
family and config, the objective config, the tokenizer (as JSON) and the languages.

Every load goes through `read_checkpoint`: `torch.load(weights_only=True)`, so a checkpoint can
only hold tensors, containers, numbers, strings and the classes in `SAFE_GLOBALS`, never code
that runs on load. Lightning's own loads (resume, test on the best checkpoint) get the same
treatment through `trainer.fit/test(weights_only=True)` inside `safe_loading()`.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import nn

from lit_tf.data.tokenizer import TokenizerArtifact, materialize_tokenizer, parse_tokenizer, same_tokenizer
from lit_tf.errors import CheckpointError
from lit_tf.models.families import FAMILIES

# Classes lit_tf checkpoints may hold beyond what torch's weights-only unpickler accepts anyway
# (tensors, dtypes, dicts, lists, tuples, str/int/float/bool/None). Found by loading real
# checkpoints (pretraining and fine-tuning smoke runs, resumed runs; lightning 2.6, torch 2.13):
# none is needed. If a callback or the metadata ever stores another class, allow it here by
# name; never turn weights-only loading off.
SAFE_GLOBALS: list = []

EXPECTED = "a .ckpt file written by train.py"


@contextmanager
def safe_loading() -> Iterator[None]:
    """Allow `SAFE_GLOBALS` for the weights-only loads inside (lit_tf's and Lightning's)."""
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        yield


def _describe_non_zip(path: Path) -> str:
    with path.open("rb") as f:
        head = f.read(4096)
    if not head:
        return "it is empty"
    if head.startswith(b"PK\x03\x04"):
        return "it is a truncated or corrupt zip archive (an interrupted write or copy?)"
    try:
        head.decode("utf-8")
        return "it is a text file"
    except UnicodeDecodeError:
        return "it is not a PyTorch checkpoint (torch.save writes a zip archive)"


def read_checkpoint(path: str | os.PathLike, key: str = "ckpt", *, map_location: str | torch.device = "cpu",
                    mmap: bool = False, require: Sequence[str] = ()) -> dict[str, Any]:
    """The checkpoint dict of a lit_tf checkpoint, loaded weights-only.

    `key` names the setting the path came from (`init_from`, `ckpt_path`, `ckpt`) for messages;
    `mmap=True` leaves tensor data on disk (a cheap check before heavy work); `require` lists
    top-level entries that must be present besides the lit_tf metadata (e.g. a resumable
    checkpoint's `state_dict` and `loops`). Anything else raises CheckpointError naming the file.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"{key}={path}: no such file; expected {EXPECTED}")
    if not path.is_file():
        raise CheckpointError(f"{key}={path}: not a file; expected {EXPECTED}")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{key}={path}: {_describe_non_zip(path)}; expected {EXPECTED}")
    try:
        with safe_loading():
            ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # UnpicklingError (a class outside the allow-list), RuntimeError (a damaged archive)
        detail = str(e)
        if "Unsupported global" in detail:  # torch names the class: "GLOBAL mod.Cls was not an allowed global"
            cls = detail.split("GLOBAL ", 1)[1].split()[0]
            reason = f"it holds a Python object of class {cls}, which lit_tf checkpoints never contain (not loaded)"
        else:
            reason = f"it cannot be read as a PyTorch checkpoint ({type(e).__name__}: {detail.splitlines()[0][:200]})"
        raise CheckpointError(f"{key}={path}: {reason}; expected {EXPECTED}") from e
    meta = ckpt.get("lit_tf") if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or "family" not in meta:
        raise CheckpointError(f"{key}={path}: a PyTorch file but not a lit_tf checkpoint (no 'lit_tf' model "
                              f"metadata); expected {EXPECTED}")
    missing = [k for k in require if k not in ckpt]
    if missing:
        raise CheckpointError(f"{key}={path}: a lit_tf checkpoint without {missing}: it cannot be resumed; "
                              f"expected {EXPECTED} (e.g. checkpoints/last.ckpt)")
    return ckpt


@dataclass
class LoadedCheckpoint:
    model: nn.Module
    tokenizer: Tokenizer
    meta: dict[str, Any]
    global_step: int


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    key: str = "ckpt") -> LoadedCheckpoint:
    """Model (eval mode), tokenizer and metadata of a lit_tf checkpoint; `key` names the setting in errors."""
    path = Path(path)
    ckpt = read_checkpoint(path, key, map_location=map_location, require=("state_dict",))
    meta = ckpt["lit_tf"]
    family = meta["family"]
    if family not in FAMILIES:
        raise CheckpointError(f"{key}={path}: model family {family!r} is not one of {sorted(FAMILIES)}")
    spec = FAMILIES[family]
    cfg = spec.make_config(meta["model_config"])
    task = meta.get("task")
    if task in spec.heads:  # a fine-tuned model
        model = spec.build(task, cfg, num_labels=len(meta["labels"]))
    else:  # a pretraining run: the objective it trained decides the model (e.g. BERT with or without NSP)
        model = spec.pretraining_model(cfg, meta["objective"])
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("decoder.weight")]  # tied to the embeddings
    if missing or unexpected:
        raise CheckpointError(f"{key}={path}: weights do not fit the model (missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]})")
    model.eval()
    return LoadedCheckpoint(model, parse_tokenizer(meta["tokenizer_json"]), meta, int(ckpt.get("global_step", 0)))


def checkpoint_tokenizer_json(path: str | os.PathLike) -> str:
    """The tokenizer.json text stored in a lit_tf checkpoint (without building the model)."""
    path = Path(path)
    ckpt = read_checkpoint(path, "ckpt_path", mmap=True)
    text = (ckpt.get("lit_tf") or {}).get("tokenizer_json")
    if not text:
        raise ValueError(f"ckpt_path={path}: not a lit_tf checkpoint (no tokenizer stored in it); was it written by train.py?")
    return text


def check_tokenizer_path(given_path: str | None, stored_json: str, where: str, hint: str) -> None:
    """`data.tokenizer.path` next to a model that brings its own tokenizer (a checkpoint to resume or
    to fine-tune, an HF dir): the same tokenizer (by content) is fine, another one is an error,
    since the model's embeddings only fit the vocabulary it was trained with."""
    if not given_path:
        return
    given = TokenizerArtifact.load(given_path)
    if not same_tokenizer(given.json_text, stored_json):
        raise CheckpointError(
            f"data.tokenizer.path={given_path} is not the tokenizer stored in {where} "
            f"(content digest {given.digest[:16]}, vocabulary {given.vocab_size})", hint=hint)


def resume_tokenizer(
    ckpt_path: str | os.PathLike, cache_dir: str | os.PathLike, given_path: str | None = None
) -> TokenizerArtifact:
    """The tokenizer a run resumed from `ckpt_path` must use: the one stored in the checkpoint,
    written to `cache_dir` under its content digest (never retrained, never looked up by settings).

    `given_path` (`data.tokenizer.path`) may name the same tokenizer; a different one is an error.
    """
    stored = checkpoint_tokenizer_json(ckpt_path)
    check_tokenizer_path(given_path, stored, f"the checkpoint {ckpt_path}",
                         "a resumed run keeps its tokenizer: drop data.tokenizer.path, or start a new run")
    return materialize_tokenizer(stored, cache_dir)
