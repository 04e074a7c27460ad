"""Behavioural tests for the knowledge-distillation pieces (lit_tf.objectives.distill)."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from lit_tf.models import (
    BertConfig,
    BertForPreTraining,
    BertForSequenceClassification,
    BertForTokenClassification,
)
from lit_tf.objectives.distill import (
    ActivationCapture,
    DistillationObjective,
    attention_mse,
    cosine_loss,
    every_other_layer,
    hidden_mse,
    init_student_from_teacher,
    kd_loss,
    layer_map,
)
from lit_tf.objectives.losses import IGNORE_INDEX

V, T = 50, 12


def _cfg(**kw) -> BertConfig:
    base = dict(vocab_size=V, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_seq_len=16, dropout=0.0, attn_dropout=0.0)
    base.update(kw)
    return BertConfig(**base)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mask(B: int = 3, lengths=(12, 9, 5)) -> torch.Tensor:
    return torch.arange(T).unsqueeze(0) < torch.tensor(lengths[:B]).unsqueeze(1)  # (B, T) bool


def _mlm_batch(seed: int = 0, B: int = 3) -> dict[str, torch.Tensor]:
    g = _gen(seed)
    mask = _mask(B)
    ids = torch.randint(5, V, (B, T), generator=g).masked_fill(~mask, 0)
    labels = torch.full((B, T), IGNORE_INDEX)
    pick = (torch.rand(B, T, generator=g) < 0.3) & mask
    pick[:, 1] = True  # at least one prediction per row
    labels[pick] = ids[pick]
    return {"input_ids": ids, "attention_mask": mask.long(), "token_type_ids": torch.zeros_like(ids), "mlm_labels": labels}


def _cls_batch(seed: int = 0, B: int = 3, n_labels: int = 3, token: bool = False) -> dict[str, torch.Tensor]:
    g = _gen(seed)
    mask = _mask(B)
    ids = torch.randint(5, V, (B, T), generator=g).masked_fill(~mask, 0)
    if token:
        labels = torch.randint(0, n_labels, (B, T), generator=g).masked_fill(~mask, IGNORE_INDEX)
        labels[:, ::3] = IGNORE_INDEX  # non-first sub-tokens
    else:
        labels = torch.randint(0, n_labels, (B,), generator=g)
    return {"input_ids": ids, "attention_mask": mask.long(), "token_type_ids": torch.zeros_like(ids), "labels": labels}


# ----------------------------------------------------------------------------- losses
@pytest.mark.parametrize("temp", [1.0, 2.0, 4.5])
def test_kd_loss_matches_reference_value_and_gradient(temp):
    g = _gen()
    s = torch.randn(2, 7, 11, generator=g, requires_grad=True)
    t = torch.randn(2, 7, 11, generator=g, requires_grad=True)
    loss, n = kd_loss(s, t, temp)
    assert n.dtype == torch.int64 and n.item() == 14 and loss.dtype == torch.float32
    s2 = s.detach().clone().requires_grad_(True)
    ref = temp**2 * F.kl_div(F.log_softmax(s2.reshape(-1, 11) / temp, -1), F.softmax(t.detach().reshape(-1, 11) / temp, -1),
                             reduction="sum")
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-5)
    loss.backward()
    ref.backward()
    torch.testing.assert_close(s.grad, s2.grad, atol=1e-6, rtol=1e-5)
    assert t.grad is None  # the teacher side is detached
    # closed form: d/ds = T * (softmax(s/T) - softmax(t/T)) per row
    closed = temp * (F.softmax(s.detach() / temp, -1) - F.softmax(t.detach() / temp, -1))
    torch.testing.assert_close(s.grad, closed, atol=1e-6, rtol=1e-5)


def test_kd_loss_zero_for_identical_logits_and_positive_otherwise():
    x = torch.randn(9, 30, generator=_gen()) * 5
    assert abs(kd_loss(x, x.clone(), 2.0)[0].item()) < 1e-5
    assert kd_loss(x, torch.randn(9, 30, generator=_gen(1)), 2.0)[0].item() > 1.0
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(x, x, 0.0)
    with pytest.raises(ValueError, match="shapes differ"):
        kd_loss(x, x[:, :5], 1.0)


def test_kd_loss_upcasts_bf16():
    x = torch.randn(4, 20, generator=_gen())
    y = torch.randn(4, 20, generator=_gen(1))
    loss, _ = kd_loss(x.bfloat16(), y.bfloat16(), 2.0)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, kd_loss(x.bfloat16().float(), y.bfloat16().float(), 2.0)[0])


def test_cosine_loss_ignores_padding_and_checks_widths():
    g = _gen()
    hs, ht = torch.randn(3, T, 8, generator=g), torch.randn(3, T, 8, generator=g)
    mask = _mask()
    loss, n = cosine_loss(hs, ht, mask)
    assert n.item() == 12 + 9 + 5
    ref = (1 - F.cosine_similarity(hs[mask], ht[mask], dim=-1)).sum()
    torch.testing.assert_close(loss, ref)
    hs2, ht2 = hs.clone(), ht.clone()
    hs2[~mask] = torch.randn(int((~mask).sum()), 8, generator=g) * 100
    ht2[~mask] = float("nan")
    torch.testing.assert_close(cosine_loss(hs2, ht2, mask)[0], loss)
    assert cosine_loss(hs, hs * 3.0, mask)[0].abs().item() < 1e-5  # scale-invariant: aligned states cost 0
    with pytest.raises(ValueError, match="16.*8|student width 16 vs teacher width 8"):
        cosine_loss(torch.randn(3, T, 16), ht, mask)


def test_hidden_mse_is_per_position_mean_over_channels():
    g = _gen()
    hs, ht = torch.randn(3, T, 8, generator=g), torch.randn(3, T, 8, generator=g)
    mask = _mask()
    loss, n = hidden_mse(hs, ht, mask)
    assert n.item() == 26
    torch.testing.assert_close(loss / n, F.mse_loss(hs[mask], ht[mask]))
    hs[~mask] = 1e6
    torch.testing.assert_close(hidden_mse(hs, ht, mask)[0], loss)
    assert hidden_mse(ht, ht, None)[1].item() == 3 * T


def _probs(B, H, mask, g):
    scores = torch.randn(B, H, T, T, generator=g).masked_fill(~mask.view(B, 1, 1, T), float("-inf"))
    return scores.softmax(-1)


def test_attention_mse_normalisation_and_head_averaging():
    g = _gen()
    mask = _mask()
    ps, pt = _probs(3, 4, mask, g), _probs(3, 4, mask, g)
    loss, n = attention_mse(ps, pt, mask)
    assert n.item() == 4 * 26  # (head, real query) rows
    lengths = mask.sum(1)
    ref = sum(((ps[b, :, :L, :L] - pt[b, :, :L, :L]) ** 2).mean(-1).sum() for b, L in enumerate(lengths.tolist()))
    torch.testing.assert_close(loss, ref)
    assert attention_mse(pt, pt, mask)[0].item() == 0.0
    # different head counts: both sides averaged over heads first
    pt2 = _probs(3, 2, mask, g)
    loss2, n2 = attention_mse(ps, pt2, mask)
    assert n2.item() == 26
    torch.testing.assert_close(loss2, attention_mse(ps.mean(1, keepdim=True), pt2.mean(1, keepdim=True), mask)[0])


def test_layer_maps():
    assert layer_map(2, 4) == [1, 3]
    assert layer_map(4, 12) == [2, 5, 8, 11]
    assert layer_map(3, 3) == [0, 1, 2]
    assert every_other_layer(6, 12) == [0, 2, 4, 6, 8, 10]
    assert every_other_layer(2, 4) == [0, 2]
    for fn in (layer_map, every_other_layer):
        with pytest.raises(ValueError, match="deeper"):
            fn(5, 4)
        with pytest.raises(ValueError, match="positive"):
            fn(0, 4)


# ----------------------------------------------------------------------------- activation capture
def test_activation_capture_matches_manual_run_and_removes_hooks():
    torch.manual_seed(0)
    model = BertForPreTraining(_cfg(dropout=0.1, attn_dropout=0.1)).eval()
    batch = _mlm_batch()
    mask = batch["attention_mask"].bool()
    blocks = model.bert.blocks
    with ActivationCapture(blocks, attention=True) as cap:
        model(batch["input_ids"], token_type_ids=batch["token_type_ids"], attention_mask=batch["attention_mask"])
    with torch.no_grad():
        x = model.bert.embeddings(batch["input_ids"], token_type_ids=batch["token_type_ids"])
        torch.testing.assert_close(cap.embeddings, x)
        assert len(cap.hidden) == len(cap.attentions) == 2
        for i, block in enumerate(blocks):
            probs = cap.attentions[i]
            assert probs.shape == (3, 4, T, T) and probs.dtype == torch.float32
            torch.testing.assert_close(probs.sum(-1), torch.ones(3, 4, T))
            assert probs.masked_select(~mask.view(3, 1, 1, T)).abs().max().item() == 0.0
            # the probabilities reproduce the block's attention output: out_proj(probs @ v)
            attn = block.attn
            v = attn.v_proj(x).view(3, T, 4, 8).transpose(1, 2)  # (B, H, T, Dh)
            y = attn.out_proj((probs @ v).transpose(1, 2).reshape(3, T, 32))
            torch.testing.assert_close(y, attn(x, key_padding_mask=mask), atol=1e-5, rtol=1e-4)
            x = block(x, key_padding_mask=mask)
            torch.testing.assert_close(cap.hidden[i], x)
    model(batch["input_ids"], attention_mask=batch["attention_mask"])  # after exit: nothing recorded
    assert len(cap.hidden) == 2 and len(cap.attentions) == 2
    assert all(not b._forward_hooks and not b._forward_pre_hooks and not b.attn._forward_pre_hooks for b in blocks)
    cap.clear()
    assert cap.hidden == [] and cap.attentions == [] and cap.embeddings is None


def test_activation_capture_positional_and_causal_calls():
    torch.manual_seed(0)
    block = BertForPreTraining(_cfg()).bert.blocks[0].eval()
    x = torch.randn(3, T, 32, generator=_gen())
    mask = _mask()
    with ActivationCapture([block], attention=True) as cap:
        block.attn(x, mask, True)  # positional key_padding_mask, is_causal
        block.attn(x, key_padding_mask=mask, is_causal=True)
    a, b = cap.attentions
    torch.testing.assert_close(a, b)
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    assert a[:, :, future].abs().max().item() == 0.0
    assert a.masked_select(~mask.view(3, 1, 1, T)).abs().max().item() == 0.0
    torch.testing.assert_close(a.sum(-1), torch.ones(3, 4, T))


# ----------------------------------------------------------------------------- student init
def test_init_student_from_teacher_copies_every_other_layer_and_keeps_ties():
    torch.manual_seed(0)
    teacher = BertForPreTraining(_cfg(n_layers=4))
    student = BertForPreTraining(_cfg(n_layers=2))
    report = init_student_from_teacher(student, teacher)
    assert report["skipped"] == []
    s, t = student.state_dict(), teacher.state_dict()
    assert not torch.equal(s["bert.blocks.1.attn.q_proj.weight"], t["bert.blocks.1.attn.q_proj.weight"])
    for k in s:  # student block 1 <- teacher block 2; block 0, embeddings and heads <- the same key
        assert torch.equal(s[k], t[k.replace(".blocks.1.", ".blocks.2.")]), k
    assert "bert.embeddings.word_embeddings.weight" in report["copied"]
    assert student.mlm_head.decoder.weight is student.bert.embeddings.word_embeddings.weight
    # the student still trains on its own storage: a step moves only the student
    before = teacher.bert.blocks[2].attn.q_proj.weight.clone()
    with torch.no_grad():
        student.bert.blocks[1].attn.q_proj.weight.add_(1.0)
    assert torch.equal(teacher.bert.blocks[2].attn.q_proj.weight, before)


def test_init_student_from_teacher_skips_mismatched_shapes():
    torch.manual_seed(0)
    teacher = BertForPreTraining(_cfg(n_layers=4, d_model=64, d_ff=128))
    student = BertForPreTraining(_cfg(n_layers=2, d_model=32, d_ff=64))
    init = copy.deepcopy(student.state_dict())
    report = init_student_from_teacher(student, teacher)
    assert "bert.blocks.1.ffn.fc_in.weight (shape (64, 32) vs teacher (128, 64))" in report["skipped"]
    s, t = student.state_dict(), teacher.state_dict()
    for k, v in s.items():
        if k in report["copied"]:
            assert v.shape == t[k.replace(".blocks.1.", ".blocks.2.")].shape
        else:
            assert torch.equal(v, init[k]), k
    skipped_keys = {x.split(" ")[0] for x in report["skipped"]}
    assert "bert.embeddings.word_embeddings.weight" in skipped_keys
    assert set(report["copied"]) | skipped_keys == set(s)
    with pytest.raises(ValueError, match="deeper"):
        init_student_from_teacher(BertForPreTraining(_cfg(n_layers=4)), BertForPreTraining(_cfg(n_layers=2)))


# ----------------------------------------------------------------------------- the objective
def test_objective_validates_arguments():
    teacher = BertForPreTraining(_cfg())
    with pytest.raises(ValueError, match="kind"):
        DistillationObjective(teacher, "seq2seq", weights={"kd": 1})
    with pytest.raises(ValueError, match="temperature"):
        DistillationObjective(teacher, "mlm", weights={"kd": 1}, temperature=0)
    with pytest.raises(ValueError, match="allowed.*'kd'"):
        DistillationObjective(teacher, "mlm", weights={"kd": 1, "mse": 1})
    with pytest.raises(ValueError, match="student_blocks"):
        DistillationObjective(teacher, "mlm", weights={"hidden": 1})
    with pytest.raises(ValueError, match="widths"):
        DistillationObjective(teacher, "mlm", weights={"cos": 1}, student_width=16, teacher_width=32)
    obj = DistillationObjective(teacher, "mlm", weights={"student": 2, "cos": 0, "kd": 1})
    assert obj.terms == obj.val_terms == ("kd", "student")


def test_mlm_distillation_terms_gradients_and_frozen_teacher():
    torch.manual_seed(0)
    teacher = BertForPreTraining(_cfg(n_layers=4))
    student = BertForPreTraining(_cfg(n_layers=2))
    obj = DistillationObjective(teacher, "mlm", weights={"kd": 1, "student": 1, "cos": 1})
    assert list(obj.parameters()) == [] and obj.state_dict() == {}
    obj.double()  # .to() of the objective leaves the teacher alone
    assert all(p.dtype == torch.float32 for p in teacher.parameters())
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    batch = _mlm_batch()
    out = obj(student.train(), batch)
    n_masked = int((batch["mlm_labels"] != IGNORE_INDEX).sum())
    assert set(out.terms) == {"kd", "student", "cos"}
    assert out.terms["kd"][1].item() == out.terms["student"][1].item() == n_masked
    assert out.terms["cos"][1].item() == 26
    assert torch.isfinite(out.loss) and out.accuracy == {}  # no arg-max in training
    expected = sum(s / n for s, n in out.terms.values())
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.bert.blocks[0].attn.q_proj.weight.grad.abs().sum() > 0
    # eval: student accuracy over the masked rows
    student.eval()
    with torch.no_grad():
        acc = obj(student, batch).accuracy["student"]
    assert acc[1].item() == n_masked
    # the collator's flat-index form gives the same terms
    flat = dict(batch)
    labels = batch["mlm_labels"].reshape(-1)
    flat["mlm_index"] = (labels != IGNORE_INDEX).nonzero().squeeze(1)
    flat["mlm_targets"] = labels[flat["mlm_index"]]
    with torch.no_grad():
        again = obj(student, flat)
    for k in ("kd", "student", "cos"):
        torch.testing.assert_close(again.terms[k][0], obj(student, batch).terms[k][0])


def test_mlm_distillation_of_a_copy_is_zero():
    torch.manual_seed(0)
    teacher = BertForPreTraining(_cfg())
    student = copy.deepcopy(teacher)
    obj = DistillationObjective(teacher, "mlm", weights={"kd": 1, "student": 1, "cos": 1}, temperature=3.0)
    out = obj(student.train(), _mlm_batch())
    assert abs(out.terms["kd"][0].item()) < 1e-4
    assert abs(out.terms["cos"][0].item()) < 1e-4
    assert out.terms["student"][0].item() > 1.0  # the hard-label loss is not


def test_layer_terms_of_a_same_size_copy_are_zero():
    """Equal widths: identity-initialised projections, so a copy of the teacher scores ~0 on
    hidden and attn (layer_map(2, 2) pairs each layer with itself)."""
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(_cfg(), num_labels=3)
    student = copy.deepcopy(teacher)
    obj = DistillationObjective(teacher, "cls", weights={"hidden": 1, "attn": 1, "cos": 1},
                                student_blocks=student.bert.blocks, teacher_blocks=teacher.bert.blocks)
    out = obj(student.eval(), _cls_batch())
    assert out.terms["hidden"][1].item() == 3 * 26 and out.terms["attn"][1].item() == 2 * 4 * 26
    for k in ("hidden", "attn", "cos"):
        assert out.terms[k][0].abs().item() < 1e-6, k
    with torch.no_grad():  # perturb the student: layer 0's MLP (hidden states), layer 1's queries (attention)
        student.bert.blocks[0].ffn.fc_in.weight.add_(torch.randn(64, 32, generator=_gen()))
        student.bert.blocks[1].attn.q_proj.weight.add_(torch.randn(32, 32, generator=_gen(1)))
    moved = obj(student, _cls_batch())
    assert moved.terms["hidden"][0].item() > 1.0 and moved.terms["attn"][0].item() > 1e-2


def test_cls_teacher_cache_and_predictions():
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(_cfg(n_layers=2), num_labels=3)
    student = BertForSequenceClassification(_cfg(n_layers=1), num_labels=3)
    obj = DistillationObjective(teacher, "cls", weights={"kd": 1, "student": 0.5})
    batch = _cls_batch()
    first = obj(student, batch)
    assert obj.teacher_calls == 1 and obj.cache_hits == 0
    second = obj(student, {k: v.clone() for k, v in batch.items()})
    assert obj.teacher_calls == 1 and obj.cache_hits == 3
    torch.testing.assert_close(first.terms["kd"][0], second.terms["kd"][0])
    # the cached logits are the teacher's own
    with torch.no_grad():
        direct = teacher(batch["input_ids"], token_type_ids=batch["token_type_ids"],
                         attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(obj.teacher_logits_for(batch), direct, atol=1e-6, rtol=1e-5)
    assert obj.teacher_calls == 1 and obj.cache_hits == 6
    # more padding leaves an example's key alone; a changed example runs the teacher on that row only
    wider = {k: F.pad(v, (0, 3)) if v.dim() == 2 else v for k, v in batch.items()}  # (B, T + 3), 0 = padding
    wider["input_ids"][0, 0] = 7 if wider["input_ids"][0, 0] != 7 else 8
    wide_out = obj(student, wider)
    assert obj.teacher_calls == 2 and obj.cache_hits == 6 + 2
    with torch.no_grad():
        direct = teacher(wider["input_ids"], token_type_ids=wider["token_type_ids"],
                         attention_mask=wider["attention_mask"]).logits
    torch.testing.assert_close(obj.teacher_logits_for(wider), direct, atol=1e-6, rtol=1e-5)
    assert torch.isfinite(wide_out.loss)
    pred, gold = first.predictions["student"]
    assert pred.shape == (3,) and torch.equal(gold, batch["labels"])
    assert first.accuracy["student"][1].item() == 3
    torch.testing.assert_close(first.loss, first.terms["kd"][0] / 3 + 0.5 * first.terms["student"][0] / 3)


def test_token_cls_distillation_with_cache():
    torch.manual_seed(0)
    teacher = BertForTokenClassification(_cfg(), num_labels=4)
    student = BertForTokenClassification(_cfg(n_layers=1), num_labels=4)
    obj = DistillationObjective(teacher, "cls", weights={"kd": 1})
    batch = _cls_batch(token=True, n_labels=4)
    out = obj(student, batch)
    labelled = batch["labels"] != IGNORE_INDEX
    assert out.terms["kd"][1].item() == int(labelled.sum())
    pred, gold = out.predictions["student"]
    assert torch.equal(pred == IGNORE_INDEX, ~labelled)
    again = obj(student, batch)
    assert obj.teacher_calls == 1 and obj.cache_hits == 3
    torch.testing.assert_close(again.terms["kd"][0], out.terms["kd"][0])


def test_cls_hidden_and_attention_terms_train_projections():
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(_cfg(n_layers=4, d_model=32, n_heads=4), num_labels=3)
    student = BertForSequenceClassification(_cfg(n_layers=2, d_model=16, n_heads=2, d_ff=32), num_labels=3)
    obj = DistillationObjective(
        teacher, "cls", weights={"kd": 1, "hidden": 1, "attn": 1},
        student_blocks=student.bert.blocks, teacher_blocks=teacher.bert.blocks,
    )
    assert obj.pairs == [1, 3] and not obj.use_cache
    params = list(obj.parameters())
    assert len(obj.projections) == 3 and len(params) == 6  # embeddings + 2 layer pairs, weight + bias
    assert obj.projections[0].weight.shape == (32, 16)
    assert set(obj.state_dict()) == {f"projections.{i}.{p}" for i in range(3) for p in ("weight", "bias")}
    batch = _cls_batch()
    out = obj(student.train(), batch)
    assert out.terms["hidden"][1].item() == 3 * 26
    assert out.terms["attn"][1].item() == 2 * 26  # head counts differ (2 vs 4): heads averaged, 1 row per query
    out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    assert student.bert.blocks[0].attn.k_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    assert obj.teacher_calls == 1
    with pytest.raises(ValueError, match="student_blocks"):
        obj(BertForSequenceClassification(_cfg(n_layers=2, d_model=16, n_heads=2, d_ff=32), num_labels=3), batch)


def test_kd_training_reduces_kd_loss():
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(_cfg(n_layers=2), num_labels=5)
    with torch.no_grad():  # a teacher with confident, input-dependent outputs
        teacher.classifier.weight.mul_(200.0)
    student = BertForSequenceClassification(_cfg(n_layers=1), num_labels=5)
    obj = DistillationObjective(teacher, "cls", weights={"kd": 1}, temperature=2.0)
    g = _gen(1)
    batch = {
        "input_ids": torch.randint(5, V, (16, T), generator=g),
        "attention_mask": torch.ones(16, T, dtype=torch.long),
        "labels": torch.randint(0, 5, (16,), generator=g),
    }
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        out = obj(student.train(), batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[0] > 0.3, losses[0]
    assert losses[-1] < 0.3 * losses[0], (losses[0], losses[-1])
    assert obj.teacher_calls == 1 and obj.cache_hits == 59 * 16


def test_distill_imports_only_torch():
    code = ("import sys, lit_tf.objectives.distill; "
            "bad = [m for m in ('lightning', 'pytorch_lightning', 'hydra', 'mlflow', 'optuna', 'torchmetrics') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr

