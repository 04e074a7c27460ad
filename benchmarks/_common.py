"""Helpers shared by the benchmark scripts (each runs as `python benchmarks/<name>.py`, which puts
this folder on `sys.path`)."""

from __future__ import annotations

import gc
import shlex
import time
from pathlib import Path


def held_out_sst2(shared: Path, root: Path, n_train: int, n_val: int, name: str = "sst2_heldout.tsv") -> Path:
    """The last `n_val` SST-2 train rows as a validation file under `root` (never among the first
    `n_train`, the ones the benchmark trains on)."""
    header, *lines = (shared / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines()
    if n_train + n_val > len(lines):
        raise SystemExit(f"--train-examples + --val-examples exceed the {len(lines)} SST-2 train rows")
    path = root / name
    path.write_text("\n".join([header, *lines[-n_val:]]) + "\n", encoding="utf-8")
    return path


def train_run(overrides: list[str], label: str, metric: str) -> tuple[dict, list[tuple[int, float]]]:
    """One in-process `train(compose_config(overrides))`, announced with the command it stands for:
    its final metrics (plus `wall_s`) and `metric` at every validation, as (global step, value)."""
    import lightning as L

    from lit_tf.cli.train import compose_config, train

    class History(L.Callback):
        def __init__(self) -> None:
            self.points: list[tuple[int, float]] = []

        def on_validation_end(self, trainer, pl_module) -> None:
            if not trainer.sanity_checking and metric in trainer.callback_metrics:
                self.points.append((trainer.global_step, float(trainer.callback_metrics[metric])))

    print(f"[{time.strftime('%H:%M:%S')}] {label}: python train.py {shlex.join(overrides)}", flush=True)
    hist = History()
    t0 = time.perf_counter()
    m = train(compose_config(overrides), callbacks=[hist])
    m["wall_s"] = time.perf_counter() - t0
    gc.collect()  # the next run in this process starts without this one's tensors
    return m, hist.points
