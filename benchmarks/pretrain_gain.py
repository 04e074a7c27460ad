"""Does pretraining help? SST-2 fine-tuned from a short pretraining run vs from scratch.

    python benchmarks/pretrain_gain.py [--pretrain-steps 18000] [--pretrain-batch 128] [--seq-len 32] [--vocab-size 4000]
        [--corpus task|general+task|general] [--train-examples 500,1000,3000] [--epochs 3]
        [--ft-lrs 3e-4,1e-3,3e-3] [--pretrained CKPT] [--out DIR] [key=value ...]

1. Pretrain a tiny BERT (MLM, `model=bert_tiny`) on English text from the shared data folder
   (`experiment=bert_mlm_nsp_en objective=mlm`: WikiText-2 + Tiny Shakespeare) and/or the
   *unlabelled* SST-2 training sentences (`--corpus`; the text column only, labels never reach
   pretraining), i.e. task-adaptive pretraining (Gururangan et al., 2020).
2. Fine-tune on SST-2 with the same budget on both sides (same model size, labelled rows,
   epochs, seed): from that checkpoint (`init_from=<ckpt>`), and from scratch (random init, a
   tokenizer trained on the SST-2 text). Each side tries the same few LRs and keeps the one with
   the best accuracy on held-out SST-2 train rows (a pretrained encoder wants a smaller LR than
   a random one; one shared LR would favour one side). Extra `key=value` overrides apply to
   every fine-tuning run.
Prints, per labelled-set size, each side's held-out accuracy by LR and its dev accuracy and macro-F1
at the chosen LR, side by side.
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


def split_sst2(shared: str, root: Path, n_train: int, n_val: int) -> tuple[Path, Path]:
    """First n_train rows of SST-2 train -> train file; last n_val rows -> a held-out val file (for
    choosing each side's fine-tuning LR); the 6,735-row dev split stays the reported test set."""
    header, *lines = Path(f"{shared}/sst2/train.tsv").read_text(encoding="utf-8").splitlines()
    if n_train + n_val > len(lines):
        raise SystemExit(f"--train-examples + --val-examples exceed the {len(lines)} SST-2 train rows")
    train_f, val_f = root / "ft_train.tsv", root / "ft_val.tsv"
    train_f.write_text("\n".join([header, *lines[:n_train]]) + "\n", encoding="utf-8")
    val_f.write_text("\n".join([header, *lines[-n_val:]]) + "\n", encoding="utf-8")
    return train_f, val_f


def pretrain(args, root: Path, shared: str) -> tuple[str, dict, float]:
    files = [f"{shared}/wikitext2/wiki.valid.raw", f"{shared}/tinyshakespeare/input.txt"]
    if args.corpus != "general":
        from lit_tf.data.finetune import read_labeled_table

        rows = read_labeled_table(f"{shared}/sst2/train.tsv", ["sentence"], "label")
        text_file = root / "sst2_sentences.txt"
        text_file.write_text("\n".join(r["sentence"] for r in rows) + "\n")  # text only, no labels
        files = [*files, str(text_file)] if args.corpus == "general+task" else [str(text_file)]
    extra = [f"data.train_files=[{','.join(files)}]",
             f"data.doc_per_line={'true' if args.objective == 'mlm' and args.corpus != 'general' else 'false'}"]
    t = time.time()
    pre = train(compose_config([
        "experiment=bert_mlm_nsp_en", f"objective={args.objective}", "model=bert_tiny",
        f"data.max_seq_len={args.seq_len}", f"model.max_seq_len={args.seq_len}", f"data.batch_size={args.pretrain_batch}",
        *extra, f"data.tokenizer.vocab_size={args.vocab_size}", f"trainer.max_steps={args.pretrain_steps}", *NO_DROPOUT,
        f"trainer.val_check_interval={args.pretrain_steps}", f"optim.optimizer.lr={args.pretrain_lr}",
        f"paths.log_dir={root / 'outputs'}", "logger=none"]))
    return pre["last_ckpt"], pre, (time.time() - t) / 60


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pretrain-steps", type=int, default=18000)
    ap.add_argument("--pretrain-lr", type=float, default=1e-3)
    ap.add_argument("--pretrain-batch", type=int, default=128)
    ap.add_argument("--seq-len", type=int, default=32, help="pretraining block length and fine-tuning max length")
    ap.add_argument("--vocab-size", type=int, default=4000, help="WordPiece vocabulary of both sides")
    ap.add_argument("--corpus", default="task", choices=["general", "general+task", "task"],
                    help="pretraining text: WikiText-2 + Tiny Shakespeare, plus / or only the unlabelled SST-2 sentences")
    ap.add_argument("--objective", default="mlm", choices=["mlm", "mlm_nsp"], help="pretraining objective")
    ap.add_argument("--pretrained", help="skip pretraining: fine-tune from this checkpoint")
    ap.add_argument("--train-examples", default="500,1000,3000", help="labelled-set sizes (comma-separated)")
    ap.add_argument("--val-examples", type=int, default=2000, help="held-out SST-2 train rows for LR choice")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--ft-lrs", default="3e-4,1e-3,3e-3", help="fine-tuning LRs tried on each side")
    ap.add_argument("--out", help="keep outputs (the pretraining checkpoint) here instead of a temp dir")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    lrs = [float(x) for x in args.ft_lrs.split(",")]
    sizes = [int(x) for x in args.train_examples.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        root.mkdir(parents=True, exist_ok=True)
        shared = compose_config([]).paths.shared_data
        if args.pretrained:
            ckpt, pre, pre_min = args.pretrained, None, 0.0
        else:
            ckpt, pre, pre_min = pretrain(args, root, shared)
        # results[n][side][lr] = final metrics of that fine-tuning run
        results: dict[int, dict[str, dict[float, dict]]] = {}
        for n in sizes:
            train_f, val_f = split_sst2(shared, root, n, args.val_examples)
            ft = ["experiment=finetune_sst2", "model=bert_tiny", f"model.max_seq_len={args.seq_len}",
                  f"data.max_seq_len={args.seq_len}", *NO_DROPOUT, f"data.train={train_f}", f"data.val={val_f}",
                  f"data.tokenizer.vocab_size={args.vocab_size}", f"trainer.max_epochs={args.epochs}",
                  f"paths.log_dir={root / 'outputs'}", "logger=none", *args.overrides]
            for side, init in (("pretrained", ckpt), ("from scratch", None)):
                for lr in lrs:
                    t = time.time()
                    m = train(compose_config([*ft, f"optim.optimizer.lr={lr}",
                                              f"init_from={init}" if init else "init_from=null"]))
                    m["minutes"] = (time.time() - t) / 60
                    results.setdefault(n, {}).setdefault(side, {})[lr] = m
    corpus = {"general": "English text", "general+task": "English + unlabelled SST-2 text",
              "task": "unlabelled SST-2 text only"}[args.corpus]
    if pre is not None:
        print(f"\npretraining: {args.pretrain_steps} {args.objective} steps (batch {args.pretrain_batch} x {args.seq_len}, "
              f"vocab {args.vocab_size}, LR {args.pretrain_lr}) on {corpus}: val/mlm_loss {pre['val/mlm_loss']:.3f}, "
              f"val/mlm_acc {pre['val/mlm_acc']:.3f}, {pre_min:.1f} min")
    else:
        print(f"\npretrained checkpoint: {ckpt}")
    print(f"fine-tuning: the first N SST-2 train rows x {args.epochs} epochs, same model size and seed on both sides; "
          f"each side's LR chosen from {lrs} on {args.val_examples} held-out train rows; reported on SST-2 dev (6,735)")
    print(f"\n{'labelled rows':<14}{'side':<14}" + "".join(f"{'val@' + format(lr, 'g'):>11}" for lr in lrs)
          + f"{'LR':>9}{'dev acc':>10}{'dev F1':>9}")
    for n, sides in results.items():
        for side, by_lr in sides.items():
            lr, m = max(by_lr.items(), key=lambda kv: kv[1]["val/acc"])
            print(f"{n:<14}{side:<14}" + "".join(f"{by_lr[x]['val/acc']:>11.4f}" for x in lrs)
                  + f"{lr:>9g}{m['test/acc']:>10.4f}{m['test/f1']:>9.4f}")

if __name__ == "__main__":
    main()
