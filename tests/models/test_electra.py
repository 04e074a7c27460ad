"""ELECTRA: the model (shared embeddings, ~1/4-wide generator, tied decoder, padding invariance)
and its HF mapping (logit parity with transformers' Electra* classes on random-init tiny configs,
round trips, export to a directory HF loads, and what import refuses). Never downloads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from lit_tf.models.electra import (
    ElectraConfig,
    ElectraEmbeddings,
    ElectraForPreTraining,
    ElectraForSequenceClassification,
    ElectraForTokenClassification,
    ElectraModel,
)
from lit_tf.models.layers import count_parameters

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB = 48
SIZES = {"vocab_size": VOCAB, "d_model": 32, "n_layers": 2, "n_heads": 4, "d_ff": 64, "max_seq_len": 16,
         "embedding_size": 16}
ATOL = 1e-5
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = "the a king queen man woman good bad film plot great awful is was and but".split()


def batch(seed: int = 0, B: int = 2, T: int = 10) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (B, T), generator=gen)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 7:] = 0  # right padding in the second row
    ids[1, 7:] = 0
    return {"ids": ids, "mask": mask, "types": (torch.arange(T) >= 4).long().expand(B, T)}


def perturbed(model: torch.nn.Module, seed: int, scale: float = 0.05) -> torch.nn.Module:
    """Random values everywhere (zero biases / identity LayerNorms would hide mapping mistakes).
    A large scale puts activations where the exact and tanh GELUs differ by more than ATOL."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return model.eval()


# ----------------------------------------------------------------------------- config


def test_config_generator_sizes_and_validation():
    cfg = ElectraConfig(vocab_size=100)  # ELECTRA-Small: 256 wide, 4 heads, generator 1/4
    gen = cfg.generator_config()
    assert (gen.d_model, gen.d_ff, gen.n_heads, gen.n_layers, gen.generator_size) == (64, 256, 1, 12, 1.0)
    assert gen.embedding_size == cfg.embedding_size == 128
    # 768 * (1/3) is 255.99999999999997 in floats: still a 256-wide, 4-head generator
    base = ElectraConfig(vocab_size=100, d_model=768, n_heads=12, d_ff=3072, generator_size=1 / 3,
                         generator_layers=6).generator_config()
    assert (base.d_model, base.d_ff, base.n_heads, base.n_layers) == (256, 1024, 4, 6)
    assert ElectraConfig.from_dict(cfg.to_dict()) == cfg

    for bad in (0.0, 1.5, -0.25):
        with pytest.raises(ValueError, match="generator_size"):
            ElectraConfig(vocab_size=100, generator_size=bad)
    with pytest.raises(ValueError, match=r"generator_size=0.5.*d_model=25 and n_heads=2"):
        ElectraConfig(vocab_size=100, d_model=50, n_heads=5, d_ff=100, generator_size=0.5)
    with pytest.raises(ValueError, match=r"generator_size=0.003.*d_model=0, d_ff=3"):
        ElectraConfig(vocab_size=100, generator_size=0.003)
    with pytest.raises(ValueError, match="generator_layers"):
        ElectraConfig(vocab_size=100, generator_layers=0)
    with pytest.raises(ValueError, match="embedding_size"):
        ElectraConfig(vocab_size=100, embedding_size=0)


# ----------------------------------------------------------------------------- model


def test_shapes_shared_embeddings_and_tied_decoder():
    torch.manual_seed(0)
    cfg = ElectraConfig(**SIZES)
    model = ElectraForPreTraining(cfg).eval()
    b = batch()
    out = model(b["ids"], token_type_ids=b["types"], attention_mask=b["mask"])
    assert out.hidden.shape == (2, 10, 32) and out.rtd_logits.shape == (2, 10)
    gen = model.generate(b["ids"], attention_mask=b["mask"])
    assert gen.hidden.shape == (2, 10, 8) and gen.mlm_logits.shape == (2, 10, VOCAB)
    at = model.generate(b["ids"], attention_mask=b["mask"], mlm_positions=torch.tensor([1, 4, 13]))
    assert at.mlm_logits.shape == (3, VOCAB)
    torch.testing.assert_close(at.mlm_logits, gen.mlm_logits.reshape(20, VOCAB)[[1, 4, 13]])

    # one embedding module, the same Parameter objects; the generator is 1/4 as wide
    assert model.generator.embeddings is model.electra.embeddings
    gen_params = dict(model.generator.embeddings.named_parameters())
    for name, p in model.electra.embeddings.named_parameters():
        assert gen_params[name] is p
    assert model.generator.cfg.d_model == cfg.d_model // 4 and model.generator.cfg.d_ff == cfg.d_ff // 4
    assert model.generator.embeddings_project.weight.shape == (8, 16)  # E=16 -> Cg=8
    assert model.electra.embeddings_project.weight.shape == (32, 16)  # E=16 -> C=32
    gen_blocks, disc_blocks = count_parameters(model.generator.blocks), count_parameters(model.electra.blocks)
    assert 0.04 < gen_blocks / disc_blocks < 0.1  # ~ (1/4)^2 of the weights

    # tied decoder: the word embeddings themselves, pad row zero
    we = model.electra.embeddings.word_embeddings.weight
    assert model.generator_head.decoder.weight is we and we.shape == (VOCAB, 16)
    assert torch.count_nonzero(we[cfg.pad_id]) == 0 and we[5].std() > 0.005

    # parameters: shared tensors counted once; excluding embeddings drops the three tables
    unique = {id(p): p.numel() for p in model.parameters()}
    assert model.num_parameters() == sum(unique.values())
    emb = sum(m.weight.numel() for m in model.electra.embeddings.modules() if isinstance(m, torch.nn.Embedding))
    assert model.num_parameters(exclude_embeddings=True) == model.num_parameters() - emb
    shared = count_parameters(model.electra.embeddings) + we.numel()  # the generator's shared embeddings, decoder
    parts = (model.electra, model.generator, model.generator_head, model.discriminator_head)
    assert model.num_parameters() == sum(count_parameters(m) for m in parts) - shared


def test_shared_embeddings_must_fit():
    cfg = ElectraConfig(**SIZES)
    with pytest.raises(ValueError, match="shared embeddings are 48 x 16.*48 x 24"):
        ElectraModel(ElectraConfig(**{**SIZES, "embedding_size": 24}), embeddings=ElectraEmbeddings(cfg))
    with pytest.raises(ValueError, match="exceeds max_seq_len=16"):
        ElectraModel(cfg)(torch.ones(1, 17, dtype=torch.long))


def test_rtd_logits_ignore_padding():
    torch.manual_seed(0)
    model = perturbed(ElectraForPreTraining(ElectraConfig(**SIZES)), seed=1)
    ids = torch.randint(5, VOCAB, (2, 7))
    padded = torch.cat([ids, torch.zeros(2, 5, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(2, 7), torch.zeros(2, 5)], dim=1).long()
    with torch.no_grad():
        short = model(ids).rtd_logits
        long = model(padded, attention_mask=mask).rtd_logits
        gen_short = model.generate(ids).mlm_logits
        gen_long = model.generate(padded, attention_mask=mask).mlm_logits
    torch.testing.assert_close(long[:, :7], short, atol=1e-5, rtol=0)
    torch.testing.assert_close(gen_long[:, :7], gen_short, atol=1e-5, rtol=0)
    assert (long[:, :7] - model(padded).rtd_logits[:, :7]).abs().max() > 1e-3  # the mask matters


def test_fused_generator_loss_equals_logits_loss():
    torch.manual_seed(0)
    model = perturbed(ElectraForPreTraining(ElectraConfig(**SIZES)), seed=2)
    b = batch()
    pos = torch.tensor([1, 2, 5, 11])
    targets = b["ids"].reshape(-1)[pos]
    fused = model.generate(b["ids"], attention_mask=b["mask"], mlm_positions=pos, mlm_targets=targets)
    logits = model.generate(b["ids"], attention_mask=b["mask"], mlm_positions=pos).mlm_logits
    expected = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    torch.testing.assert_close(fused.mlm_nll[0], expected, atol=1e-5, rtol=1e-6)
    assert int(fused.mlm_nll[1]) == 4 and fused.mlm_hits[1] == 4  # eval mode: hits counted
    torch.testing.assert_close(model.generator_logits(fused.hidden, pos), logits)


def test_family_spec_builds_every_task():
    from lit_tf.models.families import FAMILIES

    electra_family = FAMILIES["electra"]
    cfg = ElectraConfig(**SIZES)
    for task, cls in (("encoder", ElectraModel), ("pretraining", ElectraForPreTraining),
                      ("seq_cls", ElectraForSequenceClassification), ("token_cls", ElectraForTokenClassification)):
        model = electra_family.build(task, cfg, num_labels=None if task in ("encoder", "pretraining") else 3,
                                     classifier_dropout=None if task in ("encoder", "pretraining") else 0.2)
        assert type(model) is cls and electra_family.task_of(model) == task
        assert isinstance(electra_family.encoder_of(model), ElectraModel)
    clf = electra_family.build("seq_cls", cfg, num_labels=3, classifier_dropout=0.2)
    assert clf.dropout.p == 0.2 and clf.classifier.dropout is clf.dropout
    assert ElectraForTokenClassification(cfg, 2).dropout.p == cfg.dropout


# ----------------------------------------------------------------------------- HF mapping

transformers = pytest.importorskip("transformers")
from lit_tf.models.hf import export_hf, from_hf, import_hf, to_hf  # noqa: E402


def ours_io(model, b):
    out = model(b["ids"], token_type_ids=b["types"], attention_mask=b["mask"])
    return out.rtd_logits if isinstance(model, ElectraForPreTraining) else out.logits


def hf_io(model, b):
    return model(input_ids=b["ids"], token_type_ids=b["types"], attention_mask=b["mask"]).logits


CASES = {
    "pretraining_projected": (lambda: ElectraForPreTraining(ElectraConfig(**SIZES)), "ElectraForPreTraining"),
    "pretraining_unprojected": (
        lambda: ElectraForPreTraining(ElectraConfig(**{**SIZES, "embedding_size": 32, "activation": "gelu_tanh"})),
        "ElectraForPreTraining",
    ),
    "seq_cls": (lambda: ElectraForSequenceClassification(ElectraConfig(**SIZES), 3, classifier_dropout=0.2),
                "ElectraForSequenceClassification"),
    # HF's classification head hard-codes the exact GELU whatever hidden_act says; so does ours
    "seq_cls_gelu_tanh": (
        lambda: ElectraForSequenceClassification(ElectraConfig(**{**SIZES, "activation": "gelu_tanh"}), 3),
        "ElectraForSequenceClassification",
    ),
    "token_cls": (lambda: ElectraForTokenClassification(ElectraConfig(**SIZES), 5), "ElectraForTokenClassification"),
}
LABELS = {"seq_cls": ["neg", "pos", "neutral"], "seq_cls_gelu_tanh": ["a", "b", "c"]}


@pytest.mark.parametrize("case", list(CASES))
def test_to_hf_gives_hf_the_same_logits_and_round_trips(case):
    make, hf_name = CASES[case]
    torch.manual_seed(0)
    ours = perturbed(make(), seed=1, scale=0.2)
    hf_config, state = to_hf(ours, labels=LABELS.get(case))
    assert hf_config.architectures == [hf_name]
    assert not any(k.startswith(("generator", "generator_head")) for k in state)
    assert ("electra.embeddings_project.weight" in state) == (ours.cfg.embedding_size != ours.cfg.d_model)
    if case in LABELS:
        assert hf_config.id2label == dict(enumerate(LABELS[case]))
    torch.manual_seed(1)
    hf_model = getattr(transformers, hf_name)(hf_config)
    hf_model.load_state_dict(state, strict=True)
    hf_model.eval()
    b = batch()
    with torch.no_grad():
        got, expected = ours_io(ours, b), hf_io(hf_model, b)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    if isinstance(ours, ElectraForSequenceClassification):
        assert hf_model.classifier.dropout.p == ours.dropout.p

    torch.manual_seed(2)
    back = from_hf(hf_config.to_dict(), state).eval()
    assert type(back) is type(ours) and back.cfg.embedding_size == ours.cfg.embedding_size
    with torch.no_grad():
        assert torch.equal(ours_io(back, b), got)
    ours_state, back_state = ours.state_dict(), back.state_dict()
    assert ours_state.keys() == back_state.keys()
    for key in ours_state:
        same = torch.equal(ours_state[key], back_state[key])
        tied_to_electra = key.startswith("generator.embeddings.") or key == "generator_head.decoder.weight"
        if key.startswith(("generator.", "generator_head.")) and not tied_to_electra:
            # HF's ElectraForPreTraining has no generator: ours keeps its fresh init
            assert not same or not ours_state[key].any(), key
        else:
            assert same, key
    if isinstance(back, ElectraForPreTraining):
        assert back.generator.embeddings is back.electra.embeddings
        assert back.generator_head.decoder.weight is back.electra.embeddings.word_embeddings.weight


def test_hf_random_init_checkpoints_import_with_equal_logits():
    hf_config = transformers.ElectraConfig(
        vocab_size=VOCAB, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=16, hidden_act="gelu_new", num_labels=4,
    )
    b = batch(seed=4)
    for name in ("ElectraForPreTraining", "ElectraForSequenceClassification", "ElectraForTokenClassification",
                 "ElectraModel"):
        torch.manual_seed(0)
        hf_model = perturbed(getattr(transformers, name)(hf_config), seed=3, scale=0.2)
        state = hf_model.state_dict()
        ours = from_hf({**hf_config.to_dict(), "architectures": [name]}, state).eval()
        assert ours.cfg.activation == "gelu_tanh" and ours.cfg.embedding_size == 16
        with torch.no_grad():
            if name == "ElectraModel":
                got = ours(b["ids"], token_type_ids=b["types"], attention_mask=b["mask"]).hidden
                expected = hf_model(input_ids=b["ids"], token_type_ids=b["types"],
                                    attention_mask=b["mask"]).last_hidden_state
                real = b["mask"].bool()
                got, expected = got[real], expected[real]
            else:
                got, expected = ours_io(ours, b), hf_io(hf_model, b)
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)

    # the discriminator of a pretraining checkpoint into a classifier: encoder loaded, fresh head
    torch.manual_seed(0)
    hf_pre = perturbed(transformers.ElectraForPreTraining(hf_config), seed=5)
    clf = from_hf({**hf_config.to_dict(), "architectures": ["ElectraForPreTraining"]}, hf_pre.state_dict(),
                  task="seq_cls", num_labels=2)
    assert isinstance(clf, ElectraForSequenceClassification) and clf.num_labels == 2
    assert torch.equal(clf.electra.blocks[1].ffn.fc_in.weight, hf_pre.electra.encoder.layer[1].intermediate.dense.weight)
    assert torch.count_nonzero(clf.classifier.out_proj.bias) == 0  # our init policy


def test_export_dir_loads_in_hf_and_imports_back(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(SPECIALS + WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))

    torch.manual_seed(0)
    ours = perturbed(ElectraForPreTraining(ElectraConfig(**SIZES)), seed=6, scale=0.2)
    out = export_hf(ours, tmp_path / "tokenizer.json", tmp_path / "export")
    assert json.loads((Path(out) / "config.json").read_text())["architectures"] == ["ElectraForPreTraining"]
    hf_model, info = transformers.ElectraForPreTraining.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), f"HF reported loading problems: {info}"
    b = batch(seed=7)
    with torch.no_grad():
        torch.testing.assert_close(ours_io(ours, b), hf_io(hf_model.eval(), b), atol=ATOL, rtol=0)

    back, back_tok = import_hf(out, task=None)
    assert isinstance(back, ElectraForPreTraining) and back_tok.get_vocab_size() == len(SPECIALS + WORDS)
    with torch.no_grad():
        assert torch.equal(ours_io(back.eval(), b), ours_io(ours, b))

    # the generator tower alone exports as an HF ElectraModel (an encoder of its own width)
    hf_config, state = to_hf(ours.generator)
    assert (hf_config.hidden_size, hf_config.embedding_size, hf_config.num_attention_heads) == (8, 16, 1)
    hf_gen = transformers.ElectraModel(hf_config)
    hf_gen.load_state_dict(state, strict=True)
    with torch.no_grad():
        expected = hf_gen.eval()(input_ids=b["ids"], attention_mask=b["mask"]).last_hidden_state
        got = ours.generator(b["ids"], attention_mask=b["mask"]).hidden
    real = b["mask"].bool()
    torch.testing.assert_close(got[real], expected[real], atol=ATOL, rtol=0)


def test_hf_configs_and_keys_it_cannot_represent_are_refused():
    model = ElectraForPreTraining(ElectraConfig(**SIZES))
    cfg, state = to_hf(model)
    d = cfg.to_dict()
    with pytest.raises(ValueError, match="hidden_act='relu'"):
        from_hf({**d, "hidden_act": "relu"}, state)
    with pytest.raises(ValueError, match="position_embedding_type"):
        from_hf({**d, "position_embedding_type": "relative_key_query"}, state)
    with pytest.raises(ValueError, match="decoders"):
        from_hf({**d, "is_decoder": True}, state)
    # an HF ElectraForMaskedLM's generator head is not something this architecture holds
    with pytest.raises(ValueError, match="unexpected key.*generator_predictions"):
        from_hf(d, {**state, "generator_predictions.dense.weight": torch.zeros(16, 32)})
    with pytest.raises(ValueError, match="ElectraForMaskedLM.*supported"):
        from_hf({**d, "architectures": ["ElectraForMaskedLM"]}, state)
    key = "electra.embeddings_project.weight"
    with pytest.raises(ValueError, match=rf"{key}.*\(32, 24\).*\(32, 16\)"):
        from_hf(d, {**state, key: torch.zeros(32, 24)})
    missing = dict(state)
    del missing["discriminator_predictions.dense_prediction.bias"]
    with pytest.raises(ValueError, match="dense_prediction.bias' missing"):
        from_hf(d, missing)
    with pytest.raises(ValueError, match="labels are only meaningful"):
        to_hf(model, labels=["a", "b"])
