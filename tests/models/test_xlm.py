"""Behavioural tests for the XLM model family (tiny sizes, CPU, seconds)."""

import pytest
import torch

from lit_tf.models.outputs import PreTrainingOutput
from lit_tf.models.xlm import (
    LanguageDiscriminator,
    XLMConfig,
    XLMForPreTraining,
    XLMModel,
    mean_pool,
)

VOCAB = 40


def tiny_cfg(**overrides) -> XLMConfig:
    kw = {
        "vocab_size": VOCAB,
        "n_langs": 3,
        "d_model": 32,
        "n_layers": 2,
        "n_heads": 4,
        "d_ff": 64,
        "max_seq_len": 16,
    }
    kw.update(overrides)
    return XLMConfig(**kw)


def batch(B: int = 2, T: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (B, T), generator=gen)  # never the pad id 0
    langs = torch.randint(0, 3, (B, T), generator=gen)
    return ids, langs


# ----------------------------------------------------------------------------- config


def test_config_roundtrip_and_validation():
    cfg = tiny_cfg(causal=True)
    assert XLMConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown XLMConfig field 'n_lang'"):
        XLMConfig.from_dict({"vocab_size": 10, "n_lang": 2})
    with pytest.raises(ValueError, match="missing required field.*vocab_size"):
        XLMConfig.from_dict({"n_langs": 2})
    with pytest.raises(ValueError, match="n_langs"):
        tiny_cfg(n_langs=0)
    with pytest.raises(ValueError, match="divisible"):
        tiny_cfg(n_heads=5)
    with pytest.raises(ValueError, match="activation"):
        tiny_cfg(activation="relu")


# ----------------------------------------------------------------------------- language embeddings


def test_language_embeddings_change_outputs():
    torch.manual_seed(0)
    model = XLMModel(tiny_cfg()).eval()
    ids, langs = batch()
    a = model(ids, lang_ids=langs).hidden
    b = model(ids, lang_ids=(langs + 1) % 3).hidden
    assert a.shape == (2, 7, 32)
    assert not torch.allclose(a, b, atol=1e-4)
    with pytest.raises(ValueError, match="lang_ids"):
        model(ids)
    with pytest.raises(ValueError, match="lang_ids shape"):
        model(ids, lang_ids=langs[:, :3])


def test_language_embeddings_absent_when_disabled():
    torch.manual_seed(0)
    cfg = tiny_cfg(use_lang_emb=False)
    model = XLMModel(cfg).eval()
    assert model.embeddings.lang_embeddings is None
    assert not any("lang" in name for name, _ in model.named_parameters())
    with_langs = XLMModel(tiny_cfg())
    assert with_langs.num_parameters() - model.num_parameters() == 3 * 32
    ids, langs = batch()
    a = model(ids).hidden
    torch.testing.assert_close(model(ids, lang_ids=langs).hidden, a)
    torch.testing.assert_close(model(ids, lang_ids=(langs + 1) % 3).hidden, a)


# ----------------------------------------------------------------------------- attention / positions


def test_causal_past_is_independent_of_future():
    torch.manual_seed(0)
    model = XLMForPreTraining(tiny_cfg(causal=True)).eval()
    ids, langs = batch(B=1, T=8)
    ids2 = ids.clone()
    ids2[:, 5:] = (ids2[:, 5:] % (VOCAB - 1)) + 1  # change only the future tokens 5..7
    assert not torch.equal(ids, ids2)
    a = model(ids, lang_ids=langs).mlm_logits  # (1, T, V)
    b = model(ids2, lang_ids=langs).mlm_logits
    assert a.shape == (1, 8, VOCAB)
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:], atol=1e-4)

    # the same weights without causal attention: the past does see the future
    bidir = XLMForPreTraining(tiny_cfg(causal=False)).eval()
    bidir.load_state_dict(model.state_dict())
    c = bidir(ids, lang_ids=langs).mlm_logits
    d = bidir(ids2, lang_ids=langs).mlm_logits
    assert not torch.allclose(c[:, :5], d[:, :5], atol=1e-4)


def test_causal_with_padding_mask():
    torch.manual_seed(0)
    model = XLMModel(tiny_cfg(causal=True)).eval()
    ids, langs = batch(B=1, T=6)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    a = model(ids, lang_ids=langs, attention_mask=mask).hidden
    b = model(ids[:, :4], lang_ids=langs[:, :4]).hidden
    torch.testing.assert_close(a[:, :4], b)


def test_position_ids_restart_changes_outputs():
    torch.manual_seed(0)
    model = XLMModel(tiny_cfg()).eval()
    ids, langs = batch(B=1, T=8)
    default = model(ids, lang_ids=langs).hidden
    explicit = model(ids, lang_ids=langs, position_ids=torch.arange(8).unsqueeze(0)).hidden
    torch.testing.assert_close(default, explicit)
    restart = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2]])  # TLM: the second sentence restarts at 0
    tlm = model(ids, lang_ids=langs, position_ids=restart).hidden
    assert not torch.allclose(default, tlm, atol=1e-4)


# ----------------------------------------------------------------------------- head


def test_sparse_mlm_logits_match_full_logits():
    torch.manual_seed(0)
    model = XLMForPreTraining(tiny_cfg()).eval()
    ids, langs = batch()
    positions = torch.zeros_like(ids, dtype=torch.bool)
    positions[0, 1] = positions[0, 4] = positions[1, 0] = True
    out = model(ids, lang_ids=langs, mlm_positions=positions)
    full = model(ids, lang_ids=langs).mlm_logits
    assert isinstance(out, PreTrainingOutput) and out.nsp_logits is None
    assert out.mlm_logits.shape == (3, VOCAB) and full.shape == (2, 7, VOCAB)
    torch.testing.assert_close(out.mlm_logits, full[positions])
    with pytest.raises(ValueError, match="mlm_positions"):
        model(ids, lang_ids=langs, mlm_positions=positions.long())


def test_lm_head_tied_to_token_embeddings():
    model = XLMForPreTraining(tiny_cfg())
    emb = model.xlm.embeddings.word_embeddings
    assert model.lm_head.decoder.weight is emb.weight
    assert torch.all(emb.weight[0] == 0)  # pad row zeroed by the init policy
    # counted once
    n_unique = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    assert model.num_parameters() == n_unique
    assert model.num_parameters(exclude_embeddings=True) < model.num_parameters()


# ----------------------------------------------------------------------------- pooling / discriminator


def test_mean_pool_ignores_padding():
    torch.manual_seed(0)
    hidden = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    pooled = mean_pool(hidden, mask)
    torch.testing.assert_close(pooled[0], hidden[0, :3].mean(0))
    torch.testing.assert_close(pooled[1], hidden[1].mean(0))
    garbage = hidden.clone()
    garbage[0, 3:] = 1e6
    torch.testing.assert_close(mean_pool(garbage, mask), pooled)
    assert torch.equal(mean_pool(hidden, torch.zeros(2, 5)), torch.zeros(2, 4))  # no real token


def test_discriminator_reverses_gradient_to_encoder():
    torch.manual_seed(0)
    disc = LanguageDiscriminator(d_model=8, n_langs=3, dropout=0.0)
    pooled = torch.randn(4, 8, requires_grad=True)
    logits = disc(pooled, lambd=0.5)
    assert logits.shape == (4, 3)
    logits.sum().backward()
    g_rev = pooled.grad.clone()
    pooled.grad = None
    disc.mlp(pooled).sum().backward()  # same MLP without the reversal
    torch.testing.assert_close(g_rev, -0.5 * pooled.grad)
