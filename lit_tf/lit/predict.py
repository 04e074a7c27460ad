"""Predictions from a fine-tuned classifier loaded with `lit_tf.lit.checkpoint.load_checkpoint`."""

from __future__ import annotations

import torch

from lit_tf.data.finetune import PAIR_SEP
from lit_tf.objectives.finetune import classifier_forward


def predict_lines(loaded, lines: list[str], top: int = 3, lang: str | None = None) -> list[str]:
    """One output line per input: `label:prob` (top labels, tab-separated) or `word/TAG ...`."""
    meta, tok, model = loaded.meta, loaded.tokenizer, loaded.model
    labels, task = meta["labels"], meta["task"]
    lang_ids = {lg: i for i, lg in enumerate(meta.get("languages") or [])}
    out = []
    for line in lines:
        if task == "token_cls":
            words = line.split()
            enc = tok.encode(words, is_pretokenized=True)
        else:
            a, _, b = line.partition(PAIR_SEP)
            enc = tok.encode(a, b) if b else tok.encode(a)
        ids = torch.tensor([enc.ids])
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids, dtype=torch.bool),
                 "token_type_ids": torch.tensor([enc.type_ids]),
                 "lang_ids": torch.full_like(ids, lang_ids.get(lang or "en", 0))}
        with torch.no_grad():
            logits = classifier_forward(model, batch).logits[0]
        if task == "token_cls":
            tags, prev = [], None
            for pos, w in enumerate(enc.word_ids):
                if w is not None and w != prev:
                    tags.append(f"{words[w]}/{labels[int(logits[pos].argmax())]}")
                prev = w
            out.append(" ".join(tags))
        else:
            probs = logits.softmax(-1)
            best = probs.topk(min(top, len(labels)))
            out.append("\t".join(f"{labels[i]}:{p:.3f}" for p, i in zip(best.values.tolist(), best.indices.tolist())))
    return out
