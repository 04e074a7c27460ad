"""State-dict maps between lit_tf models and HF ``transformers`` checkpoints.

This package is the only place that knows HF parameter names. Each family's module (``bert``,
``gpt``, ``xlm``, ...) holds its key rules, config maps and architecture table as an ``HFMapping``,
which the family's spec (``lit_tf.models.families.FAMILIES``) names, and its docstring lists what
maps exactly and what export refuses; ``core`` maps any family through its spec. ``transformers``,
``safetensors`` and ``tokenizers`` are imported inside the functions that need them, so
``import lit_tf.models`` (and even ``import lit_tf.models.hf``) never loads them.

Export writes the architecture the family's mapping names for the model's task (``export``) and
refuses what HF cannot represent (``NotImplementedError``). Import builds the lit_tf model for
``task`` from any supported architecture of the same family: the encoder is always loaded; a head
is loaded when the checkpoint carries one with the same meaning (pooler, MLM transform, NSP, a
classifier of the same kind); other heads keep our init policy. Weight tying follows HF
``save_pretrained``: tied copies (the MLM decoder / LM head) are not written on export and are
ignored on import (our heads are always tied to the embeddings). Every mapped tensor is
shape-checked. Exporting a bare ``BertModel`` writes no pooler (ours has none), so HF initialises
``pooler.dense`` at load time and reports it missing; ``last_hidden_state`` is exact.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from lit_tf.models.hf.core import (
    SPECIAL_TOKEN_ROLES,
    architectures,
    config_to_hf,
    from_hf,
    to_hf,
)

if TYPE_CHECKING:
    import tokenizers

__all__ = ["SUPPORTED_ARCHITECTURES", "architecture_family", "config_to_hf", "export_hf", "from_hf", "import_hf",
           "read_state", "to_hf"]



def __getattr__(name: str):
    # SUPPORTED_ARCHITECTURES is read from the family table on first use: the table imports this
    # package's per-family modules, so it cannot be read while this package is being imported
    if name == "SUPPORTED_ARCHITECTURES":
        return tuple(architectures())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def architecture_family(arch: str) -> str | None:
    """The lit_tf family ("bert", "gpt", "xlm", ...) of a supported HF architecture name, else None."""
    known = architectures()
    return known[arch][0].name if arch in known else None


# ----------------------------------------------------------------------------- directories


def _tokenizer_config(tokenizer: tokenizers.Tokenizer, max_len: int) -> dict[str, Any]:
    """A minimal tokenizer_config.json that ``AutoTokenizer`` / ``PreTrainedTokenizerFast`` accept."""
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_len,
        "clean_up_tokenization_spaces": False,
    }
    for role, token in SPECIAL_TOKEN_ROLES.items():
        if tokenizer.token_to_id(token) is not None:
            config[role] = token
    return config


def export_hf(
    model: nn.Module,
    tokenizer_json: str | Path,
    out_dir: str | Path,
    *,
    labels: Sequence[str] | None = None,
) -> Path:
    """Write an HF model directory: ``config.json`` (with ``architectures``; ``id2label`` from
    ``labels`` for classifiers), ``model.safetensors``, ``tokenizer.json`` (a copy of the file at
    ``tokenizer_json``) and ``tokenizer_config.json``. Loadable with ``<Arch>.from_pretrained(out_dir)``
    and ``AutoTokenizer.from_pretrained(out_dir)``. Returns ``out_dir``."""
    import tokenizers
    from safetensors.torch import save_file

    tokenizer_path = Path(tokenizer_json)
    if not tokenizer_path.is_file():
        raise FileNotFoundError(f"tokenizer file not found: {tokenizer_path}")
    tokenizer = tokenizers.Tokenizer.from_file(str(tokenizer_path))
    hf_config, state = to_hf(model, labels=labels)
    if tokenizer.get_vocab_size() > hf_config.vocab_size:
        raise ValueError(
            f"tokenizer {tokenizer_path} has {tokenizer.get_vocab_size()} tokens but the model's "
            f"vocab_size is {hf_config.vocab_size}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf_config.save_pretrained(out)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    shutil.copyfile(tokenizer_path, out / "tokenizer.json")
    tok_config = _tokenizer_config(tokenizer, model.cfg.max_seq_len)
    (out / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")
    return out


def read_state(model_dir: Path) -> dict[str, Tensor]:
    """model.safetensors, a sharded safetensors index, or pytorch_model.bin from a local directory."""
    from safetensors.torch import load_file

    single = model_dir / "model.safetensors"
    if single.is_file():
        return load_file(str(single))
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, Tensor] = {}
        for shard in shards:
            state.update(load_file(str(model_dir / shard)))
        return state
    pickle = model_dir / "pytorch_model.bin"
    if pickle.is_file():
        return torch.load(pickle, map_location="cpu", weights_only=True)
    raise FileNotFoundError(
        f"no weights in {model_dir}: expected model.safetensors, model.safetensors.index.json "
        "or pytorch_model.bin"
    )


def import_hf(
    model_dir: str | Path, *, task: str | None = "mlm", num_labels: int | None = None
) -> tuple[nn.Module, tokenizers.Tokenizer | None]:
    """Read a LOCAL HF model directory (never downloads) into a lit_tf model for ``task``.

    ``task``: any task the family's mapping builds (``HFMapping.tasks``, e.g. "mlm", "seq_cls"); None takes the
    checkpoint's own head. Returns (model, tokenizer from tokenizer.json or None). See ``from_hf``.
    The tokenizer comes with the file's own padding and truncation turned off, as every tokenizer
    lit_tf loads (``lit_tf.data.tokenizer.parse_tokenizer``): lengths are the caller's to set.
    """
    import tokenizers

    path = Path(model_dir)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"no config.json in {path} (import_hf reads local directories only)")
    hf_config = json.loads(config_file.read_text())
    if not hf_config.get("architectures"):
        raise ValueError(
            f"{config_file} has no 'architectures'; supported: {', '.join(architectures())}"
        )
    model = from_hf(hf_config, read_state(path), task=task, num_labels=num_labels)
    tokenizer_file = path / "tokenizer.json"
    tokenizer = tokenizers.Tokenizer.from_file(str(tokenizer_file)) if tokenizer_file.is_file() else None
    if tokenizer is not None:
        tokenizer.no_padding()
        tokenizer.no_truncation()
    return model, tokenizer
