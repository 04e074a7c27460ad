"""ELECTRA's replaced-token-detection objective on a tiny ElectraForPreTraining with batches from the
real MLM collator: labels mark exactly the replaced tokens, the discriminator's loss never reaches
the generator, the loss is gen + 50 * rtd, predictions only in evaluation, and a short training run
lowers both losses. Plus the evaluation metric (ROC-AUC, replaced share)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lit_tf.data.pretraining import MLMCollator
from lit_tf.lit.metrics import ReplacedTokenMetrics
from lit_tf.models.electra import ElectraConfig, ElectraForPreTraining
from lit_tf.objectives.electra import ReplacedTokenDetectionObjective, replace_tokens, sample_replacements
from lit_tf.objectives.losses import IGNORE_INDEX

PAD, CLS, SEP, MASK, N_SPECIAL = 0, 2, 3, 4, 5
CYCLE = 12  # the synthetic text cycles through tokens 5 .. 5 + CYCLE - 1
VOCAB = 24
SIZES = {"vocab_size": VOCAB, "d_model": 32, "n_layers": 2, "n_heads": 4, "d_ff": 64, "max_seq_len": 32,
         "embedding_size": 16}


def examples(seed: int, B: int = 16, T: int = 30, repeat: bool = False) -> list[dict]:
    """Rows [CLS] a a+1 a+2 ... [SEP] cycling through CYCLE tokens, or (repeat) [CLS] a a a ... [SEP]
    (a masked token is the row's token: what a tiny MLM learns in a few hundred steps), of varied
    lengths, so batches are padded."""
    rng = np.random.default_rng(seed)
    out = []
    for r in range(B):
        n = int(rng.integers(T // 2, T - 1))
        a = int(rng.integers(CYCLE))
        body = N_SPECIAL + (np.full(n, a) if repeat else (a + np.arange(n)) % CYCLE)
        out.append({"input_ids": np.concatenate([[CLS], body, [SEP]]), "seed": seed * 1000 + r})
    return out


def make_batch(seed: int, B: int = 16, T: int = 30, mlm_probability: float = 0.15, repeat: bool = False) -> dict:
    collate = MLMCollator(pad_id=PAD, mask_id=MASK, vocab_size=VOCAB, n_special=N_SPECIAL,
                          mlm_probability=mlm_probability)
    batch = collate(examples(seed, B, T, repeat))
    batch["original"] = torch.where(batch["mlm_labels"] != IGNORE_INDEX, batch["mlm_labels"], batch["input_ids"])
    return batch


def tiny_model(seed: int = 0, **overrides) -> ElectraForPreTraining:
    torch.manual_seed(seed)
    return ElectraForPreTraining(ElectraConfig(**{**SIZES, **overrides}))


def capture_discriminator_input(model: ElectraForPreTraining) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda m, args, kwargs: seen.append(args[0].clone()), with_kwargs=True)
    return seen


# ----------------------------------------------------------------------------- corruption and labels


@pytest.mark.parametrize("fused", [True, False])
def test_labels_mark_exactly_the_tokens_whose_sample_differs(fused):
    model = tiny_model().eval()
    seen = capture_discriminator_input(model)
    batch = make_batch(seed=1)
    assert not batch["no_padding"]
    torch.manual_seed(0)
    out = ReplacedTokenDetectionObjective(fused_loss=fused)(model, batch)
    corrupted, original, real = seen[0], batch["original"], batch["attention_mask"]
    masked = batch["mlm_labels"] != IGNORE_INDEX
    assert masked.sum() >= 30
    assert torch.equal(corrupted[~masked], original[~masked])  # untouched outside the masked positions
    assert not (corrupted[masked] == MASK).all()  # samples, not the collator's [MASK]s
    probs, labels = out.predictions["rtd"]
    assert probs.shape == labels.shape == (int(real.sum()),)
    assert torch.equal(labels, (corrupted != original)[real].long())
    assert ((probs >= 0) & (probs <= 1)).all()


def test_a_sample_equal_to_the_original_is_not_replaced():
    model = tiny_model().eval()
    with torch.no_grad():
        model.generator_head.bias[7] = 100.0  # the generator now always samples token 7
    seen = capture_discriminator_input(model)
    batch = make_batch(seed=2, mlm_probability=0.4)
    masked = batch["mlm_labels"] != IGNORE_INDEX
    original = batch["original"]
    assert (original[masked] == 7).sum() >= 2 and (original[masked] != 7).sum() >= 10  # both cases occur
    out = ReplacedTokenDetectionObjective()(model, batch)
    assert (seen[0][masked] == 7).all()
    expected = masked & (original != 7)  # (B, T): replaced only where 7 is not the original token
    assert torch.equal(out.predictions["rtd"][1], expected[batch["attention_mask"]].long())


def test_bool_positions_and_flat_indices_corrupt_alike():
    ids = torch.tensor([[2, 9, 4, 11, 3], [2, 4, 4, 3, 0]])
    originals = torch.tensor([10, 7, 8])
    samples = torch.tensor([10, 5, 8])
    mask = torch.tensor([[0, 0, 1, 0, 0], [0, 1, 1, 0, 0]], dtype=torch.bool)
    for positions in (mask, mask.reshape(-1).nonzero().squeeze(1)):
        corrupted, replaced = replace_tokens(ids, positions, samples, originals)
        assert corrupted.tolist() == [[2, 9, 10, 11, 3], [2, 5, 8, 3, 0]]
        assert replaced.tolist() == [[False] * 5, [False, True, False, False, False]]
    assert ids[0, 2] == 4  # the batch itself is not modified


def test_sampling_follows_the_softmax_not_the_argmax():
    torch.manual_seed(0)
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1]])).expand(20000, 3)
    counts = torch.bincount(sample_replacements(logits), minlength=3).float() / 20000
    torch.testing.assert_close(counts, torch.tensor([0.6, 0.3, 0.1]), atol=0.015, rtol=0)
    cold = torch.bincount(sample_replacements(logits, temperature=0.05), minlength=3)
    assert cold[0] > 19900  # a low temperature approaches the arg-max
    assert sample_replacements(torch.zeros(0, 3)).shape == (0,)
    # a token of probability zero is never drawn, wherever it sits in the vocabulary
    masked = torch.tensor([[-float("inf"), 0.0, -float("inf"), 0.0, -float("inf")]]).expand(5000, 5)
    assert set(sample_replacements(masked).tolist()) == {1, 3}


# ----------------------------------------------------------------------------- gradients and loss


@pytest.mark.parametrize("fused", [True, False])
def test_the_rtd_loss_never_reaches_the_generator(fused):
    model = tiny_model()  # training mode, dropout on
    out = ReplacedTokenDetectionObjective(fused_loss=fused)(model, make_batch(seed=3))
    s, n = out.terms["rtd"]
    (s / n).backward()
    shared = {id(p) for p in model.electra.embeddings.parameters()}
    generator_only = [(name, p) for name, p in model.named_parameters()
                      if name.startswith(("generator.", "generator_head.")) and id(p) not in shared]
    assert len(generator_only) > 10
    for name, p in generator_only:
        assert p.grad is None or not p.grad.any(), name
    for name, p in model.named_parameters():
        if name.startswith(("electra.", "discriminator_head.")):
            assert p.grad is not None and p.grad.abs().sum() > 0, name  # incl. the shared embeddings

    model.zero_grad(set_to_none=True)
    out = ReplacedTokenDetectionObjective(fused_loss=fused)(model, make_batch(seed=3))
    s, n = out.terms["gen_mlm"]
    (s / n).backward()
    assert model.discriminator_head.dense.weight.grad is None  # and the generator's loss stays in the generator
    assert model.generator.blocks[0].ffn.fc_in.weight.grad.abs().sum() > 0


def test_loss_is_the_weighted_sum_of_term_means():
    model = tiny_model().eval()
    batch = make_batch(seed=4)
    for obj, (wg, wr) in ((ReplacedTokenDetectionObjective(), (1.0, 50.0)),
                          (ReplacedTokenDetectionObjective(rtd_weight=10, gen_weight=2.0), (2.0, 10.0))):
        out = obj(model, batch)
        (gs, gn), (rs, rn) = out.terms["gen_mlm"], out.terms["rtd"]
        assert int(gn) == int((batch["mlm_labels"] != IGNORE_INDEX).sum())
        assert int(rn) == int(batch["attention_mask"].sum())
        expected = wg * gs / gn + wr * rs / rn
        torch.testing.assert_close(out.loss, expected, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(obj.combine(out.terms), expected, atol=1e-6, rtol=1e-6)
    assert obj.terms == obj.val_terms == ("gen_mlm", "rtd")


def test_fused_and_unfused_generator_losses_agree():
    model = tiny_model().eval()
    batch = make_batch(seed=5)
    outs = []
    for fused in (True, False):
        torch.manual_seed(3)  # same draws: the same samples
        outs.append(ReplacedTokenDetectionObjective(fused_loss=fused)(model, batch))
    for term in ("gen_mlm", "rtd"):
        torch.testing.assert_close(outs[0].terms[term][0], outs[1].terms[term][0], atol=1e-4, rtol=1e-5)
        assert torch.equal(outs[0].accuracy[term][0], outs[1].accuracy[term][0])
    assert torch.equal(outs[0].predictions["rtd"][1], outs[1].predictions["rtd"][1])


def test_predictions_only_in_evaluation_and_counts():
    model = tiny_model()
    batch = make_batch(seed=6)
    train = ReplacedTokenDetectionObjective()(model, batch)
    assert train.predictions == {} and set(train.accuracy) == {"rtd"}
    c, n = train.accuracy["rtd"]
    assert 0 <= int(c) <= int(n) == int(batch["attention_mask"].sum())
    model.eval()
    ev = ReplacedTokenDetectionObjective(fused_loss=False)(model, batch)
    assert set(ev.predictions) == {"rtd"} and set(ev.accuracy) == {"gen_mlm", "rtd"}
    probs, labels = ev.predictions["rtd"]
    c, n = ev.accuracy["rtd"]
    assert int(c) == int(((probs > 0.5).long() == labels).sum())


def test_argument_validation():
    for bad in ({"rtd_weight": -1.0}, {"gen_weight": float("nan")}, {"temperature": 0.0}, {"temperature": True}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ReplacedTokenDetectionObjective(**bad)


# ----------------------------------------------------------------------------- learning


def evaluate(model: ElectraForPreTraining, obj: ReplacedTokenDetectionObjective, batch: dict) -> dict[str, float]:
    model.eval()
    torch.manual_seed(123)
    metric = ReplacedTokenMetrics()
    with torch.no_grad():
        out = obj(model, batch)
    metric.update(*out.predictions["rtd"])
    model.train()
    return {"gen": float(out.terms["gen_mlm"][0] / out.terms["gen_mlm"][1]),
            "rtd": float(out.terms["rtd"][0] / out.terms["rtd"][1]), **metric.report()}


def train(seed: int, steps: int = 300) -> tuple[dict[str, float], dict[str, float]]:
    """A tiny ELECTRA (discriminator 64 wide, generator 32) on rows of one repeated token."""
    model = tiny_model(seed, d_model=64, d_ff=128, embedding_size=32, generator_size=0.5, dropout=0.0,
                       attn_dropout=0.0)
    obj = ReplacedTokenDetectionObjective()
    held_out = make_batch(seed=10_000, B=64, repeat=True)
    before = evaluate(model, obj, held_out)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        obj(model, make_batch(seed=seed * 100_000 + step, repeat=True), step).loss.backward()
        optimizer.step()
    return before, evaluate(model, obj, held_out)


def test_a_short_run_lowers_both_losses_and_learns_to_detect():
    # Over seeds 0-5: gen_mlm fell to 0.15-0.34 of its start, rtd to 0.01-0.09, AUC to 0.94-1.00
    # (at 250 steps some seeds stayed near 0.72: the discriminator learns the replaced share first,
    # per-token detection later).
    before, after = train(seed=0)
    assert before["rtd_auc"] < 0.65 and 0.05 < before["replaced_rate"] < 0.2, before
    assert after["gen"] < 0.6 * before["gen"], (before, after)
    assert after["rtd"] < 0.4 * before["rtd"], (before, after)
    assert after["rtd_auc"] > 0.8, after
    assert after["replaced_rate"] < before["replaced_rate"], (before, after)  # the generator's samples improved


# ----------------------------------------------------------------------------- the metric


def exact_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())


def test_metric_auc_and_replaced_rate():
    m = ReplacedTokenMetrics()
    labels = torch.tensor([0, 0, 1, 0, 1, 0, 0, 0])
    m.update(torch.where(labels == 1, 0.9, 0.2), labels)
    out = m.compute()
    assert out["rtd_auc"] == 1.0 and out["replaced_rate"] == pytest.approx(0.25)
    rep = m.report()
    assert rep == {"rtd_auc": 1.0, "replaced_rate": 0.25, "tokens": 8, "replaced": 2}
    assert all(isinstance(v, (int, float)) for v in rep.values())
    m.reset()

    m.update(torch.full((100,), 0.3), (torch.arange(100) % 4 == 0).long())
    m.update(torch.full((60,), 0.3), (torch.arange(60) % 2 == 0).long())  # updates accumulate
    out = m.compute()
    assert out["rtd_auc"] == 0.5 and out["replaced_rate"] == pytest.approx(55 / 160)
    m.reset()

    # continuous scores: within bin resolution of the exact pairwise AUC, batch by batch
    gen = torch.Generator().manual_seed(0)
    labels = (torch.rand(4000, generator=gen) < 0.15).long()
    scores = torch.sigmoid(torch.randn(4000, generator=gen) * 3 + 2.5 * labels - 3)
    for a in range(0, 4000, 1000):
        m.update(scores[a : a + 1000], labels[a : a + 1000])
    assert float(m.compute()["rtd_auc"]) == pytest.approx(exact_auc(scores, labels), abs=2e-3)
    assert float(m.compute()["replaced_rate"]) == pytest.approx(float(labels.float().mean()), abs=1e-6)
    inverted = ReplacedTokenMetrics()
    inverted.update(1 - scores, labels)
    assert float(inverted.compute()["rtd_auc"]) == pytest.approx(1 - exact_auc(scores, labels), abs=2e-3)

    empty = ReplacedTokenMetrics()
    empty.update(torch.tensor([0.4, 0.6]), torch.tensor([0, 0]))  # no replaced token yet
    assert math.isnan(float(empty.compute()["rtd_auc"])) and float(empty.compute()["replaced_rate"]) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        empty.update(torch.zeros(3), torch.zeros(2))


def test_metric_on_the_objective_predictions():
    model = tiny_model().eval()
    obj = ReplacedTokenDetectionObjective()
    m = ReplacedTokenMetrics()
    labels = []
    for seed in (7, 8):
        out = obj(model, make_batch(seed=seed))
        m.update(*out.predictions["rtd"])
        labels.append(out.predictions["rtd"][1])
    labels = torch.cat(labels).float()
    assert m.report()["replaced_rate"] == pytest.approx(float(labels.mean()), abs=1e-6)
    assert m.report()["tokens"] == labels.numel()
