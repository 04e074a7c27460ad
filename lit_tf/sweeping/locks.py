"""Cross-process locks for the few steps of a sweep that must not interleave between sweepers:
creating the tables of a new database, and a study's bookkeeping (create/join, recover, count,
ask). Each lock is held for milliseconds to seconds, never while a trial runs.

- `advisory_lock(engine, name)`: a PostgreSQL session-level advisory lock (`pg_try_advisory_lock`),
  which every sweeper reaching the database shares, on any machine; the server frees it when the
  holder's connection ends, so a killed sweeper never leaves it taken.
- `file_lock(path)`: `flock` on the storage file itself (a journal file or an SQLite database),
  freed by the kernel when the holder exits.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lit_tf.errors import LitTfError

LOCK_TIMEOUT_S = 600.0  # a holder keeps a lock for seconds; waiting this long means something is stuck
_POLL_S = 0.05
_PG_NAMESPACE = 0x6C697466  # "litf": the first key of lit_tf's advisory locks (pg_advisory_lock(int, int))


class LockTimeout(LitTfError):
    """Another process held a lock for longer than LOCK_TIMEOUT_S."""


def _pg_key(name: str) -> int:
    """A stable signed 32-bit key for `name` (the second key of the advisory lock)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big", signed=True)


@contextmanager
def advisory_lock(engine, name: str, what: str, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold PostgreSQL advisory lock `name` (any string) on its own autocommit connection of `engine`."""
    from sqlalchemy import text

    key = {"ns": _PG_NAMESPACE, "key": _pg_key(name)}
    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        deadline = time.monotonic() + timeout
        while not conn.execute(text("SELECT pg_try_advisory_lock(:ns, :key)"), key).scalar():
            if time.monotonic() > deadline:
                raise LockTimeout(f"{what}: another sweeper held the lock for more than {timeout:.0f} s",
                                  hint="look for a stuck sweeper process of this study and stop it")
            time.sleep(_POLL_S)
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:ns, :key)"), key)
    finally:
        conn.close()


@contextmanager
def file_lock(path: str | os.PathLike, what: str, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if missing)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: one sweeper per study
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockTimeout(f"{what}: another sweeper held {path} for more than {timeout:.0f} s",
                                      hint="look for a stuck sweeper process of this study and stop it") from None
                time.sleep(_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
