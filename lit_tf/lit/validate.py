"""Checks of a composed run config that need no data: run by `train()` before any heavy work.

Each failure is a ConfigError naming the key and what was expected. What can only be checked
against the data or a checkpoint (an unseen label, a checkpoint's position table) is checked
where those are read, still before training starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lit_tf.errors import LitTfError


class RunConfigError(LitTfError):
    """A config value that cannot work; the message names the key."""


def _positive_int(section: Mapping[str, Any], key: str, where: str, optional: bool = False) -> None:
    value = section.get(key)
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise RunConfigError(f"{where}.{key}={value!r}: expected a positive integer")


def check_run_config(data: Mapping[str, Any], model: Mapping[str, Any], objective: Mapping[str, Any],
                     init_from: Any = None) -> None:
    """Batch sizes and sequence lengths, and (when the run builds its model from `model`) the model
    config itself: `n_heads` must divide `d_model`, `data.max_seq_len` must fit `model.max_seq_len`."""
    from lit_tf.lit.build import model_config
    from lit_tf.lit.tasks import TASKS
    from lit_tf.models.families import FAMILIES

    for key, optional in (("batch_size", False), ("val_batch_size", True), ("max_seq_len", False)):
        _positive_int(data, key, "data", optional)
    spec = FAMILIES.get(model.get("family"))
    # else the model comes from init_from: a fine-tuned encoder, or a family's warm start (seq2seq from XLM)
    builds_model = not init_from or (objective.get("name") not in TASKS and (spec is None or spec.warm_start is None))
    if not builds_model:
        return
    derived = spec.derived(objective, list(data.get("languages") or ["l1", "l2"])) if spec else {}
    # the vocabulary size comes from the tokenizer later; any valid one checks the rest of the config
    model_config(model, int(model.get("vocab_size") or 1000), pad_id=0, **derived)
    if int(model["max_seq_len"]) < int(data["max_seq_len"]):
        raise RunConfigError(
            f"data.max_seq_len={data['max_seq_len']} exceeds model.max_seq_len={model['max_seq_len']} "
            "(the model's position table): lower data.max_seq_len or raise model.max_seq_len"
        )
