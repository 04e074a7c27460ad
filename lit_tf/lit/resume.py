"""Where a run continues from: `ckpt_path` (a file or `last`), a requeued SLURM job's own checkpoint,
and the run sidecar (`run.json`) that ties a checkpoint folder to its MLflow run and tokenizer."""

from __future__ import annotations

import json
import os
from pathlib import Path

from lit_tf.errors import CheckpointError

RUN_FILE = "run.json"  # sidecar in each run's output dir: MLflow run id, tokenizer key, ...


def find_last_checkpoint(runs_root: Path) -> Path:
    cands = sorted(runs_root.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not cands:
        raise CheckpointError(
            f"ckpt_path=last: no checkpoint found under {runs_root}/*/checkpoints/last.ckpt",
            hint="train this experiment once first, or give ckpt_path=/path/to/file.ckpt",
        )
    return cands[-1]


def resolve_checkpoint(ckpt_path: str | None, runs_root: Path) -> tuple[Path | None, dict]:
    """(checkpoint file, the run sidecar of the run that wrote it — {} if unknown)."""
    if not ckpt_path:
        return None, {}
    from lit_tf.lit.checkpoint import read_checkpoint

    path = find_last_checkpoint(runs_root) if ckpt_path == "last" else Path(ckpt_path).expanduser().resolve()
    # weights-only and memory-mapped: a cheap check that Lightning will be able to resume from it
    read_checkpoint(path, "ckpt_path", mmap=True,
                    require=("state_dict", "loops", "optimizer_states", "pytorch-lightning_version"))
    sidecar = path.parent.parent / RUN_FILE
    return path, (json.loads(sidecar.read_text()) if sidecar.is_file() else {})


def requeued_checkpoint(output_dir: Path) -> Path | None:
    """The checkpoint to continue from when this run is a requeued SLURM job, else None.

    A requeued job (`SLURM_RESTART_COUNT` >= 1: preempted, past its time limit, or its node lost)
    runs the same submission again. In a multirun (or with a stable `hydra.run.dir`) its output
    folder is the same one (`hydra.sweep.dir/hydra.sweep.subdir`), where the earlier attempt's
    run.json names the folder it checkpointed to (and the MLflow run that `resolve_checkpoint`
    then continues). No checkpoint there yet (stopped before the first one): None, a fresh start.
    """
    try:
        restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        restarts = 0
    if restarts < 1:
        return None
    folder = output_dir / "checkpoints"
    sidecar = output_dir / RUN_FILE
    if sidecar.is_file():
        folder = Path(json.loads(sidecar.read_text()).get("checkpoint_dir") or folder)
    last = folder / "last.ckpt"
    return last if last.is_file() else None


def write_json_atomic(path: Path, obj: dict) -> None:
    from lit_tf.data.atomic import atomic_file

    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2))
