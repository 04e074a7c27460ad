"""Does pretraining help? SST-2 fine-tuned from a short pretraining run vs from scratch.

    python benchmarks/pretrain_gain.py [--pretrain-steps 4000] [--pretrain-lr 2e-3] [--train-examples 3000] [--epochs 3]
                                       [--no-task-text] [--objective mlm|mlm_nsp] [key=value ...]

1. Pretrain a tiny BERT (MLM, `model=bert_tiny`) on English text from the shared data folder
   (`experiment=bert_mlm_nsp_en objective=mlm`: WikiText-2 + Tiny Shakespeare), plus, unless
   --no-task-text, the *unlabelled* SST-2 training sentences (the text column only; labels never
   reach pretraining), i.e. task-adaptive pretraining (Gururangan et al., 2020).
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

# Tiny models on a short budget underfit: no dropout on either side (the pretrained side carries
# its config from the checkpoint; the scratch side gets the same architecture).
NO_DROPOUT = ["model.dropout=0.0", "model.attn_dropout=0.0"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pretrain-steps", type=int, default=4000)
    ap.add_argument("--pretrain-lr", type=float, default=2e-3)
    ap.add_argument("--train-examples", type=int, default=3000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--no-task-text", action="store_true", help="pretrain on the general English text only")
    ap.add_argument("--objective", default="mlm", choices=["mlm", "mlm_nsp"], help="pretraining objective")
    ap.add_argument("--vocab-size", type=int, default=8000, help="WordPiece vocabulary of both sides")
    ap.add_argument("--seq-len", type=int, default=64, help="pretraining block length and fine-tuning max length")
    ap.add_argument("--pretrain-batch", type=int, default=32)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        common = [f"paths.log_dir={root / 'outputs'}", "logger=none"]
        extra = []
        if not args.no_task_text:
            from lit_tf.data.finetune import read_labeled_table

            shared = compose_config([]).paths.shared_data
            rows = read_labeled_table(f"{shared}/sst2/train.tsv", ["sentence"], "label")
            text_file = root / "sst2_sentences.txt"
            text_file.write_text("\n".join(r["sentence"] for r in rows) + "\n")  # text only, no labels
            extra = [f"data.train_files=[{shared}/wikitext2/wiki.valid.raw,{shared}/tinyshakespeare/input.txt,"
                     f"{text_file}]", f"data.doc_per_line={'true' if args.objective == 'mlm' else 'false'}"]
        t = time.time()
        pre = train(compose_config([
            "experiment=bert_mlm_nsp_en", f"objective={args.objective}", "model=bert_tiny",
            f"data.max_seq_len={args.seq_len}", f"model.max_seq_len={args.seq_len}", f"data.batch_size={args.pretrain_batch}",
            *extra, f"data.tokenizer.vocab_size={args.vocab_size}", f"trainer.max_steps={args.pretrain_steps}", *NO_DROPOUT,
            f"trainer.val_check_interval={args.pretrain_steps}", f"optim.optimizer.lr={args.pretrain_lr}", *common]))
        pre_min = (time.time() - t) / 60
        ft = ["experiment=finetune_sst2", "model=bert_tiny", f"model.max_seq_len={args.seq_len}",
              f"data.max_seq_len={args.seq_len}", *NO_DROPOUT,
              f"data.max_train_examples={args.train_examples}", f"data.tokenizer.vocab_size={args.vocab_size}",
              f"trainer.max_epochs={args.epochs}", "optim.optimizer.lr=3e-4", *common, *args.overrides]
        rows = {}
        for side, init in (("pretrained", pre["last_ckpt"]), ("from scratch", None)):
            t = time.time()
            m = train(compose_config([*ft, f"init_from={init}" if init else "init_from=null"]))
            m["minutes"] = (time.time() - t) / 60
            rows[side] = m
    corpus = "English + unlabelled SST-2 text" if not args.no_task_text else "English text"
    print(f"\npretraining: {args.pretrain_steps} {args.objective} steps (batch {args.pretrain_batch} x {args.seq_len}, "
          f"vocab {args.vocab_size}) on {corpus}, val/mlm_loss {pre['val/mlm_loss']:.3f}, val/mlm_acc {pre['val/mlm_acc']:.3f}, "
          f"{pre_min:.1f} min; fine-tuning: {args.train_examples} labelled examples x {args.epochs} epochs")
    print(f"\n{'SST-2 dev (6,735)':<22}" + "".join(f"{s:>14}" for s in rows))
    for k in ("test/acc", "test/f1", "val/loss"):
        print(f"{k:<22}" + "".join(f"{m[k]:>14.4f}" for m in rows.values()))
    print(f"{'fine-tune minutes':<22}" + "".join(f"{m['minutes']:>14.1f}" for m in rows.values()))


if __name__ == "__main__":
    main()
