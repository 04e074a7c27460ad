"""How fast and how heavy `make ui` is: seconds from the command to the first answered page, and the
processes and resident memory it holds once serving, side by side with MLflow's defaults.

    python benchmarks/ui_startup.py [--rounds N]

Sides, alternating, each over the same store (a copy of `mlruns/` or an empty one):
  make ui        lit_tf's target (one worker, no job runner unless MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true)
  mlflow ui      MLflow's defaults (4 uvicorn workers, the huey job runner) on the same store
Ends with `RATIO ui_first_response <defaults s / make ui s>` (higher is better for lit_tf).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tree(pid: int) -> list[psutil.Process]:
    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def measure(argv: list[str], port: int, env: dict[str, str], settle_s: float = 5.0) -> tuple[float, int, float]:
    """(seconds to the first 200 from `/`, processes, RSS in MB `settle_s` after that) of one start."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{' '.join(argv)} exited with {proc.returncode} before answering")
            if time.perf_counter() - t0 > 300:
                raise RuntimeError(f"{' '.join(argv)} did not answer within 300 s")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        first = time.perf_counter() - t0
        time.sleep(settle_s)  # what stays running once it serves (job runners start after the first answer)
        procs = _tree(proc.pid)
        rss = 0.0
        for p in procs:
            try:
                rss += p.memory_info().rss / 2**20
            except psutil.NoSuchProcess:
                pass
        return first, len(procs), rss
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    mlflow_bin = str(Path(sys.executable).parent / "mlflow")
    with tempfile.TemporaryDirectory(prefix="lit_tf_ui_") as tmp:
        store = Path(tmp) / "mlruns"
        store.mkdir()
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"}
        sides = {
            "make ui": lambda port: ["make", "-s", "ui", f"PORT={port}", f"MLRUNS={store}"],
            "mlflow ui (defaults)": lambda port: [
                mlflow_bin, "ui", "--backend-store-uri", f"sqlite:///{store}/mlflow.db", "--default-artifact-root",
                f"file://{store}/artifacts", "--host", "127.0.0.1", "--port", str(port)],
        }
        results: dict[str, list[tuple[float, int, float]]] = {k: [] for k in sides}
        for r in range(args.rounds):
            for name, argv in sides.items():
                port = _free_port()
                results[name].append(measure(argv(port), port, env))
                first, n, rss = results[name][-1]
                print(f"  round {r + 1}: {name}: first page {first:.1f} s, {n} processes, {rss:,.0f} MB", flush=True)
    print(f"\n{'side':<24} {'first page s':>13} {'processes':>10} {'RSS MB':>8}")
    med = {}
    for name, rows in results.items():
        med[name] = tuple(statistics.median(x[i] for x in rows) for i in range(3))
        print(f"{name:<24} {med[name][0]:>13.1f} {med[name][1]:>10.0f} {med[name][2]:>8,.0f}")
    print(f"RATIO ui_first_response {med['mlflow ui (defaults)'][0] / med['make ui'][0]:.3f}")


if __name__ == "__main__":
    main()
