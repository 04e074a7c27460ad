"""Translate text with a trained encoder-decoder, and score translations with sacreBLEU.

    python -m lit_tf.cli.translate ckpt=outputs/mt_en_es/runs/<run>/checkpoints/last.ckpt \\
        input=src.txt output=hyp.txt [beam=5] [length_penalty=1.0] [max_len_ratio=1.5] \\
        [max_len_offset=10] [batch_size=64] [ref=ref.txt]
    echo "The cat sleeps." | python -m lit_tf.cli.translate ckpt=...      # stdin -> stdout
    python -m lit_tf.cli.translate hyp=hyp.txt ref=ref.txt                # score existing translations

One sentence per line in, one translation per line out (an empty line stays empty). beam=1 is
greedy decoding. With ref=..., the corpus BLEU and chrF against it (one reference per line) and
sacreBLEU's signatures are printed (to stderr when the translations go to stdout).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from lit_tf.cli.args import parse_kv

OPTIONS = {"ckpt": str, "input": str, "output": str, "ref": str, "hyp": str, "beam": int, "length_penalty": float,
           "max_len_ratio": float, "max_len_offset": int, "batch_size": int, "device": str}
DECODE_KEYS = ("beam", "length_penalty", "max_len_ratio", "max_len_offset", "batch_size")


def _read_lines(path: str, key: str) -> list[str]:
    from lit_tf.lit.callbacks import read_lines  # "\n" only: U+2028 or U+0085 inside a line stays in it

    if not Path(path).is_file():
        raise SystemExit(f"error: {key}={path}: no such file")
    return read_lines(path, None)


def _score(hyps: list[str], ref_path: str, out) -> None:
    from lit_tf.lit.translation import score

    refs = _read_lines(ref_path, "ref")
    if len(refs) != len(hyps):
        raise SystemExit(f"error: ref={ref_path} has {len(refs)} lines but there are {len(hyps)} translations: "
                         "the files must align line by line")
    s = score(hyps, refs)
    print(f"BLEU = {s.bleu:.2f}\nchrF = {s.chrf:.2f}\nsignature: {s.bleu_signature}\nsignature: {s.chrf_signature}",
          file=out, flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_kv(sys.argv[1:] if argv is None else argv, OPTIONS, {"beam": 5}, [], __doc__)
    if "hyp" in args:  # scoring only
        if "ref" not in args or "ckpt" in args:
            raise SystemExit(f"error: hyp=... scores existing translations: give ref=... and no ckpt\n{__doc__}")
        _score(_read_lines(args["hyp"], "hyp"), args["ref"], sys.stdout)
        return
    if "ckpt" not in args:
        raise SystemExit(f"error: ckpt=... required (or hyp=... ref=... to score translations)\n{__doc__}")
    import torch

    from lit_tf.errors import user_errors
    from lit_tf.lit.checkpoint import load_checkpoint
    from lit_tf.lit.translation import DecodeSettings, translate_texts

    try:
        settings = DecodeSettings(**{k: args[k] for k in DECODE_KEYS if k in args})
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    lines = _read_lines(args["input"], "input") if "input" in args else sys.stdin.read().split("\n")
    if "input" not in args and lines and lines[-1] == "":
        lines.pop()
    with user_errors():  # a missing or foreign checkpoint: one `error:` line
        loaded = load_checkpoint(args["ckpt"])
    from lit_tf.models.families import FAMILIES

    if loaded.meta.get("objective", {}).get("name") != "translation":
        mt = [n for n, s in FAMILIES.items() if "translation" in s.objectives]
        raise SystemExit(f"error: ckpt={args['ckpt']} holds a {loaded.meta.get('family')!r} model, not a translation "
                         f"model ({', '.join(mt)} trained with objective=translation)")
    device = torch.device(args.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = loaded.model.to(device).eval()
    start = time.perf_counter()
    hyps = translate_texts(model, loaded.tokenizer, lines, settings, device=device, progress=sys.stderr.isatty())
    secs = time.perf_counter() - start
    if "output" in args:
        Path(args["output"]).write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
        report = sys.stdout
    else:
        sys.stdout.write("".join(h + "\n" for h in hyps))
        sys.stdout.flush()
        report = sys.stderr
    print(f"translated {len(lines)} lines in {secs:.1f} s ({len(lines) / max(secs, 1e-9):.1f} lines/s, beam "
          f"{settings.beam}, {device.type})", file=report, flush=True)
    if "ref" in args:
        _score(hyps, args["ref"], report)


if __name__ == "__main__":
    main()
