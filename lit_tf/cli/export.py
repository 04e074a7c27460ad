"""Export a lit_tf checkpoint as a Hugging Face transformers model directory.

    python -m lit_tf.cli.export ckpt=path/to/model.ckpt out=hf_model/

Writes config.json, model.safetensors, tokenizer.json (+ tokenizer_config.json) for the HF class
that matches the checkpoint's model exactly, as its family's mapping names it (lit_tf.models.hf:
e.g. BertForPreTraining, GPT2LMHeadModel, XLMModel, ElectraForPreTraining, the classifiers).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from lit_tf.cli.args import parse_kv
from lit_tf.errors import user_errors


def main(argv: list[str] | None = None) -> None:
    args = parse_kv(sys.argv[1:] if argv is None else argv, {"ckpt": str, "out": str}, {}, ["ckpt", "out"], __doc__)
    from lit_tf.lit.checkpoint import load_checkpoint
    from lit_tf.models.hf import export_hf

    with user_errors():  # a missing or foreign checkpoint: one `error:` line
        loaded = load_checkpoint(args["ckpt"])
    with tempfile.TemporaryDirectory() as tmp:
        tok_file = Path(tmp) / "tokenizer.json"
        loaded.tokenizer.save(str(tok_file))
        out = export_hf(loaded.model, tok_file, args["out"], labels=loaded.meta.get("labels"))
    arch = json.loads((Path(out) / "config.json").read_text())["architectures"][0]
    print(f"exported the {loaded.meta['family']} checkpoint as HF {arch} to {out}")


if __name__ == "__main__":
    main()
