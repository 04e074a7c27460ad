"""What does pruning buy? The same 16-trial Optuna search with and without a pruner.

    python benchmarks/sweep_pruning.py [--trials 16] [--steps 200] [key=value ...]

Both sides run `python train.py -m sweep=gpt_clm` on a tiny GPT trained on real text (Tiny
Shakespeare + WikiText-2 from the shared data folder, a byte-level BPE with 2,000 tokens),
with the same search space, TPE seed, step budget and validation schedule; only the pruner
differs: `median` (n_startup_trials=4, n_warmup_steps=steps/4) against `none`. Prints the wall
time, the best val/loss, and how many trials were pruned, side by side. Extra key=value
overrides go to both sweeps.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]


def sweep(root: Path, name: str, pruner: str, trials: int, steps: int, extra: list[str]) -> dict:
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", "sweep=gpt_clm", "model=gpt_tiny", "logger=none",
           f"paths.log_dir={root / 'outputs'}", f"hydra.sweeper.study_name={name}", f"hydra.sweeper.n_trials={trials}",
           f"trainer.max_steps={steps}", f"trainer.val_check_interval={max(1, steps // 8)}",
           "trainer.limit_val_batches=10", "data.max_seq_len=64", "model.max_seq_len=64",
           "data.tokenizer.vocab_size=2000", "hydra.sweeper.seed=0", "~hydra.sweeper.pruner",
           f"+hydra.sweeper.pruner={pruner}", "callbacks.progress_bar=null", "callbacks.generate_samples=null", *extra]
    t = time.time()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    wall = time.time() - t
    from lit_tf.sweeping.study import open_storage

    study = optuna.load_study(study_name=name, storage=open_storage(str(root / "outputs/sweeps" / name / "optuna.journal")))
    states = [t.state.name for t in study.trials]
    # a pruned trial stopped at its pruned step; every other trial ran the full budget
    steps_run = sum(int(t.user_attrs.get("lit_tf.pruned_step", steps)) for t in study.trials)
    return {"wall_min": wall / 60, "best": study.best_value, "best_trial": study.best_trial.number,
            "pruned": states.count("PRUNED"), "complete": states.count("COMPLETE"), "failed": states.count("FAIL"),
            "steps": steps_run}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--steps", type=int, default=200, help="training steps of an unpruned trial")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    warmup = max(1, args.steps // 4)
    sides = {
        "median pruner": f"{{name: median, n_startup_trials: 4, n_warmup_steps: {warmup}}}",
        "no pruner": "{name: none}",
    }
    with tempfile.TemporaryDirectory() as tmp:
        rows = {label: sweep(Path(tmp), f"bench_{i}", pruner, args.trials, args.steps, args.overrides)
                for i, (label, pruner) in enumerate(sides.items())}
    print(f"\n{args.trials}-trial TPE search (seed 0) over lr, min_lr_ratio, d_model, dropout; tiny GPT, "
          f"{args.steps} steps per full trial, validation every {max(1, args.steps // 8)} steps")
    print(f"{'':<26}" + "".join(f"{label:>16}" for label in rows))
    fmt = {"wall_min": "{:.1f}", "best": "{:.4f}", "best_trial": "{}", "complete": "{}", "pruned": "{}",
           "failed": "{}", "steps": "{}"}
    names = {"wall_min": "wall time (min)", "best": "best val/loss", "best_trial": "best trial #",
             "complete": "trials complete", "pruned": "trials pruned", "failed": "trials failed",
             "steps": "training steps run"}
    for key, f in fmt.items():
        print(f"{names[key]:<26}" + "".join(f"{f.format(r[key]):>16}" for r in rows.values()))


if __name__ == "__main__":
    main()
