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

from lit_tf.cli.args import parse_kv
from lit_tf.errors import user_errors
from lit_tf.lit.predict import predict_lines

OPTIONS = {"ckpt": str, "text": str, "file": str, "top": int, "lang": str}


def main(argv: list[str] | None = None) -> None:
    args = parse_kv(sys.argv[1:] if argv is None else argv, OPTIONS, {"top": 3}, ["ckpt"], __doc__)
    if ("text" in args) == ("file" in args):
        raise SystemExit(f"error: give exactly one of text=... or file=...\n{__doc__}")
    from lit_tf.lit.checkpoint import load_checkpoint

    with user_errors():  # a missing or foreign checkpoint: one `error:` line
        loaded = load_checkpoint(args["ckpt"])
    from lit_tf.lit.tasks import TASKS

    if loaded.meta.get("task") not in TASKS:
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
