"""Print continuations from a trained causal LM.

    python -m lit_tf.cli.generate ckpt=outputs/gpt_clm_en/runs/<run>/checkpoints/last.ckpt prompt="KING:" \
        [max_new_tokens=60] [temperature=0.8] [top_k=50] [top_p=0.95] [num_samples=3] [seed=0]
"""

from __future__ import annotations

import sys

from lit_tf.cli.args import parse_kv
from lit_tf.errors import user_errors

OPTIONS = {"ckpt": str, "prompt": str, "max_new_tokens": int, "temperature": float, "top_k": int, "top_p": float,
           "num_samples": int, "seed": int}


def parse(argv: list[str]) -> dict:
    defaults = {"max_new_tokens": 60, "temperature": 0.8, "top_k": 50, "top_p": 0.95, "num_samples": 1, "seed": 0,
                "prompt": ""}
    return parse_kv(argv, OPTIONS, defaults, ["ckpt"], __doc__)


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    from lit_tf.lit.checkpoint import load_checkpoint
    from lit_tf.tracking.callbacks import sample_texts

    with user_errors():  # a missing or foreign checkpoint: one `error:` line
        loaded = load_checkpoint(args["ckpt"])
    from lit_tf.models.families import FAMILIES

    if not FAMILIES[loaded.meta["family"]].causal_lm:
        lms = [name for name, spec in FAMILIES.items() if spec.causal_lm]
        raise SystemExit(f"error: {args['ckpt']} holds a {loaded.meta['family']!r} model; generation needs a causal LM "
                         f"({', '.join(lms)})")
    for i in range(args["num_samples"]):
        (text,) = sample_texts(loaded.model, loaded.tokenizer, [args["prompt"]], max_new_tokens=args["max_new_tokens"],
                               temperature=args["temperature"], top_k=args["top_k"] or None,
                               top_p=args["top_p"] or None, seed=args["seed"] + i)
        print(f"--- sample {i} ---\n{text}", flush=True)


if __name__ == "__main__":
    main()
