"""Translation outputs read as text: decoding a punctuation-splitting tokenizer spaces out punctuation,
and `detokenize` undoes it, so hypotheses scored by sacreBLEU (and shown to users) look like the
references they are compared with."""

from __future__ import annotations

from conftest import shared_file

from lit_tf.data.tokenizer import TokenizerSpec, train_tokenizer
from lit_tf.lit.translation import detokenize, score, splits_punctuation


def _lines(rel: str, n: int) -> list[str]:
    return [ln for ln in shared_file(rel).read_text(encoding="utf-8").split("\n")[:n] if ln.strip()]


def test_detokenized_decoding_gives_back_real_sentences():
    train = _lines("tatoeba_opus_test/eng-spa/tatoeba-test-v2021-08-07.eng", 3000) + \
        _lines("tatoeba_opus_test/eng-spa/tatoeba-test-v2021-08-07.spa", 3000)
    tok = train_tokenizer(TokenizerSpec.from_config({"kind": "bpe", "vocab_size": 3000, "lowercase": False}),
                          [[s] for s in train])
    assert splits_punctuation(tok)
    # other sentences (LASER's Tatoeba), English and Spanish: almost every one has punctuation
    test = _lines("tatoeba_laser/tatoeba.spa-eng.eng", 500) + _lines("tatoeba_laser/tatoeba.spa-eng.spa", 500)
    decoded = tok.decode_batch([e.ids for e in tok.encode_batch(test, add_special_tokens=False)])
    raw = sum(d == t for d, t in zip(decoded, test)) / len(test)
    fixed = sum(detokenize(d) == t for d, t in zip(decoded, test)) / len(test)
    # measured: 0.0 as decoded, 0.995 detokenized (the rest: "a.m.", "hay ...")
    assert raw < 0.05 and fixed > 0.95, (raw, fixed)
    assert score([detokenize(d) for d in decoded], test).bleu > 99.0


def test_detokenize_rules():
    assert detokenize("¿ Dónde está el \" gato \" ? Es 3 . 5 % , ( no ) ¡ sí !") == '¿Dónde está el "gato"? Es 3.5%, (no) ¡sí!'
    assert detokenize("I don ' t know , Tom ' s non - stop car .") == "I don't know, Tom's non-stop car."
    assert detokenize('He said " yes " and " no " .') == 'He said "yes" and "no".'
    assert detokenize("at 10 : 30 pm , 1 , 000 people") == "at 10:30 pm, 1,000 people"
