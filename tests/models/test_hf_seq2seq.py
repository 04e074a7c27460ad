"""HF interop of the encoder-decoder family: exported tiny random-init models give HF BART (post-LN)
and MBart (pre-LN) the same logits, language embeddings fold into the position tables exactly,
imports round-trip, and what HF cannot represent is refused clearly.

Never downloads: every HF model is built from a local directory (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from safetensors.torch import save_file  # noqa: E402

from lit_tf.models import families  # noqa: E402
from lit_tf.models.decoding import greedy_decode  # noqa: E402
from lit_tf.models.hf import export_hf, from_hf, import_hf  # noqa: E402
from lit_tf.models.hf import seq2seq as hf_seq2seq  # noqa: E402
from lit_tf.models.hf import to_hf as core_to_hf  # noqa: E402
from lit_tf.models.seq2seq import Seq2SeqBlock, Seq2SeqConfig, Seq2SeqModel, Seq2SeqStack  # noqa: E402

VOCAB = 48
ATOL = 1e-5
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = "the a king queen man woman good bad film plot great awful is was and but".split()


@pytest.fixture
def seq2seq_family(monkeypatch):
    """The family-table entry the generic HF functions read: the table's own when it has one, else
    (the table is edited separately) an equivalent entry for the test only."""
    if "seq2seq" in families.FAMILIES:
        return families.FAMILIES["seq2seq"]
    spec = families.FamilySpec(
        name="seq2seq", config=Seq2SeqConfig, encoder=Seq2SeqStack, encoder_attr="encoder",
        pretraining={"translation": Seq2SeqModel}, pretraining_class=Seq2SeqModel, objectives=("translation",),
        block=Seq2SeqBlock, hf=hf_seq2seq.MAPPING,
    )
    monkeypatch.setitem(families.FAMILIES, "seq2seq", spec)
    return spec


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(SPECIALS + WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


def make_model(pre_ln: bool, n_langs: int = 0, seed: int = 0, **overrides) -> Seq2SeqModel:
    torch.manual_seed(seed)
    cfg = Seq2SeqConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_decoder_layers=3, n_heads=4, d_ff=64,
                        max_seq_len=16, pre_ln=pre_ln, n_langs=n_langs, src_lang_id=n_langs - 1 if n_langs else 0,
                        tgt_lang_id=1 if n_langs else 0, layer_norm_eps=1e-5, **overrides)
    model = Seq2SeqModel(cfg)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # random values everywhere: zero biases / identity LayerNorms would hide mistakes
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


def batch(seed: int = 0):
    """Sources right-padded to different lengths; targets start at bos (2)."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(5, VOCAB, (3, 9), generator=gen)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 6:], mask[2, 3:] = 0, 0
    src = src.masked_fill(mask == 0, 0)
    dec = torch.randint(5, VOCAB, (3, 7), generator=gen)
    dec[:, 0] = 2
    return src, mask, dec


def save(config, state, path):
    config.save_pretrained(path)
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def load_hf(path, arch: str):
    model, info = getattr(transformers, arch).from_pretrained(path, output_loading_info=True)
    assert not any(info.values()), f"HF reported loading problems: {info}"
    return model.eval()


CASES = {  # name: (pre_ln, n_langs, HF architecture)
    "bart": (False, 0, "BartForConditionalGeneration"),
    "mbart": (True, 0, "MBartForConditionalGeneration"),
    "bart_langs": (False, 3, "BartForConditionalGeneration"),
    "mbart_langs": (True, 2, "MBartForConditionalGeneration"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_export_matches_hf_logits(case, tmp_path):
    pre_ln, n_langs, arch = CASES[case]
    ours = make_model(pre_ln, n_langs)
    config, state = core_to_hf(ours)
    assert config.architectures == [arch]
    assert type(config).__name__ == arch.replace("ForConditionalGeneration", "Config")
    assert state["final_logits_bias"].shape == (1, VOCAB)
    assert state["model.encoder.embed_positions.weight"].shape == (16 + 2, 32)
    hf = load_hf(save(config, state, tmp_path), arch)
    src, mask, dec = batch()
    with torch.no_grad():
        expected = ours(src, dec, attention_mask=mask).lm_logits
        got = hf(input_ids=src, attention_mask=mask, decoder_input_ids=dec).logits
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    # the encoder output too (HF's last encoder state)
    with torch.no_grad():
        enc = hf.get_encoder()(input_ids=src, attention_mask=mask).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(enc[real], ours.encode(src, mask)[real], atol=ATOL, rtol=0)


def test_language_embeddings_fold_into_positions():
    ours = make_model(pre_ln=False, n_langs=3)
    _, state = core_to_hf(ours)
    lang = ours.lang_embeddings.weight
    enc = state["model.encoder.embed_positions.weight"]
    dec = state["model.decoder.embed_positions.weight"]
    torch.testing.assert_close(enc[2:], ours.encoder.embed_positions.weight + lang[2])  # src_lang_id = 2
    torch.testing.assert_close(dec[2:], ours.decoder.embed_positions.weight + lang[1])  # tgt_lang_id = 1
    assert torch.count_nonzero(enc[:2]) == 0 and torch.count_nonzero(dec[:2]) == 0


def test_hf_greedy_generation_matches_ours(tmp_path):
    ours = make_model(pre_ln=True, seed=3, init_std=0.3)  # larger weights: outputs depend on the source
    with torch.no_grad():
        ours.final_logits_bias[3] += 2.0  # eos likely enough that rows end at different lengths
    hf = load_hf(save(*core_to_hf(ours), tmp_path), "MBartForConditionalGeneration")
    src, mask, _ = batch(seed=3)
    mine = greedy_decode(ours, src, mask, max_len=8)
    assert 0 < min(len(h) for h in mine) < 8 == max(len(h) for h in mine), mine  # eos and the length cap
    with torch.no_grad():
        out = hf.generate(input_ids=src, attention_mask=mask, max_new_tokens=8, do_sample=False, num_beams=1)
    theirs = []
    for row in out[:, 1:].tolist():  # drop the decoder start token
        theirs.append(row[: row.index(3)] if 3 in row else row)
    assert mine == theirs


def test_generic_export_and_import_round_trip(tmp_path, tokenizer_json, seq2seq_family):
    """Through lit_tf.models.hf (the family table): export_hf writes an HF BART directory, import_hf
    reads it back bit for bit; MBart imports through from_hf."""
    bart = make_model(pre_ln=False)
    out = export_hf(bart, tokenizer_json, tmp_path / "bart")
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BartForConditionalGeneration"]
    hf = load_hf(out, "BartForConditionalGeneration")
    src, mask, dec = batch(seed=1)
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=src, attention_mask=mask, decoder_input_ids=dec).logits,
                                   bart(src, dec, attention_mask=mask).lm_logits, atol=ATOL, rtol=0)
    # a pre-LN model exports as MBart through the same generic export
    mb = export_hf(make_model(pre_ln=True, seed=5), tokenizer_json, tmp_path / "mbart_generic")
    assert json.loads((mb / "config.json").read_text())["architectures"] == ["MBartForConditionalGeneration"]

    back, tok = import_hf(out, task=None)
    assert isinstance(back, Seq2SeqModel) and tok is not None and back.cfg == bart.cfg
    assert back.state_dict().keys() == bart.state_dict().keys()
    for key, value in bart.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key

    # an HF-saved MBart checkpoint (HF's own file layout) imports as a pre-LN model
    mbart = make_model(pre_ln=True, seed=2)
    hf_mbart = load_hf(save(*core_to_hf(mbart), tmp_path / "mbart_src"), "MBartForConditionalGeneration")
    hf_mbart.save_pretrained(tmp_path / "mbart")
    back, _ = import_hf(tmp_path / "mbart", task=None)
    assert back.cfg.pre_ln and back.cfg == mbart.cfg
    for key, value in mbart.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key

    # folded language embeddings import as position tables (n_langs=0) with the same logits
    langs = make_model(pre_ln=False, n_langs=3, seed=4)
    config, state = core_to_hf(langs)
    back = from_hf(config.to_dict(), state).eval()
    assert back.cfg.n_langs == 0 and back.lang_embeddings is None
    with torch.no_grad():
        torch.testing.assert_close(back(src, dec, attention_mask=mask).lm_logits,
                                   langs(src, dec, attention_mask=mask).lm_logits, atol=ATOL, rtol=0)


def test_refusals_and_config_errors(seq2seq_family):
    separate = make_model(pre_ln=False, tgt_vocab_size=20)
    with pytest.raises(NotImplementedError, match="separate target vocabulary"):
        core_to_hf(separate)

    config, state = core_to_hf(make_model(pre_ln=False))
    d = config.to_dict()
    with pytest.raises(ValueError, match="task 'encoder' is not available"):
        from_hf(d, state, task="encoder")
    with pytest.raises(NotImplementedError, match="no exact HF counterpart"):
        core_to_hf(make_model(pre_ln=False).encoder)
    with pytest.raises(ValueError, match="scale_embedding"):
        from_hf({**d, "scale_embedding": True}, state)
    with pytest.raises(ValueError, match="encoder_ffn_dim=64 != decoder_ffn_dim=128"):
        from_hf({**d, "decoder_ffn_dim": 128}, state)
    with pytest.raises(ValueError, match="activation_function='relu'"):
        from_hf({**d, "activation_function": "relu"}, state)
    bad = dict(state)
    bad["model.decoder.layers.1.fc1.weight"] = torch.zeros(65, 32)
    with pytest.raises(ValueError, match=r"model\.decoder\.layers\.1\.fc1\.weight.*\(65, 32\).*\(64, 32\)"):
        from_hf(d, bad)
