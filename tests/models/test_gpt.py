"""Behavioural tests for the GPT model and generation (tiny sizes, CPU, seconds)."""

import math

import pytest
import torch
import torch.nn.functional as F

from lit_tf.models.generation import filter_logits, generate
from lit_tf.models.gpt import GPTConfig, GPTForCausalLM, GPTModel
from lit_tf.models.outputs import CausalLMOutput

VOCAB = 50
NEG_INF = float("-inf")


def tiny_cfg(**overrides) -> GPTConfig:
    kw = {"vocab_size": VOCAB, "d_model": 32, "n_layers": 2, "n_heads": 4, "d_ff": 64, "max_seq_len": 16}
    kw.update(overrides)
    return GPTConfig(**kw)


def tiny_lm(seed: int = 0, **overrides) -> GPTForCausalLM:
    torch.manual_seed(seed)
    return GPTForCausalLM(tiny_cfg(**overrides)).eval()


def random_ids(B: int, T: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(1, VOCAB, (B, T), generator=gen)  # never the pad id 0


# ----------------------------------------------------------------------------- config


def test_config_validation_and_dict_round_trip():
    cfg = tiny_cfg(bias=False)
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="n_embd.*valid fields.*d_model"):
        GPTConfig.from_dict({"vocab_size": VOCAB, "n_embd": 32})
    with pytest.raises(ValueError, match="vocab_size"):
        GPTConfig.from_dict({"d_model": 32})
    with pytest.raises(ValueError, match="divisible"):
        tiny_cfg(n_heads=5)
    with pytest.raises(ValueError, match="GPTConfig.dropout"):
        tiny_cfg(dropout=1.0)
    with pytest.raises(ValueError, match="GPTConfig.activation"):
        tiny_cfg(activation="relu")
    with pytest.raises(ValueError, match="GPTConfig.pad_id"):
        tiny_cfg(pad_id=VOCAB)


def test_output_shapes_bias_flag_and_length_check():
    model = tiny_lm()
    out = model(torch.ones(2, 7, dtype=torch.long))
    assert isinstance(out, CausalLMOutput)
    assert out.hidden.shape == (2, 7, 32) and out.lm_logits.shape == (2, 7, VOCAB)
    with pytest.raises(ValueError, match="max_seq_len=16"):
        model(torch.ones(1, 17, dtype=torch.long))
    # the backbone alone gives the same final hidden states
    backbone: GPTModel = model.transformer
    torch.testing.assert_close(backbone(torch.ones(2, 7, dtype=torch.long)).hidden, out.hidden)

    no_bias = tiny_lm(bias=False)
    assert not [n for n, _ in no_bias.named_parameters() if n.endswith("bias")]
    assert [n for n, _ in model.named_parameters() if n.endswith("bias")]


# ----------------------------------------------------------------------------- causality


def test_causality():
    model = tiny_lm()
    gen = torch.Generator().manual_seed(0)
    ids = random_ids(1, 10, gen)
    t = 4
    ref = model(ids).lm_logits

    future = ids.clone()
    future[0, t + 1 :] = torch.where(ids[0, t + 1 :] == 1, 2, 1)  # a different token at every future slot
    out = model(future).lm_logits
    torch.testing.assert_close(out[:, : t + 1], ref[:, : t + 1], atol=1e-5, rtol=0)
    assert not torch.allclose(out[:, t + 1 :], ref[:, t + 1 :], atol=1e-3)

    present = ids.clone()
    present[0, t] = 1 if ids[0, t] != 1 else 2
    out = model(present).lm_logits
    torch.testing.assert_close(out[:, :t], ref[:, :t], atol=1e-5, rtol=0)
    assert not torch.allclose(out[:, t], ref[:, t], atol=1e-3)


# ----------------------------------------------------------------------------- KV cache


def test_forward_with_cache_in_chunks_matches_full_forward():
    model = tiny_lm()
    ids = random_ids(2, 11, torch.Generator().manual_seed(1))
    full = model(ids).lm_logits  # (2, 11, V)

    logits_a, kv = model.forward_with_cache(ids[:, :6])
    assert len(kv) == 2 and kv[0][0].shape == (2, 4, 6, 8)
    logits_b, kv = model.forward_with_cache(ids[:, 6:], kv)
    assert kv[0][0].shape == (2, 4, 11, 8)
    torch.testing.assert_close(logits_a, full[:, :6], atol=1e-5, rtol=0)
    torch.testing.assert_close(logits_b, full[:, 6:], atol=1e-5, rtol=0)
    torch.testing.assert_close(logits_b[:, -1], full[:, -1], atol=1e-5, rtol=0)

    with pytest.raises(ValueError, match="max_seq_len"):
        model.forward_with_cache(ids[:, :6], kv)  # 11 + 6 > 16


@pytest.mark.parametrize("max_new_tokens", [8, 14])  # 6 + 14 > max_seq_len=16: the cropped fallback
def test_generate_greedy_cached_equals_uncached(max_new_tokens):
    model = tiny_lm()
    prompt = random_ids(3, 6, torch.Generator().manual_seed(2))
    cached = generate(model, prompt, max_new_tokens, temperature=0, use_cache=True)
    uncached = generate(model, prompt, max_new_tokens, temperature=0, use_cache=False)
    assert cached.shape == (3, 6 + max_new_tokens)
    assert torch.equal(cached[:, :6], prompt)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("max_new_tokens", [8, 14])
def test_generate_sampling_cached_equals_uncached(max_new_tokens):
    model = tiny_lm()
    prompt = random_ids(3, 6, torch.Generator().manual_seed(3))
    kw = {"temperature": 0.8, "top_k": 20, "top_p": 0.9}
    cached = generate(model, prompt, max_new_tokens, generator=torch.Generator().manual_seed(7), **kw)
    uncached = generate(
        model, prompt, max_new_tokens, generator=torch.Generator().manual_seed(7), use_cache=False, **kw
    )
    assert torch.equal(cached, uncached)
    # another seed gives another sample (so the equality above is not trivially true)
    other = generate(model, prompt, max_new_tokens, generator=torch.Generator().manual_seed(8), **kw)
    assert not torch.equal(cached, other)


def test_generate_restores_training_mode():
    model = tiny_lm(dropout=0.5)
    model.train()
    prompt = random_ids(1, 4, torch.Generator().manual_seed(4))
    a = generate(model, prompt, 6, temperature=0)
    assert model.training
    b = generate(model, prompt, 6, temperature=0)
    assert torch.equal(a, b)  # eval mode inside: no dropout noise
    model.eval()
    generate(model, prompt, 2, temperature=0)
    assert not model.training


# ----------------------------------------------------------------------------- filter_logits


def test_filter_logits_top_k():
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0], [0.0, -1.0, 5.0, 5.0]])
    out = filter_logits(logits, top_k=2)
    expected = torch.tensor([[NEG_INF, 4.0, 3.0, NEG_INF], [NEG_INF, NEG_INF, 5.0, 5.0]])
    assert torch.equal(out, expected)
    assert torch.equal(logits[0], torch.tensor([1.0, 4.0, 3.0, 2.0]))  # input untouched
    # a tie at the k-th value keeps every tied token
    tied = torch.tensor([[3.0, 2.0, 2.0, 1.0]])
    assert torch.equal(filter_logits(tied, top_k=2), torch.tensor([[3.0, 2.0, 2.0, NEG_INF]]))
    # k >= V keeps everything
    assert torch.equal(filter_logits(logits, top_k=10), logits)
    with pytest.raises(ValueError, match="top_k"):
        filter_logits(logits, top_k=0)


def test_filter_logits_top_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()

    def kept(p):
        return torch.isfinite(filter_logits(logits, top_p=p))[0].tolist()

    assert kept(0.5) == [True, False, False, False]  # 0.5 >= 0.5 already
    assert kept(0.51) == [True, True, False, False]
    assert kept(0.8) == [True, True, False, False]
    assert kept(0.81) == [True, True, True, False]
    assert kept(1.0) == [True, True, True, True]
    assert kept(1e-6) == [True, False, False, False]  # tiny top_p keeps exactly the top-1
    # kept logits are unchanged
    out = filter_logits(logits, top_p=0.8)
    torch.testing.assert_close(out[0, :2], logits[0, :2])

    # a tie at the boundary keeps both tied tokens (order-independent)
    tied = torch.tensor([[0.4, 0.3, 0.3]]).log()
    assert torch.isfinite(filter_logits(tied, top_p=0.5))[0].tolist() == [True, True, True]
    assert torch.isfinite(filter_logits(tied, top_p=0.4))[0].tolist() == [True, False, False]

    # top-k then top-p: top_k=3 renormalises to 0.5/0.3/0.15 -> p=0.9 keeps 3 (0.8/0.95 < 0.9)
    both = filter_logits(logits, top_k=3, top_p=0.85)
    assert torch.isfinite(both)[0].tolist() == [True, True, True, False]
    with pytest.raises(ValueError, match="top_p"):
        filter_logits(logits, top_p=0.0)


# ----------------------------------------------------------------------------- init and tying


def test_scaled_residual_init():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=VOCAB, d_model=64, n_layers=4, n_heads=4, d_ff=256, max_seq_len=16)
    model = GPTForCausalLM(cfg)
    residual_std = cfg.init_std / math.sqrt(2 * cfg.n_layers)

    residual, other = [], []
    for name, p in model.named_parameters():
        if not name.endswith("weight") or p.dim() != 2 or "wte" in name or "wpe" in name:
            continue
        (residual if ("out_proj" in name or "fc_out" in name) else other).append((name, p))
    assert len(residual) == 2 * cfg.n_layers and len(other) == 4 * cfg.n_layers  # q, k, v, fc_in

    for name, p in residual:
        assert abs(p.std().item() / residual_std - 1) < 0.15, name
    for name, p in other:
        assert abs(p.std().item() / cfg.init_std - 1) < 0.15, name
    for emb in (model.transformer.wte, model.transformer.wpe):
        assert abs(emb.weight.std().item() / cfg.init_std - 1) < 0.15
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            assert torch.count_nonzero(p) == 0, name
        if "ln" in name and name.endswith("weight"):
            assert torch.all(p == 1), name


def test_tied_weights_share_storage_and_get_lm_head_gradient():
    model = tiny_lm()
    wte = model.transformer.wte.weight
    assert model.lm_head.weight is wte
    assert model.lm_head.weight.data_ptr() == wte.data_ptr()

    ids = torch.tensor([[1, 2, 3, 4]])
    model(ids).lm_logits[..., 40].sum().backward()
    # token 40 never appears in the input, so its row's gradient can only come through lm_head
    assert wte.grad is not None and wte.grad[40].abs().sum() > 0
    assert wte.grad[30].abs().sum() == 0  # not an input token and not a scored logit

    n_unique = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    assert model.num_parameters() == n_unique
    all_tensors = sum(p.numel() for p in model.state_dict().values() if p.dtype.is_floating_point)
    assert model.num_parameters() == all_tensors - wte.numel()  # state_dict lists the tied weight twice
    emb = wte.numel() + model.transformer.wpe.weight.numel()
    assert model.num_parameters(exclude_embeddings=True) == n_unique - emb


# ----------------------------------------------------------------------------- padding


def test_right_padding_matches_unpadded():
    model = tiny_lm()
    gen = torch.Generator().manual_seed(5)
    short = random_ids(1, 5, gen)
    other = random_ids(1, 12, gen)
    ref = model(short).lm_logits  # (1, 5, V)

    batch = torch.zeros(2, 12, dtype=torch.long)
    batch[0, :5] = short[0]
    batch[0, 5:] = random_ids(1, 7, gen)[0]  # junk in the pad slots
    batch[1] = other[0]
    mask = torch.zeros(2, 12, dtype=torch.long)
    mask[0, :5] = 1
    mask[1] = 1
    out = model(batch, attention_mask=mask).lm_logits
    torch.testing.assert_close(out[0, :5], ref[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], model(other).lm_logits[0], atol=1e-5, rtol=0)
    assert torch.isfinite(out).all()


def test_left_padding_with_mask_and_position_ids_matches_unpadded():
    model = tiny_lm()
    short = random_ids(1, 5, torch.Generator().manual_seed(6))
    ref = model(short).lm_logits
    batch = torch.cat([torch.zeros(1, 3, dtype=torch.long), short], dim=1)  # (1, 8), 3 pads on the left
    mask = (batch != 0).long()
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(batch, attention_mask=mask, position_ids=pos).lm_logits
    assert torch.isfinite(out).all()  # all-pad query rows do not produce NaN
    torch.testing.assert_close(out[0, 3:], ref[0], atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- eos


class ScriptedLM(GPTForCausalLM):
    """A real GPT whose last-position logits are overridden: row b emits token 7 until it has
    generated stop_after[b] tokens, then eos once, then (if generation went on) 7 again."""

    def __init__(self, cfg, prompt_len, stop_after, eos_id):
        super().__init__(cfg)
        self.prompt_len, self.stop_after, self.eos_id = prompt_len, stop_after, eos_id

    def _script(self, logits, length):
        logits = logits.clone()
        logits[:, -1] = 0.0
        for b, stop in enumerate(self.stop_after):
            tok = self.eos_id if length - self.prompt_len == stop else 7
            logits[b, -1, tok] = 100.0
        return logits

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        out = super().forward(input_ids, attention_mask, position_ids)
        return CausalLMOutput(out.hidden, self._script(out.lm_logits, input_ids.shape[1]))

    def forward_with_cache(self, input_ids, past_kv=None):
        logits, kv = super().forward_with_cache(input_ids, past_kv)
        return self._script(logits, kv[0][0].shape[2]), kv


@pytest.mark.parametrize("use_cache", [True, False])
def test_eos_pads_finished_rows_and_stops_early(use_cache):
    torch.manual_seed(0)
    eos = 3
    model = ScriptedLM(tiny_cfg(max_seq_len=32), prompt_len=4, stop_after=[1, 4], eos_id=eos).eval()
    prompt = torch.tensor([[1, 2, 5, 6], [6, 5, 2, 1]])
    out = generate(model, prompt, 20, eos_id=eos, use_cache=use_cache, temperature=0)
    assert out.tolist() == [
        [1, 2, 5, 6, 7, eos, eos, eos, eos],  # the model says 7 after its eos; generation pads with eos
        [6, 5, 2, 1, 7, 7, 7, 7, eos],  # the last row finishes: stop long before 20 new tokens
    ]
    # without eos_id the same model runs to max_new_tokens
    assert generate(model, prompt, 20, use_cache=use_cache, temperature=0).shape == (2, 24)


# ----------------------------------------------------------------------------- learning


def test_tiny_model_overfits_a_fixed_sequence():
    torch.manual_seed(0)
    model = GPTForCausalLM(tiny_cfg(dropout=0.0, attn_dropout=0.0)).train()
    ids = random_ids(1, 16, torch.Generator().manual_seed(9))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss_fn():
        logits = model(ids).lm_logits  # (B, T, V)
        return F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))  # shift here

    first = loss_fn().item()
    for _ in range(60):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    assert loss_fn().item() < 0.5 * first
