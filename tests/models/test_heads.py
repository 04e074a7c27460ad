"""Classification heads for BERT and XLM: shapes, encoder transfer, padding behaviour (tiny, CPU)."""

import pytest
import torch

from lit_tf.models import (
    BertConfig,
    BertForPreTraining,
    BertForSequenceClassification,
    BertForTokenClassification,
    ClassifierOutput,
    XLMConfig,
    XLMForPreTraining,
    XLMForSequenceClassification,
    XLMForTokenClassification,
)

VOCAB = 50
SIZES = {"vocab_size": VOCAB, "d_model": 32, "n_layers": 2, "n_heads": 4, "d_ff": 64, "max_seq_len": 16}


def bert_cfg() -> BertConfig:
    return BertConfig(**SIZES)


def xlm_cfg() -> XLMConfig:
    return XLMConfig(**SIZES, n_langs=3)


def ids(B: int, T: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(1, VOCAB, (B, T), generator=torch.Generator().manual_seed(seed))  # no pad id 0


def test_bert_head_shapes_and_parameters():
    torch.manual_seed(0)
    cfg = bert_cfg()
    x = ids(3, 10)
    seq = BertForSequenceClassification(cfg, num_labels=5)
    out = seq(x)
    assert isinstance(out, ClassifierOutput)
    assert out.logits.shape == (3, 5) and out.hidden.shape == (3, 10, 32)
    tok = BertForTokenClassification(cfg, num_labels=7)
    assert tok(x).logits.shape == (3, 10, 7)
    # the heads add exactly pooler + classifier (seq) / classifier (token) to the encoder
    enc = seq.bert.num_parameters()
    assert seq.num_parameters() == enc + (32 * 32 + 32) + (32 * 5 + 5)
    assert tok.num_parameters() == enc + (32 * 7 + 7)
    assert seq.num_parameters(exclude_embeddings=True) < seq.num_parameters()


def test_xlm_head_shapes():
    torch.manual_seed(0)
    cfg = xlm_cfg()
    x, langs = ids(2, 9), torch.randint(0, 3, (2, 9))
    assert XLMForSequenceClassification(cfg, 4)(x, lang_ids=langs).logits.shape == (2, 4)
    assert XLMForTokenClassification(cfg, 6)(x, lang_ids=langs).logits.shape == (2, 9, 6)


def test_head_init_policy_and_argument_checks():
    cfg = bert_cfg()
    model = BertForSequenceClassification(cfg, num_labels=3, classifier_dropout=0.3)
    assert model.dropout.p == 0.3
    assert BertForTokenClassification(cfg, num_labels=3).dropout.p == cfg.dropout  # default: encoder's
    assert torch.count_nonzero(model.classifier.bias) == 0  # zero biases, as everywhere in BERT
    assert abs(model.classifier.weight.std().item() - cfg.init_std) < 0.01
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="num_labels"):
            BertForSequenceClassification(cfg, num_labels=bad)
    with pytest.raises(ValueError, match="classifier_dropout"):
        XLMForTokenClassification(xlm_cfg(), num_labels=2, classifier_dropout=1.0)


def test_encoder_weights_transfer_from_pretraining_model():
    torch.manual_seed(0)
    cfg = bert_cfg()
    pre = BertForPreTraining(cfg).eval()
    x = ids(2, 8)
    for clf in (BertForSequenceClassification(cfg, 2), BertForTokenClassification(cfg, 2)):
        clf.bert.load_state_dict(pre.bert.state_dict())  # strict: the encoders have the same keys
        clf.eval()
        torch.testing.assert_close(clf(x).hidden, pre(x).hidden, rtol=0, atol=0)

    xpre = XLMForPreTraining(xlm_cfg()).eval()
    langs = torch.zeros(2, 8, dtype=torch.long)
    xclf = XLMForSequenceClassification(xlm_cfg(), 2).eval()
    xclf.xlm.load_state_dict(xpre.xlm.state_dict())
    torch.testing.assert_close(xclf(x, lang_ids=langs).hidden, xpre(x, lang_ids=langs).hidden, rtol=0, atol=0)


@pytest.mark.parametrize("family", ["bert", "xlm"])
def test_token_logits_at_real_positions_ignore_padding(family):
    torch.manual_seed(0)
    if family == "bert":
        model = BertForTokenClassification(bert_cfg(), num_labels=4).eval()
    else:
        model = XLMForTokenClassification(xlm_cfg(), num_labels=4).eval()
    real = ids(1, 6, seed=1)
    padded = torch.zeros(1, 14, dtype=torch.long)
    padded[0, :6] = real[0]
    padded[0, 6:] = ids(1, 8, seed=2)[0]  # junk in the padded slots
    mask = torch.zeros(1, 14, dtype=torch.long)
    mask[0, :6] = 1

    def logits(x, m=None):
        extra = {} if family == "bert" else {"lang_ids": torch.ones_like(x)}
        return model(x, attention_mask=m, **extra).logits

    torch.testing.assert_close(logits(padded, mask)[0, :6], logits(real)[0], atol=1e-5, rtol=0)
    assert not torch.allclose(logits(padded)[0, :6], logits(real)[0], atol=1e-5)  # the mask matters


def test_sequence_logits_ignore_padding():
    torch.manual_seed(0)
    model = BertForSequenceClassification(bert_cfg(), num_labels=3).eval()
    real = ids(1, 5, seed=3)
    padded = torch.cat([real, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    mask = (padded != 0).long()
    torch.testing.assert_close(
        model(padded, attention_mask=mask).logits, model(real).logits, atol=1e-5, rtol=0
    )
