"""Rebuild a trained model (and its tokenizer) from a lit_tf checkpoint, without the config tree.

Every checkpoint written by `lit_tf.lit.module.LitModule` carries `checkpoint["lit_tf"]`: the model
family and config, the objective config, the tokenizer (as JSON) and the languages.
Checkpoints are pickles: load only files you trust.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import nn

from lit_tf.lit.build import FAMILIES, HEADS


@dataclass
class LoadedCheckpoint:
    model: nn.Module
    tokenizer: Tokenizer
    meta: dict[str, Any]
    global_step: int


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> LoadedCheckpoint:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt={path}: no such checkpoint file")
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    meta = ckpt.get("lit_tf")
    if not meta or "family" not in meta:
        raise ValueError(f"{path}: not a lit_tf checkpoint (no model metadata); was it written by train.py?")
    family = meta["family"]
    if family not in FAMILIES:
        raise ValueError(f"{path}: model family {family!r} is not one of {sorted(FAMILIES)}")
    config_cls, model_cls, _ = FAMILIES[family]
    cfg = config_cls.from_dict(meta["model_config"])
    task = meta.get("task")
    if task in ("seq_cls", "token_cls"):  # a fine-tuned classifier
        model = HEADS[(family, task)][0](cfg, len(meta["labels"]))
    elif family == "bert":
        model = model_cls(cfg, nsp=bool(meta["objective"].get("nsp", False)))
    else:
        model = model_cls(cfg)
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("decoder.weight")]  # tied to the embeddings
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit the model (missing {missing[:5]}, unexpected {unexpected[:5]})")
    model.eval()
    return LoadedCheckpoint(model, Tokenizer.from_str(meta["tokenizer_json"]), meta, int(ckpt.get("global_step", 0)))
