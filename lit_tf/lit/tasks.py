"""One entry per fine-tuning task: everything a fine-tuning run needs to know about it.

`TASKS` is an explicit table. A task bundles the data half (`lit_tf.data.finetune.TaskData`: reader,
label policy, encoder, collator), its head (the family spec's `heads[<task name>]`), its objective,
its evaluation metric, its predictor (`lit_tf.cli.predict`, the logged MLflow model) and its
report. Adding a task (extractive QA, say) is one entry here, its pieces, a head per family that
supports it, and its YAML.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from lit_tf.data.finetune import SEQUENCE_DATA, TOKEN_DATA, TaskData
from lit_tf.errors import LitTfError
from lit_tf.lit.metrics import ClassificationMetrics, TaggingMetrics
from lit_tf.lit.predict import predict_sequence, predict_tokens
from lit_tf.objectives.finetune import SequenceClassificationObjective, TokenClassificationObjective


@dataclass(frozen=True)
class TaskSpec:
    name: str  # `objective.name`, and the key of the head in each family spec's `heads`
    data: TaskData  # reader, label policy, encoder, collator
    objective: Callable[[], Any]  # () -> the objective callable
    metric: Callable[[Sequence[str], Any], nn.Module]  # (labels, FineTuneDataConfig) -> evaluation metric
    predict: Callable[..., str]  # (line, tokenizer, logits_of, labels, top) -> output line (lit_tf.lit.predict)
    confusion: bool  # report a confusion matrix and per-class precision / recall / F1
    # matmul weights the head applies per token on average: (d_model, num_labels, seq_len) -> weights
    head_weights: Callable[[int, int, int], float]


TASKS: dict[str, TaskSpec] = {
    "seq_cls": TaskSpec(
        name="seq_cls", data=SEQUENCE_DATA, objective=SequenceClassificationObjective,
        metric=lambda labels, data: ClassificationMetrics(labels), predict=predict_sequence, confusion=True,
        head_weights=lambda d, k, seq_len: (d * d + d * k) / seq_len,  # pooler + classifier, once per sequence
    ),
    "token_cls": TaskSpec(
        name="token_cls", data=TOKEN_DATA, objective=TokenClassificationObjective,
        metric=lambda labels, data: TaggingMetrics(labels, data.scheme), predict=predict_tokens,
        confusion=False, head_weights=lambda d, k, seq_len: d * k,
    ),
}


def task_spec(name: Any, key: str = "objective.name") -> TaskSpec:
    """The spec of fine-tuning task `name`; an error naming `key` and the tasks otherwise."""
    if name not in TASKS:
        raise LitTfError(f"{key}={name!r} is not a fine-tuning task; tasks are {sorted(TASKS)}")
    return TASKS[name]
