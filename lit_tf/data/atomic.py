"""Files and cache folders that are written atomically (whole or not at all).

- `atomic_file`: write a file through a temporary file in its folder, renamed over it when
  complete: readers (and other writers of the same file) see the old version or the new one.
- `atomic_dir`: build into a temporary folder next to the final one and rename it when complete,
  so a crash (an exception, SIGKILL, a full disk) never leaves something that looks finished.
  Readers only ever look at the final name, and only trust it when its done-marker file exists.
- `build_once`: the same, but in a distributed run only global rank 0 builds; every other rank
  waits for rank 0's finished folder and loads it (see `is_cache_builder` for why).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path (`.<name>.<random>.tmp`, same folder) to write; when the block ends
    without an error it replaces `path` (os.replace: atomic), else it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise

# How long a waiting rank waits for rank 0 (tokenizer training on a large corpus can take long),
# and how long it waits before giving up when rank 0 has not even started building.
WAIT_TIMEOUT_S = 6 * 3600.0
WAIT_GRACE_S = 600.0
_POLL_S = 0.5


def _tmp_prefix(final: Path) -> str:
    # host + pid in the name let a later build on this host remove leftovers of a dead process
    return f".{final.name}.tmp-{socket.gethostname()}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_dead_leftovers(final: Path) -> None:
    """Delete temporary build folders for `final` left by processes of this host that died."""
    head = f".{final.name}.tmp-{socket.gethostname()}-"
    for tmp in final.parent.glob(f"{head}*"):
        pid = tmp.name[len(head):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            log.info("cache: removing %s (left by an interrupted build)", tmp)
            shutil.rmtree(tmp, ignore_errors=True)


def builds_in_progress(final: Path) -> list[Path]:
    """Temporary folders of builds of `final` that have started (on any host sharing the cache)."""
    return sorted(final.parent.glob(f".{final.name}.tmp-*")) if final.parent.is_dir() else []


@contextmanager
def atomic_dir(final: Path, done_marker: str) -> Iterator[Path]:
    """Yield a fresh path next to `final` to build into; on success it is renamed to `final`.

    On an exception nothing is left behind; after a hard kill the temporary folder stays under a
    hidden name (never mistaken for `final`) and the next build on this host removes it. If
    another process finished `final` first (`final/done_marker` exists), its result is kept and
    ours discarded.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_leftovers(final)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(final), dir=final.parent))
    try:
        yield tmp / "out"
        try:
            os.replace(tmp / "out", final)
        except OSError:
            if not (final / done_marker).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() else None


def is_cache_builder() -> bool:
    """True in the process that builds shared caches: global rank 0 (or a single process).

    Read from the launchers' environment, because caches are prepared before the Trainer (and
    its process group) exists: `RANK` (torchrun), `LOCAL_RANK` + `NODE_RANK` (Lightning's own
    launcher, which starts ranks > 0 as child processes), `SLURM_PROCID` (srun).

    Why only global rank 0, and not one process per node: a tokenizer trained on each node
    would agree only if every node read exactly the same text (a streamed hub dataset, a file
    edited in between, a different library version would silently give ranks different
    vocabularies). So other ranks never train or tokenize: they wait for rank 0's folder. This
    needs `paths.cache_dir` on storage that all nodes share; with a separate cache per node,
    build it once (a single-process run of the same config) and copy it to every node first,
    or the waiting ranks stop with an error that says so.
    """
    rank = _env_int("RANK")
    if rank is not None:
        return rank == 0
    return all((_env_int(k) or 0) == 0 for k in ("LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID"))


def wait_for(final: Path, done_marker: str, *, what: str, timeout_s: float = WAIT_TIMEOUT_S,
             grace_s: float = WAIT_GRACE_S) -> None:
    """Block until `final/done_marker` exists (written by the rank that builds `final`)."""
    start = last_log = time.monotonic()
    while not (final / done_marker).is_file():
        waited = time.monotonic() - start
        if waited > timeout_s or (waited > grace_s and not builds_in_progress(final)):
            raise TimeoutError(
                f"{what}: waited {waited:.0f}s for global rank 0 to build {final} (no finished "
                f"{done_marker}{'' if builds_in_progress(final) else ' and no build in progress'}). Only rank 0 "
                "builds caches; the others load its result, so paths.cache_dir must be shared by all nodes "
                "(or build the cache once with a single process and copy it to each node)"
            )
        if time.monotonic() - last_log > 60:
            log.info("%s: waiting for global rank 0 to build %s (%.0fs)", what, final, waited)
            last_log = time.monotonic()
        time.sleep(_POLL_S)


def build_once(final: Path, done_marker: str, build: Callable[[Path], None], *, what: str) -> Path:
    """Return `final`, building it with `build(out_dir)` if missing (global rank 0 only)."""
    if (final / done_marker).is_file():
        log.info("%s: reusing %s", what, final)
        return final
    if not is_cache_builder():
        wait_for(final, done_marker, what=what)
        return final
    with atomic_dir(final, done_marker) as out:
        build(out)
    return final
