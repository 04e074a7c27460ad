"""The malloc a training process runs with: tcmalloc (else jemalloc) when installed, glibc's otherwise.

PyTorch on CPU allocates and frees the same large tensors every step. glibc's malloc serves them
in one of two ways, both bad for training: above its mmap threshold as fresh mappings, so every
step faults its pages back in and the kernel zeroes them (BERT-mini on the 2-core VM: ~50,000
faults a step), or, once its dynamic threshold has risen, from a heap that fragments (the same
run's RSS grew from 1.4 to 2.6 GB over 400 steps and kept growing; tcmalloc: flat, and 1.11x the
tokens/s).
tcmalloc (or jemalloc told to keep its freed pages) reuses freed blocks: almost no page faults in
the steady state and a flat RSS. See benchmarks/RESULTS.md ("Memory allocator") for the figures.

`python train.py` calls `use_fast_allocator()` before it imports anything heavy: when the chosen
library is installed and not yet loaded, the process re-executes itself once with it in
`LD_PRELOAD` (the same command line, so nothing else changes). Choose with the environment
variable `LIT_TF_ALLOCATOR`: `auto` (default: tcmalloc, else jemalloc, else the system's),
`tcmalloc`, `jemalloc` or `system` (never re-execute). Child processes (data-loader workers,
encoder workers, Hydra/SLURM jobs started from this process) inherit the preload.

Debian/Ubuntu: `apt install libtcmalloc-minimal4` (or `libjemalloc2`).
This module imports nothing beyond the standard library: it runs before torch is imported.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from pathlib import Path

ENV = "LIT_TF_ALLOCATOR"
CHOICES = ("auto", "tcmalloc", "jemalloc", "system")
_LIBRARIES = {"tcmalloc": ("tcmalloc_minimal", "tcmalloc"), "jemalloc": ("jemalloc",)}
_MARKER = "_LIT_TF_ALLOCATOR_EXEC"  # set in the re-executed process: never re-execute twice
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"  # keep freed pages for reuse (unless MALLOC_CONF is set)


def _candidates(choice: str) -> tuple[str, ...]:
    return ("tcmalloc", "jemalloc") if choice == "auto" else (choice,)


def wanted() -> str:
    """The allocator asked for by `LIT_TF_ALLOCATOR` (default auto)."""
    value = os.environ.get(ENV, "").strip().lower() or "auto"
    if value not in CHOICES:
        raise SystemExit(f"{ENV}={os.environ[ENV]!r}: expected one of {', '.join(CHOICES)}")
    return value


def find(kind: str) -> str | None:
    """The shared-library name of `kind` (tcmalloc / jemalloc) the dynamic loader can load, or None."""
    for name in _LIBRARIES[kind]:
        found = ctypes.util.find_library(name)  # e.g. "libtcmalloc_minimal.so.4", from the ld cache
        if found:
            return found
    return None


def in_use() -> str:
    """Which allocator this process runs with: "tcmalloc", "jemalloc", or "system"."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "system"
    for kind in ("tcmalloc", "jemalloc"):
        if f"lib{kind}" in maps:
            return kind
    return "system"


def preload_env(choice: str = "auto", base: dict[str, str] | None = None) -> dict[str, str] | None:
    """The environment (`base`, default os.environ) with `choice`'s library preloaded, or None when
    there is nothing to preload (system, not Linux, or not installed: said on stderr if it was named)."""
    base = dict(os.environ if base is None else base)
    if choice == "system" or not sys.platform.startswith("linux"):
        return None
    for kind in _candidates(choice):
        library = find(kind)
        if library:
            break
    else:
        if choice != "auto":
            package = "libtcmalloc-minimal4" if choice == "tcmalloc" else "libjemalloc2"
            print(f"lit_tf: {ENV}={choice} but lib{choice} is not installed (Debian/Ubuntu: apt install "
                  f"{package}); running with the system allocator", file=sys.stderr)
        return None
    base["LD_PRELOAD"] = ":".join(x for x in (library, base.get("LD_PRELOAD", "")) if x)
    if kind == "jemalloc":  # its default purges freed pages within seconds: they would fault back in
        base.setdefault("MALLOC_CONF", JEMALLOC_CONF)
    return base


def child_env(choice: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default os.environ) for a child process that runs with `choice`'s malloc and no
    inherited preload ("system": glibc's): how benchmarks give each side its own allocator."""
    base = {k: v for k, v in (os.environ if base is None else base).items() if k != "LD_PRELOAD"}
    return preload_env(choice, base) or base


def use_fast_allocator() -> None:
    """Re-execute this process with tcmalloc/jemalloc preloaded when `LIT_TF_ALLOCATOR` asks for
    one that is installed and not loaded yet; otherwise return and run as is."""
    choice = wanted()
    if os.environ.pop(_MARKER, None):  # this is the re-executed process; its children may choose anew
        return
    if in_use() in _candidates(choice):
        return
    env = preload_env(choice)
    if env is None:
        return
    env[_MARKER] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)
