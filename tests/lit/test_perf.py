"""Model FLOPs per token (hand count and torch's own FLOP counter), device peaks, the CPU probe cache."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lit_tf.lit.perf import cpu_peak_flops, flops_per_token, gpu_peak_flops
from lit_tf.models import GPTConfig, GPTForCausalLM
from lit_tf.models.bert import BertConfig, BertForPreTraining
from lit_tf.models.layers import KERNELS, set_kernels
from lit_tf.objectives.losses import IGNORE_INDEX
from lit_tf.objectives.pretraining import CausalLMObjective, MaskedLMObjective

BERT_MINI = BertConfig(vocab_size=16000, d_model=256, n_layers=4, n_heads=4, d_ff=1024, max_seq_len=128)


def test_bert_mini_mlm_flops_per_token_by_hand():
    # per layer: q, k, v, out 4 * 256^2 = 262,144 and the MLP 2 * 256 * 1024 = 524,288 weights
    blocks = 4 * (262_144 + 524_288)  # 3,145,728 multiply-adds per token
    attention = 4 * 2 * 128 * 256  # q k^T and probs @ v over 128 positions: 262,144
    head = 0.15 * (256 * 256 + 256 * 16000)  # dense + decoder on the 15% masked tokens: 624,230.4
    by_hand = 3 * 2 * (blocks + attention + head)  # 24,192,614.4: forward x 2 FLOPs, backward twice that
    got = flops_per_token("bert", BERT_MINI, {"name": "mlm", "mlm_probability": 0.15}, seq_len=128)
    assert got == pytest.approx(by_hand, rel=1e-12)
    # NSP adds its pooler and classifier once per 128-token sequence
    nsp = flops_per_token("bert", BERT_MINI, {"name": "mlm_nsp", "nsp": True, "mlm_probability": 0.15}, seq_len=128)
    assert nsp - got == pytest.approx(6 * (256 * 256 + 2 * 256) / 128)
    # a GPT head scores every position: d * V weights per token
    gpt = GPTConfig(vocab_size=16000, d_model=256, n_layers=4, n_heads=4, d_ff=1024, max_seq_len=256)
    assert flops_per_token("gpt", gpt, {"name": "clm"}, seq_len=256) == pytest.approx(
        6 * (blocks + 4 * 2 * 256 * 256 + 256 * 16000))


@pytest.fixture
def countable_attention():
    """torch's FLOP counter knows no CPU flash-attention kernel: spell attention out as matmuls."""
    saved = KERNELS.attention
    set_kernels(attention="math")
    yield
    set_kernels(attention=saved)


def _counted_train_flops(step) -> int:
    # the fused loss accumulates the head's weight gradient with an in-place addmm_, which the
    # counter does not list by default; it costs what addmm costs
    def addmm_(bias_shape, a_shape, b_shape, out_shape=None, **kwargs) -> int:
        return 2 * a_shape[0] * a_shape[1] * b_shape[1]

    with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm_: addmm_}) as counter:
        step()
    return counter.get_total_flops()


def test_bert_formula_matches_torch_flop_counter_on_a_real_step(countable_attention):
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=3000, d_model=64, n_layers=2, n_heads=4, d_ff=256, max_seq_len=64, dropout=0.0,
                     attn_dropout=0.0)
    model = BertForPreTraining(cfg, nsp=False)
    B, T = 8, 64
    ids = torch.randint(5, 3000, (B, T))
    labels = torch.full((B, T), IGNORE_INDEX)
    masked = torch.rand(B, T) < 0.15
    labels[masked] = ids[masked]
    batch = {"input_ids": ids, "attention_mask": torch.ones(B, T, dtype=torch.bool), "mlm_labels": labels}
    counted = _counted_train_flops(lambda: MaskedLMObjective(nsp=False, weights={"mlm": 1.0})(model, batch).loss.backward())
    share = masked.float().mean().item()  # the real masked share of this batch
    expected = flops_per_token("bert", cfg, {"name": "mlm", "mlm_probability": share}, seq_len=T) * B * T
    assert counted == pytest.approx(expected, rel=0.01)


def test_gpt_formula_matches_torch_flop_counter_with_the_fused_loss(countable_attention):
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=2000, d_model=64, n_layers=2, n_heads=4, d_ff=256, max_seq_len=32, dropout=0.0,
                    attn_dropout=0.0)
    model = GPTForCausalLM(cfg)
    B, T = 4, 32
    ids = torch.randint(0, 2000, (B, T))
    batch = {"input_ids": ids, "attention_mask": torch.ones(B, T, dtype=torch.bool), "labels": ids, "no_padding": True}
    counted = _counted_train_flops(lambda: CausalLMObjective(fused_loss=True)(model, batch).loss.backward())
    assert counted == pytest.approx(flops_per_token("gpt", cfg, {"name": "clm"}, seq_len=T) * B * T, rel=0.01)


def test_gpu_peak_table():
    assert gpu_peak_flops("NVIDIA H100 80GB HBM3", "bf16-mixed") == pytest.approx(989.4e12)
    assert gpu_peak_flops("NVIDIA H100 PCIe", "bf16-mixed") == pytest.approx(756.5e12)
    assert gpu_peak_flops("NVIDIA H200", "bf16-true") == pytest.approx(989.4e12)
    prev = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        assert gpu_peak_flops("NVIDIA A100-SXM4-80GB", "32-true") == pytest.approx(156e12)
        torch.set_float32_matmul_precision("highest")
        assert gpu_peak_flops("NVIDIA A100-SXM4-80GB", "32-true") == pytest.approx(19.5e12)
    finally:
        torch.set_float32_matmul_precision(prev)
    assert gpu_peak_flops("Tesla T4", "bf16-mixed") is None


def test_cpu_peak_is_probed_once_and_cached(tmp_path):
    rng = torch.get_rng_state()
    peak, source = cpu_peak_flops(tmp_path)
    # the probe leaves the global generator alone: with it, a run that probes and a resumed run that
    # reads the cache drew different dropout masks (resume was no longer the uninterrupted run)
    assert torch.equal(torch.get_rng_state(), rng)
    assert peak > 1e9 and source == "cpu matmul probe"
    again, source = cpu_peak_flops(tmp_path)
    assert again == peak and source == "cpu matmul probe (cached)"
