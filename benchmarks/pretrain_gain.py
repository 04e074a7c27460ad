"""Does pretraining help? SST-2 fine-tuned from a short pretraining run vs from scratch.

    python benchmarks/pretrain_gain.py [--pretrain-steps 1500] [--train-examples 20000] [key=value ...]

1. Pretrain a tiny BERT (MLM, `model=bert_tiny`) on English text from the shared data folder
   (`experiment=bert_mlm_nsp_en objective=mlm`: WikiText-2 + Tiny Shakespeare).
2. Fine-tune on SST-2 twice with the same budget (same model size, data, epochs, LR, seed):
   from that checkpoint (`init_from=<ckpt>`), and from scratch (random init, a tokenizer
   trained on the SST-2 text). Extra `key=value` overrides apply to both fine-tuning runs.
Prints dev accuracy and macro-F1 side by side.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from lit_tf.cli.train import compose_config, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pretrain-steps", type=int, default=1500)
    ap.add_argument("--train-examples", type=int, default=20000)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        common = [f"paths.log_dir={root / 'outputs'}", "logger=none"]
        t = time.time()
        pre = train(compose_config([
            "experiment=bert_mlm_nsp_en", "objective=mlm", "model=bert_tiny", "data.max_seq_len=64",
            "data.tokenizer.vocab_size=8000", f"trainer.max_steps={args.pretrain_steps}",
            f"trainer.val_check_interval={args.pretrain_steps}", "optim.optimizer.lr=1e-3", *common]))
        pre_min = (time.time() - t) / 60
        ft = ["experiment=finetune_sst2", "model=bert_tiny", "model.max_seq_len=64", "data.max_seq_len=64",
              f"data.max_train_examples={args.train_examples}", "data.tokenizer.vocab_size=8000",
              "trainer.max_epochs=1", "optim.optimizer.lr=3e-4", *common, *args.overrides]
        rows = {}
        for side, init in (("pretrained", pre["last_ckpt"]), ("from scratch", None)):
            t = time.time()
            m = train(compose_config([*ft, f"init_from={init}" if init else "init_from=null"]))
            m["minutes"] = (time.time() - t) / 60
            rows[side] = m
    print(f"\npretraining: {args.pretrain_steps} MLM steps, val/mlm_loss {pre['val/mlm_loss']:.3f}, {pre_min:.1f} min")
    print(f"\n{'SST-2 dev (6,735)':<22}" + "".join(f"{s:>14}" for s in rows))
    for k in ("test/acc", "test/f1", "val/loss"):
        print(f"{k:<22}" + "".join(f"{m[k]:>14.4f}" for m in rows.values()))
    print(f"{'fine-tune minutes':<22}" + "".join(f"{m['minutes']:>14.1f}" for m in rows.values()))


if __name__ == "__main__":
    main()
