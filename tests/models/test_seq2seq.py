"""Behavioural tests for the encoder-decoder family (tiny sizes, CPU, seconds)."""

from __future__ import annotations

import pytest
import torch

from lit_tf.models.layers import MultiHeadAttention
from lit_tf.models.outputs import Seq2SeqOutput
from lit_tf.models.seq2seq import (
    DecoderBlock,
    EncoderBlock,
    Seq2SeqBlock,
    Seq2SeqConfig,
    Seq2SeqModel,
    init_from_xlm,
    select_cache,
)
from lit_tf.models.xlm import XLMConfig, XLMForPreTraining

VOCAB = 40


def tiny_cfg(**overrides) -> Seq2SeqConfig:
    kw = dict(vocab_size=VOCAB, d_model=32, n_layers=2, n_decoder_layers=3, n_heads=4, d_ff=64, max_seq_len=16,
              dropout=0.0, attn_dropout=0.0)
    kw.update(overrides)
    return Seq2SeqConfig(**kw)


def perturbed(model: torch.nn.Module, seed: int = 1, scale: float = 0.05) -> torch.nn.Module:
    """Random values everywhere (zero biases / identity LayerNorms would hide wiring mistakes)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return model.eval()


def model_for(seed: int = 0, **overrides) -> Seq2SeqModel:
    torch.manual_seed(seed)
    return perturbed(Seq2SeqModel(tiny_cfg(**overrides)), seed=seed + 1)


def batch(B: int = 3, S: int = 9, T: int = 7, seed: int = 0, vocab: int = VOCAB):
    """Sources right-padded to different lengths (mask), targets starting at bos = 2."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(4, vocab, (B, S), generator=gen)
    mask = torch.ones(B, S, dtype=torch.bool)
    for b in range(1, B):
        mask[b, S - 2 * b:] = False
    src = src.masked_fill(~mask, 0)
    dec = torch.randint(4, vocab, (B, T), generator=gen)
    dec[:, 0] = 2
    return src, mask, dec


BOTH_LAYOUTS = pytest.mark.parametrize("pre_ln", [True, False], ids=["pre_ln", "post_ln"])


# ----------------------------------------------------------------------------- config


def test_config_roundtrip_and_validation():
    cfg = tiny_cfg(n_langs=2, src_lang_id=1)
    assert Seq2SeqConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.decoder_layers == 3 and tiny_cfg(n_decoder_layers=None).decoder_layers == 2
    assert cfg.target_vocab_size == VOCAB and tiny_cfg(tgt_vocab_size=7).target_vocab_size == 7
    with pytest.raises(ValueError, match="unknown Seq2SeqConfig field 'n_layer'"):
        Seq2SeqConfig.from_dict({"vocab_size": 10, "n_layer": 2})
    cases = {
        "src_lang_id": dict(n_langs=2, src_lang_id=2),
        "tgt_lang_id": dict(n_langs=2, tgt_lang_id=-1),
        "n_langs": dict(n_langs=-1),
        "bos_id": dict(bos_id=VOCAB),
        "eos_id": dict(tgt_vocab_size=3, eos_id=3),  # in the source vocabulary, not in the target one
        "tgt_vocab_size": dict(tgt_vocab_size=0),
        "n_decoder_layers": dict(n_decoder_layers=0),
        "divisible": dict(n_heads=5),
        "dropout": dict(dropout=1.0),
        "activation": dict(activation="relu"),
    }
    for match, bad in cases.items():
        with pytest.raises(ValueError, match=match):
            tiny_cfg(**bad)
    with pytest.raises(ValueError, match="src_lang_id=1 needs language embeddings"):
        tiny_cfg(src_lang_id=1)  # n_langs=0: a language id would be silently ignored
    with pytest.raises(TypeError, match="pre_ln"):
        tiny_cfg(pre_ln="yes")


# ----------------------------------------------------------------------------- forward


@BOTH_LAYOUTS
def test_shapes_and_target_positions(pre_ln):
    model = model_for(pre_ln=pre_ln)
    src, mask, dec = batch()
    out = model(src, dec, attention_mask=mask)
    assert isinstance(out, Seq2SeqOutput)
    assert out.hidden.shape == (3, 7, 32) and out.encoder_hidden.shape == (3, 9, 32)
    assert out.lm_logits.shape == (3, 7, VOCAB)
    assert (model.encoder.norm is not None) == pre_ln and (model.decoder.norm is not None) == pre_ln
    positions = torch.zeros(3, 7, dtype=torch.bool)
    positions[0, 1], positions[2, 4], positions[2, 6] = True, True, True
    picked = model(src, dec, attention_mask=mask, target_positions=positions).lm_logits
    assert picked.shape == (3, VOCAB)
    torch.testing.assert_close(picked, out.lm_logits[positions])
    flat = model(src, dec, attention_mask=mask, target_positions=positions.flatten().nonzero().squeeze(1)).lm_logits
    torch.testing.assert_close(flat, picked)


@BOTH_LAYOUTS
def test_padding_invariance(pre_ln):
    """A source padded longer gives the same logits (and encoder states) at its real positions."""
    model = model_for(pre_ln=pre_ln)
    src, mask, dec = batch(B=1, S=6)
    padded = torch.cat([src, torch.zeros(1, 5, dtype=torch.long)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(1, 5, dtype=torch.bool)], dim=1)
    short = model(src, dec, attention_mask=mask)
    long = model(padded, dec, attention_mask=padded_mask)
    torch.testing.assert_close(long.lm_logits, short.lm_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(long.encoder_hidden[:, :6], short.encoder_hidden, atol=1e-5, rtol=0)
    # without the mask the padding is attended to and the logits change: the test can fail
    unmasked = model(padded, dec)
    assert (unmasked.lm_logits - short.lm_logits).abs().max() > 1e-3


@BOTH_LAYOUTS
def test_decoder_is_causal(pre_ln):
    model = model_for(pre_ln=pre_ln)
    src, mask, dec = batch()
    changed = dec.clone()
    changed[:, 4] = (changed[:, 4] + 1) % VOCAB
    a = model(src, dec, attention_mask=mask).lm_logits
    b = model(src, changed, attention_mask=mask).lm_logits
    torch.testing.assert_close(a[:, :4], b[:, :4], atol=0, rtol=0)
    assert (a[:, 4:] - b[:, 4:]).abs().max() > 1e-4


def test_decoder_attention_mask_hides_padded_targets():
    model = model_for()
    src, mask, dec = batch(B=2)
    dec_mask = torch.ones_like(dec, dtype=torch.bool)
    dec_mask[1, 5:] = False
    a = model(src, dec, attention_mask=mask, decoder_attention_mask=dec_mask).lm_logits
    b = model(src, dec, attention_mask=mask).lm_logits
    torch.testing.assert_close(a[1, :5], b[1, :5], atol=1e-6, rtol=0)  # right padding: causal already hides it


# ----------------------------------------------------------------------------- incremental decoding


@pytest.mark.parametrize("pre_ln,n_langs", [(True, 0), (False, 0), (False, 3)], ids=["pre_ln", "post_ln", "langs"])
def test_cached_decode_step_equals_full_forward(pre_ln, n_langs):
    model = model_for(pre_ln=pre_ln, n_langs=n_langs, src_lang_id=n_langs - 1 if n_langs else 0,
                      tgt_lang_id=1 if n_langs else 0)
    src, mask, dec = batch()
    full = model(src, dec, attention_mask=mask).lm_logits  # (B, T, V)
    memory_kv = model.cross_kv(model.encode(src, mask))
    past, steps = None, []
    for t in range(dec.shape[1]):  # token by token
        logits, past = model.decode_step(dec[:, t : t + 1], memory_kv, mask, past)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
    assert past[0][0].shape == (3, 4, 7, 8)  # (B, H, T, Dh)
    # a prefix of 3 tokens at once, then the rest one by one
    logits, past = model.decode_step(dec[:, :3], memory_kv, mask, None)
    torch.testing.assert_close(logits, full[:, :3], atol=1e-5, rtol=0)
    logits, past = model.decode_step(dec[:, 3:], memory_kv, mask, past)
    torch.testing.assert_close(logits, full[:, 3:], atol=1e-5, rtol=0)


def test_cross_kv_is_computed_once_per_source():
    """decode_step never projects the encoder output again: the cross-attention k/v projections run
    once per decoder block in cross_kv, and not at all in any decoding step."""
    model = model_for()
    src, mask, dec = batch()
    calls = {"k": 0, "v": 0, "q": 0}
    hooks = []
    for block in model.decoder.blocks:
        for name in calls:
            proj = getattr(block.cross_attn, f"{name}_proj")
            hooks.append(proj.register_forward_hook(lambda *_, n=name: calls.__setitem__(n, calls[n] + 1)))
    memory_kv = model.cross_kv(model.encode(src, mask))
    assert calls == {"k": 3, "v": 3, "q": 0}
    past = None
    for t in range(4):
        _, past = model.decode_step(dec[:, t : t + 1], memory_kv, mask, past)
    assert calls == {"k": 3, "v": 3, "q": 12}  # queries per step and block; no new keys/values
    for h in hooks:
        h.remove()


def test_select_cache_reorders_rows():
    model = model_for()
    src, mask, dec = batch()
    memory_kv = model.cross_kv(model.encode(src, mask))
    _, past = model.decode_step(dec[:, :2], memory_kv, mask, None)
    index = torch.tensor([2, 0, 0])
    moved = Seq2SeqModel.reorder_cache(past, index)
    for (k, v), (k2, v2) in zip(past, moved):
        assert torch.equal(k2[0], k[2]) and torch.equal(v2[1], v[0]) and torch.equal(v2[2], v[0])
    # continuing the reordered caches equals decoding the reordered batch
    logits, _ = model.decode_step(dec[index, 2:3], select_cache(memory_kv, index), mask[index], moved)
    expected = model(src[index], dec[index, :3], attention_mask=mask[index]).lm_logits[:, 2:3]
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)


def test_decode_step_checks_lengths():
    model = model_for()
    src, mask, _ = batch()
    memory_kv = model.cross_kv(model.encode(src, mask))
    with pytest.raises(ValueError, match="max_seq_len=16"):
        model.decode_step(torch.full((3, 17), 2), memory_kv, mask)
    with pytest.raises(ValueError, match="one entry per decoder block"):
        model.decode_step(torch.full((3, 1), 2), memory_kv[:1], mask)


# ----------------------------------------------------------------------------- weights


def test_tied_output_weights_and_parameter_count():
    model = model_for()
    assert model.target_embeddings is model.embed_tokens and model.decoder_embed_tokens is None
    src, mask, dec = batch()
    out = model(src, dec, attention_mask=mask)
    expected = out.hidden @ model.embed_tokens.weight.T + model.final_logits_bias
    torch.testing.assert_close(out.lm_logits, expected)
    model.zero_grad()
    out.lm_logits.sum().backward()
    assert model.embed_tokens.weight.grad is not None and model.final_logits_bias.grad is not None
    n = sum(p.numel() for p in model.parameters())
    assert model.num_parameters() == n
    tables = VOCAB * 32 + 2 * 16 * 32  # tokens + both position tables
    assert model.num_parameters(exclude_embeddings=True) == n - tables


def test_fresh_init_policy():
    cfg = tiny_cfg(n_langs=2, init_std=0.02)
    model = Seq2SeqModel(cfg)
    assert torch.count_nonzero(model.embed_tokens.weight[cfg.pad_id]) == 0
    assert torch.count_nonzero(model.final_logits_bias) == 0
    block = model.decoder.blocks[0]
    assert torch.count_nonzero(block.cross_attn.q_proj.bias) == 0
    assert torch.equal(block.cross_attn_norm.weight, torch.ones(32))
    assert 0.01 < float(block.ffn.fc_in.weight.detach().std()) < 0.03


def test_separate_target_vocabulary():
    model = model_for(tgt_vocab_size=11)
    assert model.decoder_embed_tokens is not None and model.target_embeddings is model.decoder_embed_tokens
    assert model.final_logits_bias.shape == (11,)
    src, mask, _ = batch()
    dec = torch.randint(4, 11, (3, 5))
    dec[:, 0] = 2
    out = model(src, dec, attention_mask=mask)
    assert out.lm_logits.shape == (3, 5, 11)
    expected = out.hidden @ model.decoder_embed_tokens.weight.T + model.final_logits_bias
    torch.testing.assert_close(out.lm_logits, expected)
    with pytest.raises(IndexError):
        model(src, torch.full((3, 5), 12), attention_mask=mask)  # a source id past the target vocabulary


def test_blocks_share_a_base_class():
    model = model_for()
    blocks = [m for m in model.modules() if isinstance(m, Seq2SeqBlock)]
    assert len(blocks) == 5
    assert sum(isinstance(b, EncoderBlock) for b in blocks) == 2
    assert sum(isinstance(b, DecoderBlock) for b in blocks) == 3


def test_language_embeddings_shift_each_side():
    model = model_for(n_langs=3, src_lang_id=0, tgt_lang_id=2)
    src, mask, dec = batch()
    base = model(src, dec, attention_mask=mask)
    other = Seq2SeqModel(tiny_cfg(n_langs=3, src_lang_id=1, tgt_lang_id=2)).eval()
    other.load_state_dict(model.state_dict())
    moved = other(src, dec, attention_mask=mask)
    assert (moved.encoder_hidden - base.encoder_hidden).abs().max() > 1e-3


def test_training_mode_dropout_is_active():
    model = model_for(dropout=0.3)
    model.train()
    src, mask, dec = batch()
    torch.manual_seed(0)
    a = model(src, dec, attention_mask=mask).lm_logits
    b = model(src, dec, attention_mask=mask).lm_logits
    assert not torch.allclose(a, b)


# ----------------------------------------------------------------------------- XLM warm start


def xlm_pair(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    xcfg = XLMConfig(vocab_size=VOCAB, n_langs=3, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_seq_len=16,
                     dropout=0.0, attn_dropout=0.0, layer_norm_eps=1e-12)
    xlm = perturbed(XLMForPreTraining(xcfg), seed=seed + 7)
    cfg = Seq2SeqConfig.from_xlm(xcfg, src_lang_id=2, tgt_lang_id=1, bos_id=2, eos_id=3, **overrides)
    return xlm, cfg


def test_from_xlm_config():
    xlm, cfg = xlm_pair(dropout=0.1)
    assert (cfg.pre_ln, cfg.n_langs, cfg.layer_norm_eps, cfg.max_seq_len) == (False, 3, 1e-12, 16)
    assert (cfg.decoder_layers, cfg.src_lang_id, cfg.tgt_lang_id, cfg.dropout) == (2, 2, 1, 0.1)
    no_langs = XLMConfig(vocab_size=VOCAB, n_langs=2, use_lang_emb=False, d_model=32, n_heads=4)
    assert Seq2SeqConfig.from_xlm(no_langs, src_lang_id=1).n_langs == 0


def test_init_from_xlm_encoder_equals_xlm_encoder():
    xlm, cfg = xlm_pair()
    model = Seq2SeqModel(cfg)
    report = init_from_xlm(model, xlm)
    model.eval()
    src, mask, dec = batch()
    with torch.no_grad():
        ours = model.encode(src, mask)
        theirs = xlm.xlm(src, lang_ids=torch.full_like(src, 2), attention_mask=mask).hidden
    real = mask.unsqueeze(-1).expand_as(ours)
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-5, rtol=0)
    # the decoder's self-attention and FFN (and their LayerNorms) come from the XLM block of the same index
    for i, block in enumerate(model.decoder.blocks):
        x = xlm.xlm.blocks[i]
        for ours_p, theirs_p in [(block.self_attn.q_proj.weight, x.attn.q_proj.weight),
                                 (block.self_attn.out_proj.bias, x.attn.out_proj.bias),
                                 (block.self_attn_norm.weight, x.attn_norm.weight),
                                 (block.ffn.fc_in.weight, x.ffn.fc_in.weight),
                                 (block.ffn.fc_out.bias, x.ffn.fc_out.bias),
                                 (block.ffn_norm.bias, x.ffn_norm.bias)]:
            assert torch.equal(ours_p, theirs_p)
        # cross-attention stays fresh: equal to no XLM weight
        xlm_mats = [p for p in xlm.parameters() if p.shape == block.cross_attn.q_proj.weight.shape]
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            w = getattr(block.cross_attn, proj).weight
            assert not any(torch.equal(w, p) for p in xlm_mats)
    assert torch.equal(model.decoder.embed_positions.weight, xlm.xlm.embeddings.position_embeddings.weight)
    assert torch.equal(model.decoder.layernorm_embedding.bias, xlm.xlm.embeddings.norm.bias)
    assert torch.equal(model.final_logits_bias, xlm.lm_head.bias)
    assert torch.equal(model.lang_embeddings.weight, xlm.xlm.embeddings.lang_embeddings.weight)
    assert "decoder.blocks.0.cross_attn.q_proj.weight" in report["fresh"]
    assert "encoder.blocks.1.ffn.fc_out.weight" in report["copied"]
    assert not any("cross_attn" in name for name in report["copied"])
    # the warm-started model decodes (the decoder's language is the target's)
    assert model(src, dec, attention_mask=mask).lm_logits.shape == (3, 7, VOCAB)


def test_init_from_xlm_shape_mismatch_names_the_field():
    xlm, cfg = xlm_pair()
    for field, value in (("d_model", 64), ("d_ff", 128), ("max_seq_len", 20), ("vocab_size", VOCAB + 1),
                         ("n_langs", 2), ("n_decoder_layers", 3), ("pre_ln", True)):
        bad = Seq2SeqConfig.from_dict({**cfg.to_dict(), field: value, "src_lang_id": 0, "tgt_lang_id": 0})
        model = Seq2SeqModel(bad)
        before = model.embed_tokens.weight.clone()
        with pytest.raises(ValueError, match=rf"Seq2SeqConfig\.{field}="):
            init_from_xlm(model, xlm)
        assert torch.equal(model.embed_tokens.weight, before)  # untouched
    with pytest.raises(TypeError, match="XLMForPreTraining"):
        init_from_xlm(Seq2SeqModel(cfg), torch.nn.Linear(2, 2))


def test_init_from_xlm_tensor_shape_guard():
    """A tensor whose shape differs though the configs agree is named with both shapes."""
    xlm, cfg = xlm_pair()
    xlm.lm_head.bias = torch.nn.Parameter(torch.zeros(VOCAB + 2))
    with pytest.raises(ValueError, match=r"final_logits_bias has shape \(40,\).*lm_head\.bias has \(42,\)"):
        init_from_xlm(Seq2SeqModel(cfg), xlm)


def test_cross_attention_halves_equal_attention_layer():
    """project_kv + attend_kv is plain attention with separate query and key/value inputs."""
    torch.manual_seed(0)
    attn = MultiHeadAttention(16, 4).eval()
    x = torch.randn(2, 3, 16)
    kv = attn.project_kv(x)
    torch.testing.assert_close(attn.attend_kv(x, kv), attn(x), atol=1e-6, rtol=0)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    torch.testing.assert_close(attn.attend_kv(x, kv, mask), attn(x, key_padding_mask=mask), atol=1e-6, rtol=0)
