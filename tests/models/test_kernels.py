"""The speed paths compute what the plain paths compute: fast CPU dropout, spelled-out attention,
the fused LM-head and MLM-head cross-entropy, index-based position selection and mask-free packed
batches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lit_tf.models import GPTConfig, GPTForCausalLM
from lit_tf.models.bert import BertConfig, BertForPreTraining
from lit_tf.models.layers import (
    KERNELS,
    dropout,
    keep_mask,
    linear_cross_entropy,
    math_attention,
    select_positions,
    set_kernels,
)
from lit_tf.models.xlm import XLMConfig, XLMForPreTraining
from lit_tf.objectives.losses import IGNORE_INDEX, clm_loss, shifted_targets
from lit_tf.objectives.pretraining import CausalLMObjective, CrossLingualObjective, MaskedLMObjective


@pytest.fixture(autouse=True)
def _default_kernels():
    saved = (KERNELS.fast_dropout, KERNELS.attention)
    yield
    set_kernels(*saved)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_fast_dropout_drops_at_rate_p_and_keeps_the_mean(p):
    torch.manual_seed(0)
    keep, p_eff = keep_mask((2048, 2048), p)
    assert abs(p_eff - p) <= 2**-17
    assert keep.dtype == torch.float32 and set(keep.unique().tolist()) == {0.0, 1.0}
    # 4M draws: the drop rate's standard deviation is < 2.5e-4, so 2e-3 is > 8 sigma
    assert abs((1 - keep).mean().item() - p_eff) < 2e-3
    # no structure across the four 16-bit slices of one draw: each slice drops at rate p too
    for j in range(4):
        assert abs((1 - keep.view(-1)[j::4]).mean().item() - p_eff) < 4e-3
    y = dropout(torch.ones(2048, 2048), p)
    assert abs(y.mean().item() - 1.0) < 5e-3  # inverted dropout keeps the expectation
    values = torch.unique(y)
    assert len(values) == 2 and values[0] == 0 and values[1] == pytest.approx(1 / (1 - p_eff))


def test_fast_dropout_is_seeded_and_backprops_through_the_kept_elements():
    x = torch.randn(64, 64, requires_grad=True)
    torch.manual_seed(7)
    y1 = dropout(x, 0.3)
    torch.manual_seed(7)
    y2 = dropout(x, 0.3)
    assert torch.equal(y1, y2)
    y1.sum().backward()
    kept = y1.detach() != 0
    scale = (y1.detach()[kept] / x.detach()[kept]).mean()
    assert torch.allclose(x.grad, kept.float() * scale)
    assert torch.equal(dropout(x, 0.3, training=False), x)


def test_torch_dropout_when_switched_off():
    set_kernels(fast_dropout=False)
    torch.manual_seed(3)
    a = dropout(torch.ones(1000), 0.2)
    torch.manual_seed(3)
    b = F.dropout(torch.ones(1000), 0.2, training=True)
    assert torch.equal(a, b)


@pytest.mark.parametrize("causal", [False, True])
def test_math_attention_matches_sdpa(causal):
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 17, 8) for _ in range(3))
    mask = torch.rand(3, 1, 1, 17) > 0.2
    mask[..., 0] = True
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask & torch.ones(17, 17, dtype=torch.bool).tril()
                                         if causal else mask)
    assert torch.allclose(math_attention(q, k, v, mask, causal, 0.0), ref, atol=1e-5)


def test_attention_paths_agree_in_a_model_and_dropout_path_is_used_on_cpu():
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_seq_len=16, dropout=0.0,
                     attn_dropout=0.0)
    model = BertForPreTraining(cfg, nsp=False).eval()
    ids = torch.randint(5, 50, (4, 16))
    mask = torch.ones(4, 16, dtype=torch.bool)
    mask[1, 10:] = False
    outs = []
    for path in ("sdpa", "math"):
        set_kernels(attention=path)
        outs.append(model(ids, attention_mask=mask).hidden)
    assert torch.allclose(outs[0][mask], outs[1][mask], atol=1e-5)
    # a full-length batch needs no mask: the same result without one
    set_kernels(attention="auto")
    full = torch.ones(4, 16, dtype=torch.bool)
    assert torch.allclose(model(ids, attention_mask=full).hidden, model(ids).hidden, atol=1e-6)


def _ce_reference(h, w, b, t):
    return F.cross_entropy(F.linear(h, w, b).float(), t, ignore_index=IGNORE_INDEX, reduction="sum")


@pytest.mark.parametrize("with_bias", [False, True])
def test_linear_cross_entropy_matches_logits_then_loss(with_bias):
    torch.manual_seed(0)
    V = 40_000  # 256 rows per chunk: 1000 rows span four chunks, the last one partial
    h = torch.randn(1000, 16, requires_grad=True)
    w = (torch.randn(V, 16) * 0.1).requires_grad_()
    b = (torch.randn(V) * 0.1).requires_grad_() if with_bias else None
    t = torch.randint(0, V, (1000,))
    t[::7] = IGNORE_INDEX
    (loss, n), hits = linear_cross_entropy(h, w, t, bias=b, count_hits=True)
    (loss * 0.5).backward()  # a non-unit upstream gradient
    grads = [x.grad.clone() for x in (h, w, b) if x is not None]
    for x in (h, w, b):
        if x is not None:
            x.grad = None
    ref = _ce_reference(h, w, b, t)
    (ref * 0.5).backward()
    assert int(n) == int((t != IGNORE_INDEX).sum())
    assert torch.allclose(loss, ref, rtol=1e-5)
    for g, x in zip(grads, [x for x in (h, w, b) if x is not None]):
        assert torch.allclose(g, x.grad, atol=1e-6, rtol=1e-4)
    hits, m = hits
    logits = F.linear(h, w, b)
    assert int(hits) == int(((logits.argmax(-1) == t) & (t != IGNORE_INDEX)).sum()) and int(m) == int(n)


def test_gpt_fused_loss_equals_the_logits_path():
    torch.manual_seed(0)
    model = GPTForCausalLM(GPTConfig(vocab_size=97, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_seq_len=24,
                                     dropout=0.0, attn_dropout=0.0))
    ids = torch.randint(0, 97, (3, 24))
    mask = torch.ones(3, 24, dtype=torch.bool)
    mask[2, 15:] = False
    batch = {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(~mask, IGNORE_INDEX)}
    losses, grads = [], []
    for fused in (True, False):
        model.zero_grad()
        out = CausalLMObjective(fused_loss=fused)(model, batch)
        out.loss.backward()
        losses.append(out.loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(losses[0], losses[1], rtol=1e-6)
    assert torch.allclose(grads[0], grads[1], atol=1e-6, rtol=1e-4)
    model.eval()
    with torch.no_grad():
        fused = model(ids, attention_mask=mask, targets=shifted_targets(batch["labels"]))
        logits = model(ids, attention_mask=mask).lm_logits
    s, n = clm_loss(logits, batch["labels"])
    assert torch.allclose(fused.nll[0], s, rtol=1e-5) and int(fused.nll[1]) == int(n)
    assert fused.lm_logits is None and fused.hits is not None


def _mlm_case(family: str):
    """A small BERT (MLM + NSP) or XLM (MLM) model, a batch with padding and 1-in-5 targets, and the
    objective for a given fused_loss."""
    torch.manual_seed(0)
    V, B, T = 97, 3, 20
    ids = torch.randint(5, V, (B, T))
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[2, 13:] = False
    labels = torch.full((B, T), IGNORE_INDEX)
    labels[:, 1::5] = ids[:, 1::5]
    labels[~mask] = IGNORE_INDEX
    index = (labels.view(-1) != IGNORE_INDEX).nonzero().squeeze(1)
    batch = {"input_ids": ids, "attention_mask": mask, "mlm_labels": labels, "mlm_index": index,
             "mlm_targets": labels.view(-1)[index]}
    if family == "bert":
        model = BertForPreTraining(BertConfig(vocab_size=V, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_seq_len=T,
                                              dropout=0.0, attn_dropout=0.0))
        batch |= {"token_type_ids": (torch.arange(T) >= 10).long().expand(B, T), "nsp_labels": torch.tensor([0, 1, 1])}
        return model, batch, lambda fused: MaskedLMObjective(nsp=True, fused_loss=fused)
    model = XLMForPreTraining(XLMConfig(vocab_size=V, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_seq_len=T,
                                        dropout=0.0, attn_dropout=0.0))
    sub = batch | {"term": "mlm", "lang_ids": torch.ones(B, T, dtype=torch.long)}
    return model, {"mlm": sub}, lambda fused: CrossLingualObjective({"mlm": 1.0}, {}, fused_loss=fused)


@pytest.mark.parametrize("family", ["bert", "xlm"])
def test_mlm_fused_loss_equals_the_logits_path(family):
    model, batch, objective = _mlm_case(family)
    losses, grads = [], []
    for fused in (True, False):
        model.zero_grad()
        out = objective(fused)(model, batch)
        out.loss.backward()
        losses.append(out.loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(losses[0], losses[1], rtol=1e-6)
    assert torch.allclose(grads[0], grads[1], atol=1e-6, rtol=1e-4)
    model.eval()  # evaluation: accuracy counts from the fused chunks equal the logits' arg-max
    with torch.no_grad():
        fused, plain = (objective(f)(model, batch) for f in (True, False))
    assert fused.accuracy.keys() == plain.accuracy.keys() and fused.accuracy
    for k in plain.accuracy:
        assert [int(x) for x in fused.accuracy[k]] == [int(x) for x in plain.accuracy[k]]
    assert torch.allclose(fused.loss, plain.loss, rtol=1e-6)


def test_mlm_targets_need_positions():
    model, batch, _ = _mlm_case("bert")
    with pytest.raises(ValueError, match="mlm_targets needs mlm_positions"):
        model(batch["input_ids"], mlm_targets=batch["mlm_targets"])


def test_select_positions_by_index_equals_bool_mask():
    hidden = torch.randn(3, 5, 4)
    mask = torch.rand(3, 5) > 0.5
    idx = mask.view(-1).nonzero().squeeze(1)
    assert torch.equal(select_positions(hidden, idx), hidden[mask])
    with pytest.raises(ValueError, match="shape"):
        select_positions(hidden, torch.ones(2, 5, dtype=torch.bool))


@pytest.mark.gpu
@pytest.mark.parametrize("family", ["bert", "gpt"])
def test_a_training_step_never_waits_for_the_gpu(family):
    """Forward, backward and a fused AdamW step on packed batches make no device-to-host sync
    (torch's sync debug mode raises on one)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from lit_tf.objectives.pretraining import MaskedLMObjective

    torch.manual_seed(0)
    B, T, V = 4, 32, 500
    ids = torch.randint(5, V, (B, T))
    if family == "bert":
        model = BertForPreTraining(BertConfig(vocab_size=V, d_model=64, n_layers=2, n_heads=4, d_ff=128, max_seq_len=T),
                                   nsp=False)
        labels = torch.full((B, T), IGNORE_INDEX)
        labels[:, ::7] = ids[:, ::7]
        index = (labels.view(-1) != IGNORE_INDEX).nonzero().squeeze(1)
        batch = {"input_ids": ids, "attention_mask": torch.ones(B, T, dtype=torch.bool), "mlm_labels": labels,
                 "mlm_index": index, "mlm_targets": labels.view(-1)[index]}
        objective = MaskedLMObjective(nsp=False, weights={"mlm": 1.0})
    else:
        model = GPTForCausalLM(GPTConfig(vocab_size=V, d_model=64, n_layers=2, n_heads=4, d_ff=128, max_seq_len=T))
        batch = {"input_ids": ids, "attention_mask": torch.ones(B, T, dtype=torch.bool), "labels": ids}
        objective = CausalLMObjective()
    model = model.cuda().train()
    batch = {k: v.cuda() for k, v in batch.items()} | {"no_padding": True}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    objective(model, batch).loss.backward()  # warm-up: lazy initialisation may sync once
    opt.step()
    opt.zero_grad()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        objective(model, batch).loss.backward()
        opt.step()
        opt.zero_grad()
    finally:
        torch.cuda.set_sync_debug_mode("default")
