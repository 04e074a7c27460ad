"""Build a cache directory atomically: a crash never leaves something that looks finished."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_dir(final: Path, done_marker: str) -> Iterator[Path]:
    """Yield a fresh path next to `final` to build into; on success it is renamed to `final`.

    On an exception nothing is left behind. If another process finished `final` first
    (`final/done_marker` exists), its result is kept and ours discarded.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp / "out"
        try:
            os.replace(tmp / "out", final)
        except OSError:
            if not (final / done_marker).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
