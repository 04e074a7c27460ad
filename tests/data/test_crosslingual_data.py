"""Cross-lingual data: parallel shards, TLM batches, alpha sampling of streams and vocabulary text."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from lit_tf.data import text
from lit_tf.data.crosslingual import (
    CrossLingualDataModule,
    GroupingCollator,
    MixtureBatchSampler,
    ParallelDataset,
    StreamMixture,
    build_or_load_parallel,
)
from lit_tf.data.pretraining import MLMCollator
from lit_tf.data.shards import TokenShard
from lit_tf.data.tokenizer import N_SPECIAL, TokenizerSpec, get_or_train_tokenizer
from lit_tf.objectives import IGNORE_INDEX, alpha_sampling_probs

EN = ["the cat sat on the mat", "a dog runs in the park", "we like green apples", "it is raining today",
      "my brother reads books", "the sun is very hot"]
ES = ["el gato se sentó en la alfombra", "un perro corre en el parque", "nos gustan las manzanas verdes",
      "hoy está lloviendo", "mi hermano lee libros", "el sol está muy caliente"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    root = tmp_path_factory.mktemp("xtok")
    return get_or_train_tokenizer(TokenizerSpec(kind="bpe", vocab_size=300, min_frequency=1),
                                  lambda: iter([[s] for s in EN + ES] * 5 + [[" ".join(map(str, range(200)))]] * 3), "x", root)


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_parallel_shards_aligned_and_exclude_test_sentences(tmp_path, tok):
    n = 200
    src = _write(tmp_path / "a.en", [EN[i % 6] + f" {i}" for i in range(n)])
    tgt = _write(tmp_path / "a.es", [ES[i % 6] + f" {i}" for i in range(n)])
    held = _write(tmp_path / "test.es", [ES[0] + " 0", ES[1] + " 7"])  # two pairs leak into a test set
    root = build_or_load_parallel("p", [src], [tgt], tok, tmp_path / "c", val_fraction=0.1, exclude_files=[held])
    tr_s, tr_t = TokenShard.open(root / "train" / "src"), TokenShard.open(root / "train" / "tgt")
    va_s = TokenShard.open(root / "val" / "src")
    kept = tr_s.meta["n_documents"] + va_s.meta["n_documents"]
    assert kept == n - 2
    # alignment: the number suffix of sentence i is the same on both sides
    for i in range(0, tr_s.meta["n_documents"], 17):
        a = tok.tokenizer.decode(tr_s.tokens[tr_s.sent_bounds[i]: tr_s.sent_bounds[i + 1]].tolist())
        b = tok.tokenizer.decode(tr_t.tokens[tr_t.sent_bounds[i]: tr_t.sent_bounds[i + 1]].tolist())
        assert a.split()[-1] == b.split()[-1]

    ds = ParallelDataset(tr_s, tr_t, 24, src_lang=0, tgt_lang=1, cls_id=2, sep_id=3)
    ex = ds[(5, 0)]
    ids, langs, pos = ex["input_ids"], ex["lang_ids"], ex["position_ids"]
    seps = np.flatnonzero(ids == 3)
    assert ids[0] == 2 and len(seps) == 2 and seps[1] == len(ids) - 1
    assert (langs[: seps[0] + 1] == 0).all() and (langs[seps[0] + 1:] == 1).all()
    assert list(pos[: seps[0] + 1]) == list(range(seps[0] + 1))
    assert list(pos[seps[0] + 1:]) == list(range(len(ids) - seps[0] - 1))  # positions restart at tgt
    assert len(ex["word_start"]) == len(ids)

    # a TLM batch masks both sides and keeps lang/position ids
    coll = GroupingCollator({"tlm": MLMCollator(pad_id=0, mask_id=4, vocab_size=tok.vocab_size, n_special=N_SPECIAL)},
                            {"en-es": "tlm"}, by_stream=True)
    mix = StreamMixture({"en-es": ds}, {"en-es": "tlm"})
    batch = coll([mix[("en-es", i, 11)] for i in range(64)])["en-es/tlm"]
    assert batch["term"] == "tlm" and batch["lang_ids"].shape == batch["input_ids"].shape
    masked = batch["mlm_labels"] != IGNORE_INDEX
    assert (masked & (batch["lang_ids"] == 0)).any() and (masked & (batch["lang_ids"] == 1)).any()


def test_parallel_line_mismatch_is_clear(tmp_path, tok):
    src = _write(tmp_path / "x.en", EN)
    tgt = _write(tmp_path / "x.es", ES[:-1])
    with pytest.raises(text.CorpusError, match=r"x\.en has 6 lines but .*x\.es has 5: not aligned"):
        build_or_load_parallel("q", [src], [tgt], tok, tmp_path / "c", val_fraction=0.0)


def test_stream_sampling_follows_alpha_and_resumes():
    sizes = {"en": 9000, "es": 1000, "de": 100}
    probs = {"mlm": alpha_sampling_probs(sizes, 0.5)}
    s = MixtureBatchSampler(sizes, probs, batch_size=2, num_batches=6000, seed=0)
    batches = list(s)
    freq = Counter(b[0][0] for b in batches)
    for lang, q in probs["mlm"].items():
        assert abs(freq[lang] / len(batches) - q) < 0.02, (lang, freq[lang] / len(batches), q)
    assert probs["mlm"]["de"] > 100 / 10100  # small languages are upsampled
    again = MixtureBatchSampler(sizes, probs, batch_size=2, num_batches=6000, seed=0)
    again._skip = 4321
    assert list(again) == batches[4321:]


def test_vocabulary_text_is_alpha_sampled(tmp_path):
    en = _write(tmp_path / "en.txt", ["word " * 20] * 450)  # 9x more English text
    es = _write(tmp_path / "es.txt", ["palabra " * 16] * 50)
    dm = CrossLingualDataModule({"languages": ["en", "es"], "mono": {"en": [en], "es": [es]}, "alpha": 0.5,
                                 "max_seq_len": 32, "batch_size": 2}, {"name": "xlm", "weights": {"mlm": 1.0}},
                                cache_dir=str(tmp_path / "c"))
    counts = {"en": 9000, "es": 1000}
    q = alpha_sampling_probs(counts, 0.5)
    chars = Counter()
    for s in dm._tokenizer_texts(counts, 4000):
        chars["en" if s.startswith("word") else "es"] += len(s)
    share = chars["es"] / sum(chars.values())
    assert abs(share - q["es"]) < 0.03 and q["es"] > 0.2  # p_es = 0.1, q_es = 0.25


def test_language_config_errors(tmp_path):
    with pytest.raises(ValueError, match=r"data.mono.fr: language not in data.languages=\['en', 'es'\]"):
        CrossLingualDataModule({"languages": ["en", "es"], "mono": {"fr": ["x"]}}, {"name": "xlm"}, cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="TLM needs a bidirectional model"):
        CrossLingualDataModule({"languages": ["en", "es"], "parallel": {"en-es": {"src": [], "tgt": []}}},
                               {"name": "xlm", "mono_term": "clm", "weights": {"clm": 1, "tlm": 1}}, cache_dir=str(tmp_path))
    torch.manual_seed(0)
