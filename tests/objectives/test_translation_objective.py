"""The translation objective: label smoothing as torch defines it, the plain NLL as its term, and a
loss that is the exact token mean over two real (gloo) ranks with different token counts."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from lit_tf.models.seq2seq import Seq2SeqConfig, Seq2SeqModel
from lit_tf.objectives.losses import IGNORE_INDEX
from lit_tf.objectives.translation import TranslationObjective, smoothed_nll

V = 23


def _model() -> Seq2SeqModel:
    torch.manual_seed(0)
    cfg = Seq2SeqConfig(vocab_size=V, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_seq_len=16, dropout=0.0,
                        attn_dropout=0.0)
    return Seq2SeqModel(cfg)


def _batch(rows: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
    """(source, target) id lists -> a collated batch as lit_tf.data.translation builds it."""
    S, T = max(len(s) for s, _ in rows), max(len(t) for _, t in rows) - 1
    b = {"input_ids": torch.zeros(len(rows), S, dtype=torch.long), "attention_mask": torch.zeros(len(rows), S, dtype=torch.bool),
         "decoder_input_ids": torch.zeros(len(rows), T, dtype=torch.long),
         "decoder_attention_mask": torch.zeros(len(rows), T, dtype=torch.bool),
         "labels": torch.full((len(rows), T), IGNORE_INDEX, dtype=torch.long)}
    for i, (s, t) in enumerate(rows):
        b["input_ids"][i, : len(s)] = torch.tensor(s)
        b["attention_mask"][i, : len(s)] = True
        b["decoder_input_ids"][i, : len(t) - 1] = torch.tensor(t[:-1])
        b["decoder_attention_mask"][i, : len(t) - 1] = True
        b["labels"][i, : len(t) - 1] = torch.tensor(t[1:])
    return b


ROWS = [([2, 5, 6, 7, 3], [2, 9, 10, 3]), ([2, 8, 3], [2, 11, 12, 13, 14, 15, 3]),  # rank 0: 3 + 6 targets
        ([2, 5, 9, 9, 9, 9, 3], [2, 16, 3])]  # rank 1: 2 targets


def test_smoothing_matches_torch_and_the_term_is_the_plain_nll():
    torch.manual_seed(1)
    logits, targets = torch.randn(12, V), torch.randint(0, V, (12,))
    loss, nll, hits = smoothed_nll(logits, targets, 0.1)
    torch.testing.assert_close(loss, F.cross_entropy(logits, targets, label_smoothing=0.1, reduction="sum"))
    torch.testing.assert_close(nll, F.cross_entropy(logits, targets, reduction="sum"))
    assert hits == (logits.argmax(-1) == targets).sum()
    model, obj = _model(), TranslationObjective(label_smoothing=0.1)
    out = obj(model, _batch(ROWS[:2]))
    s, n = out.terms["mt"]
    assert n == 9 and out.loss > s / n  # training: smoothed, above the NLL of a near-uniform model
    with torch.no_grad():
        ev = obj(model, _batch(ROWS[:2]))
    torch.testing.assert_close(ev.loss, ev.terms["mt"][0] / 9)  # evaluation: the plain NLL mean
    with pytest.raises(ValueError, match="label_smoothing"):
        TranslationObjective(label_smoothing=1.0)


def _rank(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        model, obj = _model(), TranslationObjective(label_smoothing=0.1)
        rows = ROWS[:2] if rank == 0 else ROWS[2:]
        obj(model, _batch(rows)).loss.backward()
        for p in model.parameters():  # what DDP does: the mean of the ranks' gradients
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= world
        if rank == 0:
            torch.save({k: p.grad for k, p in model.named_parameters() if p.grad is not None}, out)
    finally:
        dist.destroy_process_group()


def test_the_loss_is_the_token_mean_over_all_ranks(tmp_path):
    out = str(tmp_path / "grads.pt")
    mp.start_processes(_rank, args=(2, f"file://{tmp_path / 'rendezvous'}", out), nprocs=2, start_method="spawn")
    ddp = torch.load(out)
    # one process, all 11 target tokens in one batch: the gradient of their mean
    model, obj = _model(), TranslationObjective(label_smoothing=0.1)
    obj(model, _batch(ROWS)).loss.backward()
    for k, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(ddp[k], p.grad, rtol=1e-4, atol=1e-6, msg=k)
    # a mean of per-rank means (9 and 2 tokens weighted alike) is far off: the comparison can tell
    naive = _model()
    ((obj(naive, _batch(ROWS[:2])).loss + obj(naive, _batch(ROWS[2:])).loss) / 2).backward()
    gap = max((ddp[k] - p.grad).abs().max().item() for k, p in naive.named_parameters() if p.grad is not None)
    assert gap > 1e-3, gap
