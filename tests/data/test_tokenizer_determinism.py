"""Reproducible vocabularies: the same texts and settings give a byte-identical tokenizer.json in
any fresh process, whatever its hash seed or thread use; pinned pieces stay ordinary vocabulary."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import shared_file

from lit_tf.data.tokenizer import SPECIAL_TOKENS, TokenizerSpec, train_tokenizer

# (name, spec kwargs): every kind; WordPiece cased and uncased (accents stripped)
CASES = {
    "wordpiece": {"kind": "wordpiece"},
    "wordpiece_lower": {"kind": "wordpiece", "lowercase": True},
    "bpe": {"kind": "bpe"},
    "bytelevel_bpe": {"kind": "bytelevel_bpe"},
}

# Trains every case through the real cache path (get_or_train_tokenizer) into a fresh cache dir
# and prints {case: tokenizer.json path}. English prose (pydoc) + Spanish novels (accents, ñ, ¿).
_CHILD = """
import json, sys
from pathlib import Path
from lit_tf.data import text
from lit_tf.data.tokenizer import TokenizerSpec, get_or_train_tokenizer

out, spanish, cases = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
def docs():
    yield from (d for i, d in enumerate(text.iter_documents({"builtin": "pydoc", "max_files": 30})) if i < 600)
    yield from (d for i, d in enumerate(text.iter_documents({"files": [spanish]})) if i < 800)
paths = {}
for name, kw in cases.items():
    art = get_or_train_tokenizer(TokenizerSpec(vocab_size=1200, **kw), docs, "determinism", out / name)
    paths[name] = str(art.path / "tokenizer.json")
print(json.dumps(paths))
"""


def _train_in_fresh_process(out, env_extra: dict) -> dict[str, bytes]:
    spanish = shared_file("spanish_novels_cligs/Alarcon_Bola-ne0175.txt")
    env = {**os.environ, **env_extra}
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(out), str(spanish), json.dumps(CASES)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    paths = json.loads(proc.stdout.strip().splitlines()[-1])
    return {name: open(p, "rb").read() for name, p in paths.items()}


@pytest.fixture(scope="module")
def two_trainings(tmp_path_factory):
    # Different hash seeds (the word-count map order) and thread use (the order words are counted).
    a = _train_in_fresh_process(tmp_path_factory.mktemp("a"), {"PYTHONHASHSEED": "1", "TOKENIZERS_PARALLELISM": "true"})
    b = _train_in_fresh_process(tmp_path_factory.mktemp("b"), {"PYTHONHASHSEED": "2", "TOKENIZERS_PARALLELISM": "false"})
    return a, b


@pytest.mark.parametrize("case", list(CASES))
def test_training_is_byte_identical_across_processes(two_trainings, case):
    a, b = two_trainings
    assert len(a[case]) > 10_000
    if a[case] != b[case]:  # say what differs, not just that the bytes do
        va, vb = (json.loads(x)["model"]["vocab"] for x in (a[case], b[case]))
        only_a, only_b = sorted(set(va) - set(vb))[:8], sorted(set(vb) - set(va))[:8]
        moved = [t for t in va if t in vb and va[t] != vb[t]][:8]
        pytest.fail(f"{case}: tokenizer.json differs between processes; pieces only in one: {only_a} / {only_b}; "
                    f"same piece, other id: {moved}")


@pytest.mark.parametrize("case", ["wordpiece", "bpe"])
def test_pinned_pieces_are_ordinary_vocabulary(case):
    """The character pieces pinned during training are plain vocabulary afterwards: only the real
    specials are added tokens (so `##e` in text is not cut out, and decoding keeps every piece)."""
    texts = ["the theme of these three theses", "¿Qué tal? Muy bien, señor.", "tea at three", "ñandú y pingüino"] * 20
    spec = TokenizerSpec(vocab_size=60, min_frequency=1, extra_special_tokens=("<en>", "<es>"), **CASES[case])
    tok = train_tokenizer(spec, texts)
    added = [t["content"] for t in json.loads(tok.to_str())["added_tokens"]]
    assert added == [*SPECIAL_TOKENS, "<en>", "<es>"]
    assert [tok.token_to_id(s) for s in added] == list(range(len(added)))  # specials keep ids 0..6
    piece = "##e" if case == "wordpiece" else "e</w>"
    assert piece in tok.get_vocab()  # a pinned piece is still in the vocabulary...
    assert len(tok.encode(piece, add_special_tokens=False).tokens) > 1  # ...but not cut out of text as a special
    assert tok.decode(tok.encode("the theses").ids).replace(" ", "") == "thetheses"
    assert train_tokenizer(spec, lambda: iter(texts)).to_str() == tok.to_str()  # a factory works too


def test_one_shot_iterator_is_refused():
    with pytest.raises(TypeError, match="texts are read twice"):
        train_tokenizer(TokenizerSpec(vocab_size=60), iter(["a b c"] * 10))
