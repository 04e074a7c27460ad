"""Test-only callback loaded by `train.py` subprocesses through `+callbacks.<name>._target_=...`
(tests/tracking is put on PYTHONPATH): it holds a run at a known step until the test lets it go,
so a test can change the world (stop a tracking server) at a known point of the run."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L


class Gate(L.Callback):
    """At the start of training step `step`, write `marker`, then wait until the file `release`
    exists (at most `timeout_s`; past that the run fails, so a broken test cannot hang)."""

    def __init__(self, step: int, marker: str, release: str, timeout_s: float = 180.0) -> None:
        self.step, self.marker, self.release, self.timeout_s = int(step), Path(marker), Path(release), float(timeout_s)

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step != self.step:
            return
        self.marker.write_text(str(trainer.global_step))
        end = time.monotonic() + self.timeout_s
        while not self.release.exists():
            if time.monotonic() > end:
                raise TimeoutError(f"Gate at step {self.step}: {self.release} never appeared")
            time.sleep(0.02)
