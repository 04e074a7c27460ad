"""Behavioural tests for the BERT model and the shared attention layer (tiny sizes, CPU, seconds)."""

import pytest
import torch
import torch.nn.functional as F

from lit_tf.models import (
    BertConfig,
    BertForPreTraining,
    BertModel,
    FeedForward,
    MultiHeadAttention,
    PreTrainingOutput,
)

VOCAB = 50


def tiny_cfg(**overrides) -> BertConfig:
    kw = {"vocab_size": VOCAB, "d_model": 32, "n_layers": 2, "n_heads": 4, "d_ff": 64, "max_seq_len": 16}
    kw.update(overrides)
    return BertConfig(**kw)


def random_ids(B: int, T: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(1, VOCAB, (B, T), generator=gen)  # never the pad id 0


# ----------------------------------------------------------------------------- padding


def test_padding_mask_matches_unpadded_and_ignores_pad_content():
    torch.manual_seed(0)
    model = BertModel(tiny_cfg()).eval()
    gen = torch.Generator().manual_seed(1)
    short = random_ids(1, 5, gen)
    long_other = random_ids(1, 12, gen)

    ref = model(short).hidden  # (1, 5, C), no padding at all

    batch = torch.zeros(2, 12, dtype=torch.long)  # pad id 0
    batch[0, :5] = short[0]
    batch[1] = long_other[0]
    mask = torch.zeros(2, 12, dtype=torch.long)
    mask[0, :5] = 1
    mask[1] = 1
    out = model(batch, attention_mask=mask).hidden
    torch.testing.assert_close(out[0, :5], ref[0], atol=1e-5, rtol=0)
    # the other row is unaffected by its neighbour's padding
    torch.testing.assert_close(out[1], model(long_other).hidden[0], atol=1e-5, rtol=0)

    # random junk in pad slots must not change the real positions
    junk = batch.clone()
    junk[0, 5:] = random_ids(1, 7, gen)[0]
    out_junk = model(junk, attention_mask=mask.bool()).hidden
    torch.testing.assert_close(out_junk[0, :5], ref[0], atol=1e-5, rtol=0)

    # without the mask the junk does leak in (so the comparison above is meaningful)
    assert not torch.allclose(model(junk).hidden[0, :5], ref[0], atol=1e-5)


def test_fully_masked_rows_are_finite():
    torch.manual_seed(0)
    model = BertModel(tiny_cfg()).eval()
    ids = torch.randint(1, VOCAB, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1] = False  # a sequence made only of padding
    out = model(ids, attention_mask=mask).hidden
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], model(ids[:1]).hidden[0], atol=1e-5, rtol=0)

    # causal + left padding: the first query rows see no key at all
    attn = MultiHeadAttention(16, 2, dropout=0.0).eval()
    x = torch.randn(1, 5, 16)
    kpm = torch.tensor([[False, False, True, True, True]])
    y = attn(x, key_padding_mask=kpm, is_causal=True)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y[:, 2:], attn(x[:, 2:], is_causal=True), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- MLM head


def test_sparse_mlm_logits_match_dense_and_give_same_loss():
    torch.manual_seed(0)
    model = BertForPreTraining(tiny_cfg()).eval()
    gen = torch.Generator().manual_seed(2)
    ids = random_ids(3, 10, gen)
    positions = torch.rand(3, 10, generator=gen) < 0.3
    positions[0, 0] = True  # at least one
    labels = torch.randint(0, VOCAB, (3, 10), generator=gen)

    dense = model(ids)
    sparse = model(ids, mlm_positions=positions)
    assert isinstance(sparse, PreTrainingOutput)
    assert dense.mlm_logits.shape == (3, 10, VOCAB)
    assert sparse.mlm_logits.shape == (int(positions.sum()), VOCAB)
    torch.testing.assert_close(sparse.mlm_logits, dense.mlm_logits[positions], atol=1e-5, rtol=1e-5)

    loss_sparse = F.cross_entropy(sparse.mlm_logits, labels[positions])
    dense_labels = labels.masked_fill(~positions, -100)
    loss_dense = F.cross_entropy(dense.mlm_logits.view(-1, VOCAB), dense_labels.view(-1), ignore_index=-100)
    torch.testing.assert_close(loss_sparse, loss_dense, atol=1e-5, rtol=1e-5)

    assert dense.nsp_logits.shape == (3, 2)
    assert BertForPreTraining(tiny_cfg(), nsp=False)(ids).nsp_logits is None


def test_mlm_positions_must_be_bool():
    model = BertForPreTraining(tiny_cfg()).eval()
    ids = torch.randint(1, VOCAB, (2, 4))
    with pytest.raises(ValueError, match="mlm_positions"):
        model(ids, mlm_positions=torch.ones(2, 4, dtype=torch.long))


# ----------------------------------------------------------------------------- tying, params, init


def test_mlm_decoder_weight_tied_to_word_embeddings_and_receives_gradient():
    torch.manual_seed(0)
    model = BertForPreTraining(tiny_cfg(), nsp=False)
    emb = model.bert.embeddings.word_embeddings.weight
    assert model.mlm_head.decoder.weight is emb
    assert model.mlm_head.decoder.weight.data_ptr() == emb.data_ptr()
    assert model.mlm_head.bias.shape == (VOCAB,)

    ids = torch.randint(1, VOCAB, (2, 8))
    positions = torch.zeros(2, 8, dtype=torch.bool)
    positions[:, 3] = True
    logits = model(ids, mlm_positions=positions).mlm_logits
    F.cross_entropy(logits, torch.tensor([4, 7])).backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0
    # rows of tokens absent from the input still get gradient through the (tied) decoder
    unused = min(set(range(1, VOCAB)) - set(ids.flatten().tolist()))
    assert emb.grad[unused].abs().sum() > 0


def test_num_parameters_counts_tied_weight_once():
    cfg = tiny_cfg()
    model = BertForPreTraining(cfg)
    by_hand = sum(p.numel() for p in model.parameters())  # parameters() dedups tied tensors
    assert model.num_parameters() == by_hand
    naive = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    assert naive - by_hand == cfg.vocab_size * cfg.d_model  # exactly one shared matrix

    emb = model.bert.embeddings
    n_emb = sum(
        m.weight.numel() for m in (emb.word_embeddings, emb.position_embeddings, emb.token_type_embeddings)
    )
    assert model.num_parameters(exclude_embeddings=True) == by_hand - n_emb
    assert model.bert.num_parameters() == sum(p.numel() for p in model.bert.parameters())


def test_init_policy():
    cfg = tiny_cfg(init_std=0.02, pad_id=3)
    model = BertForPreTraining(cfg)
    emb = model.bert.embeddings.word_embeddings.weight
    assert torch.all(emb[3] == 0)
    assert 0.01 < emb.std().item() < 0.03
    block = model.bert.blocks[0]
    assert torch.all(block.attn.q_proj.bias == 0)
    assert torch.all(block.ffn_norm.weight == 1) and torch.all(block.ffn_norm.bias == 0)
    assert torch.all(model.mlm_head.bias == 0)


# ----------------------------------------------------------------------------- config validation


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"d_model": 30, "n_heads": 4}, "d_model"),
        ({"n_layers": 0}, "n_layers"),
        ({"vocab_size": -1}, "vocab_size"),
        ({"d_ff": 0}, "d_ff"),
        ({"max_seq_len": 0}, "max_seq_len"),
        ({"dropout": 1.5}, "dropout"),
        ({"attn_dropout": -0.1}, "attn_dropout"),
        ({"pad_id": VOCAB}, "pad_id"),
        ({"activation": "swish"}, "activation"),
        ({"layer_norm_eps": 0.0}, "layer_norm_eps"),
    ],
)
def test_config_validation_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        tiny_cfg(**overrides)


def test_config_from_dict():
    cfg = BertConfig.from_dict({"vocab_size": 10, "d_model": 16, "n_heads": 2})
    assert cfg.d_model == 16 and cfg.n_layers == 4
    assert BertConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="n_layer'.*valid fields.*n_layers"):
        BertConfig.from_dict({"vocab_size": 10, "n_layer": 2})
    with pytest.raises(ValueError, match="vocab_size"):
        BertConfig.from_dict({"d_model": 16})


def test_sequence_longer_than_max_seq_len_raises():
    model = BertModel(tiny_cfg(max_seq_len=8))
    model(torch.randint(1, VOCAB, (1, 8)))  # exactly max is fine
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.randint(1, VOCAB, (1, 9)))


# ----------------------------------------------------------------------------- attention KV cache


def test_attention_cache_matches_full_causal_forward():
    torch.manual_seed(0)
    attn = MultiHeadAttention(32, 4, dropout=0.1).eval()
    x = torch.randn(2, 9, 32)
    full = attn(x, is_causal=True)  # (B, T, C)

    # forward_with_cache without a cache == causal forward
    out0, (k0, v0) = attn.forward_with_cache(x)
    torch.testing.assert_close(out0, full, atol=1e-5, rtol=0)
    assert k0.shape == v0.shape == (2, 4, 9, 8)

    # one token at a time
    past, outs = None, []
    for t in range(9):
        out, past = attn.forward_with_cache(x[:, t : t + 1], past_kv=past)
        outs.append(out)
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-5, rtol=0)
    assert past[0].shape == (2, 4, 9, 8)

    # chunks of several new tokens after a prefix: 3, then 4, then 2
    past, outs = None, []
    for lo, hi in [(0, 3), (3, 7), (7, 9)]:
        out, past = attn.forward_with_cache(x[:, lo:hi], past_kv=past)
        outs.append(out)
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-5, rtol=0)

    # sanity: causal really differs from bidirectional
    assert not torch.allclose(full, attn(x), atol=1e-4)


def test_feedforward_activations():
    ff = FeedForward(8, 16, activation="gelu")
    ff_tanh = FeedForward(8, 16, activation="gelu_tanh")
    ff_tanh.load_state_dict(ff.state_dict())
    x = torch.randn(4, 8) * 3
    assert ff(x).shape == (4, 8)
    assert not torch.equal(ff(x), ff_tanh(x))
    with pytest.raises(ValueError, match="activation"):
        FeedForward(8, 16, activation="relu6")


# ----------------------------------------------------------------------------- wiring


def test_token_type_and_position_ids_are_wired():
    torch.manual_seed(0)
    model = BertModel(tiny_cfg()).eval()
    ids = torch.randint(1, VOCAB, (2, 10))
    base = model(ids).hidden

    types = torch.zeros_like(ids)
    types[:, 5:] = 1
    assert not torch.allclose(model(ids, token_type_ids=types).hidden, base, atol=1e-4)
    torch.testing.assert_close(model(ids, token_type_ids=torch.zeros_like(ids)).hidden, base)

    restart = torch.cat([torch.arange(5), torch.arange(5)]).expand(2, 10)  # (B, T)
    assert not torch.allclose(model(ids, position_ids=restart).hidden, base, atol=1e-4)
    torch.testing.assert_close(model(ids, position_ids=torch.arange(10).expand(2, 10)).hidden, base)


def test_tiny_model_overfits_one_mlm_batch():
    torch.manual_seed(0)
    cfg = tiny_cfg(dropout=0.0, attn_dropout=0.0)
    model = BertForPreTraining(cfg, nsp=False)
    gen = torch.Generator().manual_seed(3)
    ids = random_ids(4, 16, gen)
    positions = torch.rand(4, 16, generator=gen) < 0.25
    positions[:, 0] = True
    labels = torch.randint(0, VOCAB, (4, 16), generator=gen)[positions]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    losses = []
    for _ in range(50):
        loss = F.cross_entropy(model(ids, mlm_positions=positions).mlm_logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
