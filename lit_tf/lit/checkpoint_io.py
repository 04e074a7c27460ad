"""Checkpoint files that are either the old version or the new one, never half of either.

`AtomicCheckpointIO` (plugged into the Trainer by `lit_tf.cli.train`) writes each checkpoint to a
hidden temporary file in the same folder, fsyncs it, renames it over the target with
`os.replace` (atomic on POSIX and Windows) and fsyncs the folder. A process killed at any moment
(SIGKILL, OOM killer, power loss after the rename) leaves `last.ckpt` as the previous complete
checkpoint or the new complete one. A kill mid-write leaves only a `.<name>.<random>.tmp` file,
removed by the next successful save of that name.

Lightning's own `TorchCheckpointIO` serialises to memory and moves a temporary file from the
system temp folder (often another filesystem, so not a rename) without fsync.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from lit_tf.data.atomic import atomic_file


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return  # Windows cannot open a folder for fsync; os.replace is still atomic there
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save(obj, path) through a fsynced temporary file in the same folder and os.replace."""
    path = Path(path)
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(path.parent)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by an earlier writer killed mid-write
        with contextlib.suppress(OSError):
            stale.unlink()


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose local saves are atomic and durable (see the module docstring).

    Remote paths (`s3://...`) keep Lightning's fsspec-based save.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint takes no storage_options, got {storage_options!r}")
        if "://" in str(path) and not str(path).startswith("file://"):
            return super().save_checkpoint(checkpoint, path)
        atomic_torch_save(checkpoint, str(path).removeprefix("file://"))
