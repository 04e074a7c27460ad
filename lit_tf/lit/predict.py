"""Predictions from a fine-tuned classifier loaded with `lit_tf.lit.checkpoint.load_checkpoint`.

Each fine-tuning task's predictor (its task spec names it) turns one input line into one output
line, given a function that runs the model on an encoding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tokenizers import Encoding, Tokenizer
from torch import Tensor

from lit_tf.data.finetune import PAIR_SEP
from lit_tf.objectives.finetune import classifier_forward

Logits = Callable[[Encoding], Tensor]  # an encoding -> the model's logits for it, without the batch dimension


def predict_sequence(line: str, tok: Tokenizer, logits_of: Logits, labels: Sequence[str], top: int) -> str:
    """A sentence (or a pair joined by " ||| ") -> its top labels as `label:prob`, tab-separated."""
    a, _, b = line.partition(PAIR_SEP)
    probs = logits_of(tok.encode(a, b) if b else tok.encode(a)).softmax(-1)
    best = probs.topk(min(top, len(labels)))
    return "\t".join(f"{labels[i]}:{p:.3f}" for p, i in zip(best.values.tolist(), best.indices.tolist()))


def predict_tokens(line: str, tok: Tokenizer, logits_of: Logits, labels: Sequence[str], top: int) -> str:
    """Whitespace-separated words -> `word/TAG ...`, the tag of each word's first sub-token."""
    words = line.split()
    enc = tok.encode(words, is_pretokenized=True)
    logits = logits_of(enc)  # (T, K)
    tags, prev = [], None
    for pos, w in enumerate(enc.word_ids):
        if w is not None and w != prev:
            tags.append(f"{words[w]}/{labels[int(logits[pos].argmax())]}")
        prev = w
    return " ".join(tags)


def predict_lines(loaded, lines: list[str], top: int = 3, lang: str | None = None) -> list[str]:
    """One output line per input, as the checkpoint's task predicts it."""
    from lit_tf.lit.tasks import task_spec

    meta, tok, model = loaded.meta, loaded.tokenizer, loaded.model
    predictor = task_spec(meta["task"]).predict
    lang_ids = {lg: i for i, lg in enumerate(meta.get("languages") or [])}

    def logits_of(enc: Encoding) -> Tensor:
        ids = torch.tensor([enc.ids])
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids, dtype=torch.bool),
                 "token_type_ids": torch.tensor([enc.type_ids]),
                 "lang_ids": torch.full_like(ids, lang_ids.get(lang or "en", 0))}
        with torch.no_grad():
            return classifier_forward(model, batch).logits[0]

    return [predictor(line, tok, logits_of, meta["labels"], top) for line in lines]
