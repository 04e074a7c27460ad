"""Evaluation callbacks that only need a model and the run's DataModule."""

from __future__ import annotations

from collections.abc import Mapping

import lightning as L
import torch
from torch import Tensor, nn

from lit_tf.data.tokenizer import CLS, PAD, SEP
from lit_tf.models.families import family_of
from lit_tf.models.xlm import mean_pool
from lit_tf.objectives.crosslingual import retrieval_accuracy


def read_lines(path: str, limit: int | None) -> list[str]:
    with open(path, encoding="utf-8", newline="\n") as f:
        lines = f.read().split("\n")  # "\n" only: U+0085 inside a line must not split it
    if lines and lines[-1] == "":
        lines.pop()
    return lines[:limit] if limit else lines




@torch.no_grad()
def embed_sentences(model: nn.Module, tokenizer, sentences: list[str], lang_id: int | None, *, max_len: int,
                    batch_size: int, device: torch.device) -> Tensor:
    """Mean-pooled final hidden states of `[CLS] sentence [SEP]`, one row per sentence."""
    spec = family_of(model)
    enc = spec.encoder_of(model)
    cls_id, sep_id, pad_id = (tokenizer.token_to_id(t) for t in (CLS, SEP, PAD))
    rows = []
    for i in range(0, len(sentences), batch_size):
        ids = [[cls_id, *tokenizer.encode(s, add_special_tokens=False).ids[: max_len - 2], sep_id]
               for s in sentences[i : i + batch_size]]
        T = max(len(x) for x in ids)
        x = torch.full((len(ids), T), pad_id, dtype=torch.long, device=device)
        mask = torch.zeros((len(ids), T), dtype=torch.bool, device=device)
        for r, seq in enumerate(ids):
            x[r, : len(seq)] = torch.tensor(seq, device=device)
            mask[r, : len(seq)] = True
        kwargs = {"lang_ids": torch.full_like(x, lang_id)} if lang_id is not None and spec.lang_ids else {}
        hidden = enc(x, attention_mask=mask, **kwargs).hidden  # (B, T, C)
        rows.append(mean_pool(hidden, mask).float())
    return torch.cat(rows)


class RetrievalEvaluator(L.Callback):
    """Cross-lingual sentence retrieval on parallel test sets, at every validation.

    For each pair `l1-l2` (files aligned line by line), sentences are embedded by mean pooling the
    encoder's final states and matched by cosine nearest neighbour, in both directions. Logs
    `val/retrieval_acc/<l1>-<l2>` (mean of both directions) and the two directions
    `val/retrieval_acc/<l1>-><l2>`, `val/retrieval_acc/<l2>-><l1>`.
    """

    def __init__(self, pairs: Mapping[str, Mapping[str, str]], max_pairs: int | None = 1000, batch_size: int = 64,
                 max_len: int = 128) -> None:
        self.pairs = {k: dict(v) for k, v in (pairs or {}).items()}
        self.max_pairs, self.batch_size, self.max_len = max_pairs, batch_size, max_len
        self._text: dict[str, tuple[list[str], list[str]]] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for pair, files in self.pairs.items():
            src, tgt = read_lines(files["src"], self.max_pairs), read_lines(files["tgt"], self.max_pairs)
            if len(src) != len(tgt):
                raise ValueError(f"retrieval {pair}: {files['src']} has {len(src)} lines, {files['tgt']} has {len(tgt)}")
            self._text[pair] = (src, tgt)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        dm = trainer.datamodule
        tok = dm.tokenizer.tokenizer
        lang_id = getattr(dm, "lang_id", {})
        was_training = pl_module.model.training
        pl_module.model.eval()
        try:
            for pair, (src, tgt) in self._text.items():
                l1, _, l2 = pair.partition("-")
                kw = {"max_len": self.max_len, "batch_size": self.batch_size, "device": pl_module.device}
                a = embed_sentences(pl_module.model, tok, src, lang_id.get(l1), **kw)
                b = embed_sentences(pl_module.model, tok, tgt, lang_id.get(l2), **kw)
                fwd, bwd = retrieval_accuracy(a, b)
                pl_module.log_dict({f"val/retrieval_acc/{pair}": (fwd + bwd) / 2, f"val/retrieval_acc/{l1}->{l2}": fwd,
                                    f"val/retrieval_acc/{l2}->{l1}": bwd}, rank_zero_only=True)
        finally:
            pl_module.model.train(was_training)
