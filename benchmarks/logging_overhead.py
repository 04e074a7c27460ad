"""Does MLflow logging slow a training step? The same run with logger=none and logger=mlflow.

    python benchmarks/logging_overhead.py [--steps 200] [key=value ...]

Both sides use the same config, data, seed and process; the figure is the median wall time of
a training step (batch start to batch end, which includes `self.log` and the logger's
`log_metrics`), with `trainer.log_every_n_steps=1` so every step logs — the worst case.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L

from lit_tf.cli.train import compose_config, train


class StepTimer(L.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self._t = 0.0

    def on_train_batch_start(self, *args) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(self, *args) -> None:
        self.times.append(time.perf_counter() - self._t)


def run(logger: str, steps: int, overrides: list[str], root: Path) -> list[float]:
    timer = StepTimer()
    cfg = compose_config([
        f"logger={logger}", "debug=smoke", f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}",
        "trainer.log_every_n_steps=1", "callbacks.progress_bar=null", f"paths.log_dir={root / 'outputs'}",
        f"paths.mlruns_dir={root / 'mlruns'}", *overrides,
    ])
    train(cfg, callbacks=[timer])
    return timer.times[10:]  # skip warm-up steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run("none", 20, args.overrides, root)  # build tokenizer/shards once, outside the timing
        rows = {name: run(name, args.steps, args.overrides, root) for name in ("none", "mlflow")}
    base = statistics.median(rows["none"])
    print(f"\n{'logger':<8} {'median step ms':>15} {'p90 step ms':>12} {'vs none':>8}")
    for name, t in rows.items():
        med, p90 = statistics.median(t), statistics.quantiles(t, n=10)[-1]
        print(f"{name:<8} {med * 1e3:>15.2f} {p90 * 1e3:>12.2f} {med / base:>7.2f}x")


if __name__ == "__main__":
    main()
