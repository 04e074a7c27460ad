"""Where a fine-tuning run starts: a lit_tf checkpoint, an MLflow run, a local HF model dir, or scratch.

`init_from` may be
- a path to a `.ckpt` written by `train.py` (its model config and tokenizer travel inside it);
- an MLflow run id (32 hex characters) in the run's tracking store (the local store, or the server
  `logger.mlflow.tracking_uri` names): its logged checkpoint is used and the new run is tagged with
  the parent so the MLflow UI shows the lineage;
- a local Hugging Face model directory (`config.json` + weights + `tokenizer.json`; an encoder family's
  architecture);
- null: train from scratch (the baseline) with the `model` config and a tokenizer trained on the
  fine-tuning text.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer
from torch import nn

from lit_tf.data.tokenizer import parse_tokenizer
from lit_tf.errors import CheckpointError, LitTfError
from lit_tf.lit.checkpoint import load_checkpoint
from lit_tf.models.families import FAMILIES, encoder_families
from lit_tf.models.hf import architecture_family

RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class InitSource:
    kind: str  # "checkpoint" | "mlflow_run" | "hf" | "scratch"
    family: str | None = None
    config: Any = None  # the encoder's config dataclass
    encoder: nn.Module | None = None  # backbone with pretrained weights (bert / xlm module)
    tokenizer: Tokenizer | None = None
    languages: list[str] | None = None
    parent_run_id: str | None = None
    hf_dir: Path | None = None
    hf_config: dict | None = None  # the HF dir's config.json, read once
    path: str | None = None
    model: nn.Module | None = None  # the whole model of a lit_tf checkpoint (a distillation teacher)
    meta: dict | None = None  # that checkpoint's metadata (task, labels, ...)


def _from_checkpoint(path: str | Path, kind: str = "checkpoint", parent: str | None = None,
                     key: str = "init_from") -> InitSource:
    loaded = load_checkpoint(path, key=key)
    family = loaded.meta["family"]
    if family not in encoder_families():
        raise CheckpointError(f"{key}={path}: a {family!r} checkpoint cannot initialise this run; {key} takes the "
                              f"checkpoint of an encoder ({', '.join(encoder_families())})")
    return InitSource(kind, family, loaded.model.cfg, FAMILIES[family].encoder_of(loaded.model), loaded.tokenizer,
                      list(loaded.meta.get("languages") or []), parent, path=str(path), model=loaded.model,
                      meta=loaded.meta)


def _from_mlflow_run(run_id: str, tracking_uri: str, where: str, key: str = "init_from") -> InitSource:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    try:
        client.get_run(run_id)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":  # e.g. the server went away: say that, not "no such run"
            raise LitTfError(f"{key}={run_id}: could not read the run from {where} ({e.message[:300]})") from e
        raise LitTfError(f"{key}={run_id}: no such MLflow run in {where}") from e
    ckpts = [f.path for f in client.list_artifacts(run_id, "checkpoints") if f.path.endswith(".ckpt")]
    if not ckpts:
        raise LitTfError(f"{key}={run_id}: that run logged no checkpoint artifact (logger.mlflow.log_checkpoint)")
    # loaded into memory, then the downloaded copy goes (a temp dir per fine-tuning run used to stay behind)
    with tempfile.TemporaryDirectory(prefix="lit_tf_init_") as tmp:
        init = _from_checkpoint(client.download_artifacts(run_id, ckpts[0], tmp), "mlflow_run", parent=run_id, key=key)
    init.path = f"runs:/{run_id}/{ckpts[0]}"
    return init


def resolve_init(init_from: str | None, tracking_uri: str, where: str | None = None, key: str = "init_from") -> InitSource:
    """Where fine-tuning starts; an MLflow run id is looked up at `tracking_uri` (`where`: how to
    name that store in errors, e.g. its folder or server URL; `key`: the setting, in errors)."""
    if not init_from:
        return InitSource("scratch")
    spec = str(init_from)
    path = Path(spec).expanduser()
    if path.is_file():
        return _from_checkpoint(path, key=key)
    if path.is_dir():
        hf_config = _check_hf_dir(path, spec, key)
        family = architecture_family(hf_config["architectures"][0])
        return InitSource("hf", family=family, hf_dir=path, hf_config=hf_config, path=str(path),
                          tokenizer=_hf_tokenizer(path, spec, key))
    if RUN_ID.match(spec):
        return _from_mlflow_run(spec, tracking_uri, where or tracking_uri, key)
    raise LitTfError(f"{key}={spec}: no such file or directory, and not an MLflow run id; expected a .ckpt "
                     "written by train.py, a Hugging Face model directory or a 32-hex MLflow run id")


def _check_hf_dir(path: Path, spec: str, key: str = "init_from") -> dict:
    """A local HF model dir we can fine-tune: config.json naming a supported encoder, weights,
    tokenizer.json. Returns the parsed config.json."""
    from lit_tf.models.hf import SUPPORTED_ARCHITECTURES

    config_file = path / "config.json"
    if not config_file.is_file():
        raise LitTfError(f"{key}={spec}: a directory needs config.json (a Hugging Face model dir)")
    try:
        hf_config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LitTfError(f"{key}={spec}: {config_file} is not valid JSON ({e})") from None
    if not isinstance(hf_config, dict):
        raise LitTfError(f"{key}={spec}: {config_file} must hold a JSON object")
    archs = hf_config.get("architectures") or []
    families = {architecture_family(a) for a in archs}
    if len(archs) != 1 or not families <= set(encoder_families()):
        what = f"architectures {archs}" if archs else "no 'architectures'"
        model_type = f" (model_type {hf_config['model_type']!r})" if hf_config.get("model_type") else ""
        supported = [a for a in SUPPORTED_ARCHITECTURES if architecture_family(a) in encoder_families()]
        raise LitTfError(f"{key}={spec}: {config_file} has {what}{model_type}; fine-tuning needs one "
                         f"encoder architecture: {', '.join(supported)}")
    weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    if not any((path / w).is_file() for w in weights):
        raise LitTfError(f"{key}={spec}: no weights in the directory (expected one of {list(weights)})")
    if not (path / "tokenizer.json").is_file():
        raise LitTfError(f"{key}={spec}: no tokenizer.json in the model directory (a fast-tokenizer file "
                         "is needed to tokenize the fine-tuning data)")
    return hf_config


def _hf_tokenizer(path: Path, spec: str, key: str = "init_from") -> Tokenizer:
    """The HF dir's tokenizer.json (its own padding/truncation off), read without loading the weights."""
    tj = path / "tokenizer.json"
    try:
        return parse_tokenizer(tj.read_text(encoding="utf-8"))
    except Exception as e:  # tokenizers raises a bare Exception for a malformed file
        raise LitTfError(f"{key}={spec}: {tj} is not a readable tokenizer.json ({e})") from None


def build_classifier(init: InitSource, task: str, num_labels: int, model_cfg: dict | None = None,
                     vocab_size: int | None = None, pad_id: int = 0) -> tuple[nn.Module, Tokenizer | None]:
    """A classification model for `task` with the pretrained encoder of `init` (or fresh)."""
    if init.kind == "hf":  # config and tokenizer were read by resolve_init: only the weights are left
        from lit_tf.models.hf import from_hf, read_state

        return from_hf(init.hf_config, read_state(init.hf_dir), task=task, num_labels=num_labels), init.tokenizer
    if init.kind == "scratch":
        cfg = dict(model_cfg or {})
        family = cfg.pop("family", "bert")
        spec = FAMILIES.get(family)
        if spec is None or task not in spec.heads:
            raise LitTfError(f"model.family={family!r}: fine-tuning ({task}) from scratch needs a family with a "
                             f"{task} head: {[n for n, s in FAMILIES.items() if task in s.heads]}")
        cfg.update(vocab_size=vocab_size, pad_id=pad_id)
        return spec.build(task, spec.make_config(cfg), num_labels=num_labels), None
    spec = FAMILIES[init.family]
    if task not in spec.heads:
        raise LitTfError(f"init_from={init.path}: the {init.family!r} family has no {task} head")
    model = spec.build(task, init.config, num_labels=num_labels)
    spec.encoder_of(model).load_state_dict(init.encoder.state_dict())
    return model, init.tokenizer


def check_max_seq_len(init: InitSource, max_seq_len: int) -> None:
    """`data.max_seq_len` must fit the position table of the encoder fine-tuning starts from."""
    if init.kind in ("checkpoint", "mlflow_run"):
        limit, source = init.config.max_seq_len, f"the checkpoint's model.max_seq_len={init.config.max_seq_len}"
    elif init.kind == "hf":
        limit = init.hf_config.get("max_position_embeddings")
        source = f"max_position_embeddings={limit} in {init.hf_dir / 'config.json'}"
    else:
        return  # scratch: checked against model.max_seq_len before the run starts
    if limit is not None and int(max_seq_len) > int(limit):
        raise LitTfError(f"data.max_seq_len={max_seq_len} exceeds {source} (init_from={init.path}): "
                         f"set data.max_seq_len<={limit}")
