"""Does ELECTRA learn more per FLOP than BERT's masked LM here? Equal-FLOPs and equal-time pretraining,
then the same SST-2 fine-tuning from each encoder.

    python benchmarks/electra_vs_mlm.py [--bert-steps N] [--seeds N] [--root DIR] [--quick]
        [--d-model 128] [--layers 4] [--heads 2] [--d-ff 512] [--embedding-size D] [--generator-size 0.25]
        [--seq-len 128] [--batch 32] [--vocab-size 8000] [--lr 1e-3] [--ft-max-len 64]
        [--train-examples 3000] [--val-examples 2000] [--epochs 3] [--ft-lrs 3e-4,1e-3] [--ft-seeds 3]
        [--no-scratch] [key=value ...]

Pretraining (same English text, `data=english`: WikiText-2 valid + Tiny Shakespeare, 5% of documents
held out; same WordPiece tokenizer, sequence length, batch size, AdamW, LR schedule, clipping and seed):
  - BERT MLM: `experiment=bert_mlm_nsp_en objective=mlm` (no NSP), encoder of the given shape;
  - ELECTRA: `experiment=electra_en`, the discriminator of the very same shape (d_model, layers,
    heads, d_ff; embeddings as wide as d_model unless --embedding-size, so the fine-tuned encoders are
    the same network), a generator `--generator-size` of its width (ELECTRA-Small's 1/4), lambda = 50.
Both without dropout (tiny models on short budgets underfit; as benchmarks/pretrain_gain.py).

Budgets (BERT runs once, `--bert-steps`; its run is the reference of both budgets):
  (a) equal FLOPs: training FLOPs per token of each model from `lit_tf.lit.perf.flops_per_token`
      (for ELECTRA: discriminator blocks + generator tower + both heads, the family's `head_weights`);
      ELECTRA gets steps = BERT steps x BERT FLOPs/token / ELECTRA FLOPs/token (same tokens per step).
      Reported FLOPs = real tokens trained x FLOPs/token.
  (b) equal time: the seconds of the BERT run's training loop (fit start to its last step, validation
      excluded; data preparation and set-up are the same for both and left out) filled by ELECTRA at the
      pace measured in its equal-FLOPs run (that run is the timing run): steps = 1 + (BERT's seconds -
      ELECTRA's first step) / ELECTRA's median seconds per step. A step count rather than a `max_time`
      stop, so the LR schedule decays to its end. The realised seconds are reported (`train s`).
Every pretraining run is a fresh spawned process (no allocator or cache state carried between the
timed runs) with the malloc `python train.py` picks; nothing else should run meanwhile.

Fine-tuning (as benchmarks/pretrain_gain.py): `experiment=finetune_sst2 init_from=<last.ckpt>` on the
first `--train-examples` SST-2 train rows (`data.max_train_examples`) for `--epochs` epochs; each
side tries the LRs of `--ft-lrs` with `--ft-seeds` fine-tuning seeds each, keeps the LR with the best
mean accuracy on the last `--val-examples` SST-2 train rows (held out), and reports the mean accuracy
and macro-F1 on the SST-2 dev split (6,735 rows) at that LR, from each run's best epoch on the held-out
rows. The from-scratch baseline is the BERT of the same shape with random weights and the pretraining
tokenizer (only the weights differ). Extra `key=value` overrides apply to both pretraining runs.

Outputs (checkpoints, tokenizer and shard cache, logs) go to `--root` or a temp dir with their own
paths.* (the user's outputs/, mlruns/ and cache stay untouched); no MLflow logging (`logger=none`).
Prints a Markdown table (one row per budget and model, BERT's run shown under both budgets), the
`RATIO` lines and the command.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import held_out_sst2

# Sizes: the default fits ~30 minutes on 2 CPU cores; --quick is for the test (tiny, a few steps).
DEFAULTS = dict(d_model=128, layers=4, heads=2, d_ff=512, seq_len=128, batch=32, vocab_size=8000, lr=1e-3,
                bert_steps=1600, train_examples=3000, val_examples=2000, epochs=3, ft_lrs="3e-4,1e-3", ft_seeds=3,
                ft_max_len=64)
QUICK = dict(d_model=32, layers=1, heads=2, d_ff=64, seq_len=32, batch=8, vocab_size=500, lr=1e-3,
             bert_steps=20, train_examples=200, val_examples=100, epochs=1, ft_lrs="1e-3", ft_seeds=1, ft_max_len=32)
QUICK_DATA = ["data.max_docs=200", "data.tokenizer.max_train_docs=200"]
QUICK_FT = ["data.max_eval_examples=200"]


# ----------------------------------------------------------------------------- one pretraining run
def train_clock(seq_len: int):
    """A Lightning callback measuring the seconds of the fit loop (first to last step, validation
    excluded), the real tokens trained and the model's FLOPs per token as lit_tf counts them
    (`lit_tf.lit.perf.flops_per_token`); built in the run's process (lightning imported there)."""
    import lightning as L

    from lit_tf.lit.perf import flops_per_token

    class TrainClock(L.Callback):
        def __init__(self) -> None:
            self.t0 = self.paused = 0.0
            self.pause_start: float | None = None
            self.first_step_s: float | None = None
            self.last_end: float | None = None
            self.step_s: list[float] = []  # end-to-end seconds of each step after the first (data included)
            self.result: dict[str, Any] = {}

        def on_train_start(self, trainer, pl_module) -> None:
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            now = time.perf_counter()
            if self.first_step_s is None:  # the first step carries one-off costs (warm-up, allocations)
                self.first_step_s = now - self.t0 - self.paused
            else:  # validation runs only after the last step here, so no interval holds one
                self.step_s.append(now - self.last_end)
            self.last_end = now

        def on_validation_start(self, trainer, pl_module) -> None:
            if trainer.state.fn == "fit":
                self.pause_start = time.perf_counter()

        def on_validation_end(self, trainer, pl_module) -> None:
            if self.pause_start is not None:
                self.paused += time.perf_counter() - self.pause_start
                self.pause_start = None

        def on_train_end(self, trainer, pl_module) -> None:
            meta, cfg = pl_module.meta, pl_module.model.cfg
            self.result = {
                "train_s": time.perf_counter() - self.t0 - self.paused,
                "first_step_s": self.first_step_s or 0.0,
                "median_step_s": statistics.median(self.step_s) if self.step_s else 0.0,
                "tokens": float(pl_module.tokens_seen),
                "steps": int(trainer.global_step),
                "flops_per_token": flops_per_token(meta["family"], cfg, meta["objective"], seq_len),
                "vocab_size": int(cfg.vocab_size),
                "params": sum(p.numel() for p in pl_module.model.parameters()),
            }

    return TrainClock()


def _train_child(overrides: list[str], seq_len: int) -> dict[str, Any]:
    """In a spawned process: one pretraining run; its final metrics and the clock's figures."""
    from lit_tf.cli.train import compose_config, train

    clock = train_clock(seq_len)
    m = train(compose_config(overrides), callbacks=[clock])
    keep = {k: v for k, v in m.items() if isinstance(v, (int, float, str)) or v is None}
    return {**keep, **clock.result}


def run_fresh(overrides: list[str], seq_len: int) -> dict[str, Any]:
    """One pretraining run in a fresh spawned process (it inherits this process's LD_PRELOAD malloc)."""
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(_train_child, overrides, seq_len).result()


def steady_step_s(run: dict[str, Any]) -> float:
    """The run's pace: the median seconds of its steps after the first (robust to a stretch of
    machine load that a mean would spread over the whole run); the loop's mean for a one-step run."""
    return run["median_step_s"] or run["train_s"] / max(1, run["steps"])


# ----------------------------------------------------------------------------- configuration
def common(a: argparse.Namespace, root: Path) -> list[str]:
    """Paths and quiet logging shared by every run."""
    return [f"paths.log_dir={root / 'outputs'}", f"paths.cache_dir={root / 'cache'}",
            f"paths.mlruns_dir={root / 'mlruns'}", "logger=none", "callbacks.progress_bar=null"]


def shape(a: argparse.Namespace) -> list[str]:
    """The encoder shape both models share (BERT's encoder = ELECTRA's discriminator), no dropout."""
    return [f"model.d_model={a.d_model}", f"model.n_layers={a.layers}", f"model.n_heads={a.heads}",
            f"model.d_ff={a.d_ff}", f"model.max_seq_len={a.seq_len}", "model.dropout=0.0", "model.attn_dropout=0.0"]


def pretrain_overrides(kind: str, a: argparse.Namespace, steps: int, seed: int, root: Path) -> list[str]:
    model = (["experiment=bert_mlm_nsp_en", "objective=mlm", "model=bert_tiny"] if kind == "bert" else
             ["experiment=electra_en", "model=electra_small", f"model.embedding_size={a.embedding_size or a.d_model}",
              f"model.generator_size={a.generator_size}"])
    return [*model, *shape(a), f"data.max_seq_len={a.seq_len}", f"data.batch_size={a.batch}",
            f"data.tokenizer.vocab_size={a.vocab_size}", *(QUICK_DATA if a.quick else []),
            f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}", "trainer.limit_val_batches=1.0",
            "callbacks.last_checkpoint=null",  # no periodic checkpoint writes inside the timed loop
            f"optim.optimizer.lr={a.lr}", f"seed={seed}", *common(a, root), *a.overrides]


def electra_flops_per_token(a: argparse.Namespace, vocab_size: int, seed: int, root: Path) -> float:
    """ELECTRA's training FLOPs per token for this shape and vocabulary, before running it."""
    from omegaconf import OmegaConf

    from lit_tf.cli.train import compose_config
    from lit_tf.lit.perf import flops_per_token
    from lit_tf.models.families import FAMILIES

    cfg = compose_config(pretrain_overrides("electra", a, 1, seed, root))
    model = {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k != "family"}
    objective = OmegaConf.to_container(cfg.objective, resolve=True)
    return flops_per_token("electra", FAMILIES["electra"].make_config({**model, "vocab_size": vocab_size}),
                           objective, a.seq_len)


# ----------------------------------------------------------------------------- fine-tuning
@dataclass
class FineTuned:
    lr: float
    heldout_acc: float  # mean over fine-tuning seeds at the chosen LR
    dev_acc: float
    dev_acc_sd: float
    dev_f1: float
    by_lr: dict[float, float]  # mean held-out accuracy per LR


def finetune(a: argparse.Namespace, root: Path, val_file: Path, init: str | None, tokenizer: Path) -> FineTuned:
    """One side: every LR x fine-tuning seed; the LR with the best mean held-out accuracy."""
    from lit_tf.cli.train import compose_config, train

    base = ["experiment=finetune_sst2", f"data.max_train_examples={a.train_examples}", f"data.val={val_file}",
            f"data.max_seq_len={min(a.ft_max_len, a.seq_len)}", f"trainer.max_epochs={a.epochs}",
            *(QUICK_FT if a.quick else []), *common(a, root), "callbacks.last_checkpoint=null"]
    if init:
        base.append(f"init_from={init}")  # the encoder's config, weights and tokenizer come from the checkpoint
    else:
        base += ["init_from=null", "model=bert_tiny", *shape(a), f"data.tokenizer.path={tokenizer}"]
    runs: dict[float, list[dict]] = {}
    for lr in [float(x) for x in a.ft_lrs.split(",")]:
        for s in range(a.ft_seeds):
            runs.setdefault(lr, []).append(train(compose_config([*base, f"optim.optimizer.lr={lr}", f"seed={s}"])))
    by_lr = {lr: statistics.mean(m["val/acc"] for m in ms) for lr, ms in runs.items()}
    lr = max(by_lr, key=by_lr.__getitem__)
    accs = [m["test/acc"] for m in runs[lr]]
    return FineTuned(lr, by_lr[lr], statistics.mean(accs), statistics.stdev(accs) if len(accs) > 1 else 0.0,
                     statistics.mean(m["test/f1"] for m in runs[lr]), by_lr)


# ----------------------------------------------------------------------------- one seed
def one_seed(a: argparse.Namespace, seed: int, root: Path, val_file: Path) -> dict[str, dict]:
    """BERT, ELECTRA at equal FLOPs, ELECTRA at equal time, then fine-tuning of each (and scratch)."""
    from lit_tf.lit.init_from import resolve_init

    runs: dict[str, dict] = {}
    print(f"\n[seed {seed}] BERT MLM: {a.bert_steps} steps", flush=True)
    bert = runs["bert"] = run_fresh(pretrain_overrides("bert", a, a.bert_steps, seed, root), a.seq_len)
    tokens_per_step = bert["tokens"] / bert["steps"]

    fpt_e = electra_flops_per_token(a, bert["vocab_size"], seed, root)
    steps_f = max(1, round(bert["tokens"] * bert["flops_per_token"] / (tokens_per_step * fpt_e)))
    print(f"[seed {seed}] ELECTRA, equal FLOPs: {steps_f} steps ({fpt_e / 1e6:.2f} vs BERT "
          f"{bert['flops_per_token'] / 1e6:.2f} MFLOP/token)", flush=True)
    ef = runs["electra_flops"] = run_fresh(pretrain_overrides("electra", a, steps_f, seed, root), a.seq_len)

    # ELECTRA's loop time for n steps ~ its first step + (n - 1) x its pace: solve for BERT's seconds
    rate_e, rate_b = steady_step_s(ef), steady_step_s(bert)
    steps_t = max(1, 1 + round((bert["train_s"] - ef["first_step_s"]) / rate_e))
    print(f"[seed {seed}] ELECTRA, equal time: {steps_t} steps (BERT trained {bert['train_s']:.1f} s; median step "
          f"ELECTRA {1e3 * rate_e:.0f} ms vs BERT {1e3 * rate_b:.0f} ms)", flush=True)
    if steps_t == steps_f:  # the same run: do not train it twice
        runs["electra_time"] = ef
    else:
        runs["electra_time"] = run_fresh(pretrain_overrides("electra", a, steps_t, seed, root), a.seq_len)

    tok = root / f"pretrain_tokenizer_seed{seed}.json"  # the scratch side reads the pretraining vocabulary
    resolve_init(bert["last_ckpt"], "").tokenizer.save(str(tok))
    done: dict[str, FineTuned] = {}
    for name, run in runs.items():
        ckpt = run["last_ckpt"]
        if ckpt not in done:  # equal-time ELECTRA may be the equal-FLOPs run
            print(f"[seed {seed}] fine-tuning from {name}", flush=True)
            done[ckpt] = finetune(a, root, val_file, ckpt, tok)
        run["ft"] = done[ckpt]
    if not a.no_scratch:
        print(f"[seed {seed}] fine-tuning from scratch", flush=True)
        runs["scratch"] = {"ft": finetune(a, root, val_file, None, tok)}
    return runs


# ----------------------------------------------------------------------------- report
ROWS = (("equal FLOPs", "BERT MLM", "bert"), ("equal FLOPs", "ELECTRA", "electra_flops"),
        ("equal time", "BERT MLM", "bert"), ("equal time", "ELECTRA", "electra_time"))
HEADER = ("budget", "model", "pretrain steps", "MFLOP/token", "total FLOPs", "train s", "wall s", "val/mlm_acc",
          "val/gen_mlm_acc", "val/rtd_auc", "SST-2 LR", "held-out acc", "dev acc", "dev acc sd", "dev F1")


def _mean(vals: list[float]) -> float:
    return statistics.mean(vals)


def _fmt(vals: list[float], spec: str) -> str:
    """Mean of the seeds (and their sd when there are several)."""
    if not vals:
        return "-"
    m = format(_mean(vals), spec)
    return m if len(vals) == 1 else f"{m} ± {format(statistics.stdev(vals), spec)}"


def table(seeds: list[dict[str, dict]]) -> list[str]:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
    for budget, label, key in ROWS:
        rs = [s[key] for s in seeds]
        flops = [r["tokens"] * r["flops_per_token"] for r in rs]
        lrs = sorted({r["ft"].lr for r in rs})
        cells = [budget, label, _fmt([r["steps"] for r in rs], ".0f"), _fmt([r["flops_per_token"] / 1e6 for r in rs], ".3f"),
                 _fmt(flops, ".4e"), _fmt([r["train_s"] for r in rs], ".1f"), _fmt([r["wall_s"] for r in rs], ".1f"),
                 _fmt([r["val/mlm_acc"] for r in rs if "val/mlm_acc" in r], ".4f"),
                 _fmt([r["val/gen_mlm_acc"] for r in rs if "val/gen_mlm_acc" in r], ".4f"),
                 _fmt([r["val/rtd_auc"] for r in rs if "val/rtd_auc" in r], ".4f"),
                 ",".join(format(x, "g") for x in lrs), _fmt([r["ft"].heldout_acc for r in rs], ".4f"),
                 _fmt([r["ft"].dev_acc for r in rs], ".4f"), format(_mean([r["ft"].dev_acc_sd for r in rs]), ".4f"),
                 _fmt([r["ft"].dev_f1 for r in rs], ".4f")]
        lines.append("| " + " | ".join(cells) + " |")
    if "scratch" in seeds[0]:
        fts = [s["scratch"]["ft"] for s in seeds]
        cells = ["none", "BERT from scratch", "0", "-", "0", "-", "-", "-", "-", "-",
                 ",".join(format(x, "g") for x in sorted({f.lr for f in fts})), _fmt([f.heldout_acc for f in fts], ".4f"),
                 _fmt([f.dev_acc for f in fts], ".4f"), format(_mean([f.dev_acc_sd for f in fts]), ".4f"),
                 _fmt([f.dev_f1 for f in fts], ".4f")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def report(a: argparse.Namespace, seeds: list[dict[str, dict]], seed_ids: list[int]) -> None:
    s0 = seeds[0]
    print(f"\nshape (both): d_model {a.d_model}, {a.layers} layers, {a.heads} heads, d_ff {a.d_ff}; ELECTRA: "
          f"embeddings {a.embedding_size or a.d_model} wide, generator {a.generator_size:g} of its width; params BERT {s0['bert']['params'] / 1e6:.2f}M, "
          f"ELECTRA (generator + discriminator) {s0['electra_flops']['params'] / 1e6:.2f}M")
    print(f"pretraining: English (WikiText-2 valid + Tiny Shakespeare), WordPiece {s0['bert']['vocab_size']}, "
          f"{a.batch} x {a.seq_len}-token blocks, AdamW LR {a.lr:g} (linear warm-up 6%, linear decay), no dropout, "
          f"seeds {seed_ids}")
    print(f"fine-tuning: first {a.train_examples} SST-2 train rows x {a.epochs} epochs, LRs {a.ft_lrs} x "
          f"{a.ft_seeds} seed(s) each, LR chosen on {a.val_examples} held-out train rows; dev = SST-2 dev"
          f"{' (first 200 rows: --quick)' if a.quick else ' (6,735 rows)'}; BERT's run is the reference of both budgets\n")
    for line in table(seeds):
        print(line)
    print("\n(dev acc sd: the sd over fine-tuning seeds at the chosen LR; with several pretraining seeds, cells read"
          " mean ± sd over them)")
    for key, label in (("bert", "BERT MLM"), ("electra_flops", "ELECTRA equal FLOPs"),
                       ("electra_time", "ELECTRA equal time"), ("scratch", "BERT from scratch")):
        if key in s0:
            by_lr = {lr: _mean([s[key]["ft"].by_lr[lr] for s in seeds]) for lr in s0[key]["ft"].by_lr}
            print(f"held-out acc by fine-tuning LR, {label}: " + ", ".join(f"{lr:g}: {v:.4f}" for lr, v in by_lr.items()))
    flops = _mean([s["electra_flops"]["tokens"] * s["electra_flops"]["flops_per_token"]
                   / (s["bert"]["tokens"] * s["bert"]["flops_per_token"]) for s in seeds])
    secs = _mean([s["electra_time"]["train_s"] / s["bert"]["train_s"] for s in seeds])
    print(f"\nRATIO equal_flops_electra_over_bert {flops:.4f}")
    print(f"RATIO equal_time_electra_over_bert {secs:.4f}")
    for budget, key in (("equal_flops", "electra_flops"), ("equal_time", "electra_time")):
        d = _mean([s[key]["ft"].dev_acc - s["bert"]["ft"].dev_acc for s in seeds])
        print(f"DELTA {budget}_dev_acc_electra_minus_bert {100 * d:+.2f}")
    print("\ncommand: python benchmarks/electra_vs_mlm.py " + " ".join(shlex.quote(x) for x in sys.argv[1:]))


def main() -> None:
    from lit_tf.allocator import use_fast_allocator

    use_fast_allocator()  # as `python train.py` runs: tcmalloc when installed (may re-execute this command once)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny models and budgets (the test; under 2 minutes)")
    ap.add_argument("--seeds", type=int, default=1, help="pretraining seeds (the whole benchmark repeated)")
    ap.add_argument("--seed", type=int, default=1234, help="first pretraining seed")
    ap.add_argument("--root", help="keep outputs here instead of a temp dir")
    ap.add_argument("--no-scratch", action="store_true", help="skip the from-scratch fine-tuning baseline")
    for k in ("d_model", "layers", "heads", "d_ff", "seq_len", "batch", "vocab_size", "bert_steps",
              "train_examples", "val_examples", "epochs", "ft_seeds", "ft_max_len"):
        ap.add_argument("--" + k.replace("_", "-"), type=int)
    ap.add_argument("--lr", type=float, help="pretraining peak LR (both)")
    ap.add_argument("--ft-lrs", help="fine-tuning LRs tried on each side (comma-separated)")
    ap.add_argument("--embedding-size", type=int, help="ELECTRA's embedding width (default: d_model)")
    ap.add_argument("--generator-size", type=float, default=0.25, help="ELECTRA's generator width fraction")
    ap.add_argument("overrides", nargs="*", help="key=value overrides for both pretraining runs")
    a = ap.parse_args()
    for k, v in (QUICK if a.quick else DEFAULTS).items():
        if getattr(a, k) is None:
            setattr(a, k, v)

    from lit_tf.cli.train import compose_config

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(a.root or tmp).resolve()
        root.mkdir(parents=True, exist_ok=True)
        shared = Path(compose_config([]).paths.shared_data)
        for f in ("wikitext2/wiki.valid.raw", "tinyshakespeare/input.txt", "sst2/train.tsv", "sst2/dev.tsv"):
            if not (shared / f).is_file():
                raise SystemExit(f"shared data missing: {shared / f} (set LIT_TF_SHARED_DATA)")
        val_file = held_out_sst2(shared, root, a.train_examples, a.val_examples)
        seed_ids = [a.seed + i for i in range(a.seeds)]
        t = time.time()
        seeds = [one_seed(a, s, root, val_file) for s in seed_ids]
        print(f"\nbenchmark wall time: {(time.time() - t) / 60:.1f} min")
        report(a, seeds, seed_ids)


if __name__ == "__main__":
    main()
