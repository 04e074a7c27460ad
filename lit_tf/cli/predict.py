"""Print labels with scores from a fine-tuned classifier.

    python -m lit_tf.cli.predict ckpt=path/to/best.ckpt text="a gripping , funny film"
    python -m lit_tf.cli.predict ckpt=... file=sentences.txt [top=3]
    python -m lit_tf.cli.predict ckpt=... text="premise ||| hypothesis"     # sentence pairs

Sequence classifiers print the `top` labels with probabilities per line; token classifiers
print each word with its tag.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from lit_tf.cli.args import parse_kv

OPTIONS = {"ckpt": str, "text": str, "file": str, "top": int, "lang": str}
PAIR_SEP = " ||| "


def predict_lines(loaded, lines: list[str], top: int = 3, lang: str | None = None) -> list[str]:
    meta, tok, model = loaded.meta, loaded.tokenizer, loaded.model
    labels, task = meta["labels"], meta["task"]
    lang_ids = {lg: i for i, lg in enumerate(meta.get("languages") or [])}
    out = []
    for line in lines:
        if task == "token_cls":
            words = line.split()
            enc = tok.encode(words, is_pretokenized=True)
        else:
            a, _, b = line.partition(PAIR_SEP)
            enc = tok.encode(a, b) if b else tok.encode(a)
        ids = torch.tensor([enc.ids])
        kwargs = {"attention_mask": torch.ones_like(ids, dtype=torch.bool)}
        if hasattr(model, "xlm"):
            kwargs["lang_ids"] = torch.full_like(ids, lang_ids.get(lang or "en", 0))
        else:
            kwargs["token_type_ids"] = torch.tensor([enc.type_ids])
        with torch.no_grad():
            logits = model(ids, **kwargs).logits[0]
        if task == "token_cls":
            tags, prev = [], None
            for pos, w in enumerate(enc.word_ids):
                if w is not None and w != prev:
                    tags.append(f"{words[w]}/{labels[int(logits[pos].argmax())]}")
                prev = w
            out.append(" ".join(tags))
        else:
            probs = logits.softmax(-1)
            best = probs.topk(min(top, len(labels)))
            out.append("\t".join(f"{labels[i]}:{p:.3f}" for p, i in zip(best.values.tolist(), best.indices.tolist())))
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_kv(sys.argv[1:] if argv is None else argv, OPTIONS, {"top": 3}, ["ckpt"], __doc__)
    if ("text" in args) == ("file" in args):
        raise SystemExit(f"error: give exactly one of text=... or file=...\n{__doc__}")
    from lit_tf.lit.checkpoint import load_checkpoint

    loaded = load_checkpoint(args["ckpt"])
    if loaded.meta.get("task") not in ("seq_cls", "token_cls"):
        raise SystemExit(f"error: {args['ckpt']} is not a fine-tuned classifier (task={loaded.meta.get('task')})")
    if "file" in args:
        path = Path(args["file"])
        if not path.is_file():
            raise SystemExit(f"error: file={path}: no such file")
        lines = [ln for ln in path.read_text(encoding="utf-8").split("\n") if ln.strip()]
    else:
        lines = [args["text"]]
    for line, pred in zip(lines, predict_lines(loaded, lines, args["top"], args.get("lang"))):
        print(f"{pred}\t{line}", flush=True)


if __name__ == "__main__":
    main()
