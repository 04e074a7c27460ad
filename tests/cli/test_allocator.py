"""train.py's choice of malloc (`lit_tf.allocator`): it re-executes itself with tcmalloc (else
jemalloc) preloaded when installed, `LIT_TF_ALLOCATOR` overrides, and what users get from it: a
training-shaped allocation pattern takes no page faults and keeps a flat RSS, where glibc's
default faults every large block back in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from lit_tf import allocator

FAST = next((k for k in ("tcmalloc", "jemalloc") if allocator.find(k)), None)
needs_fast = pytest.mark.skipif(FAST is None, reason="no tcmalloc/jemalloc (apt install libtcmalloc-minimal4)")

# What a CPU training step does to the allocator, in miniature: free and re-allocate large blocks
# (activations, logits chunks, gradients) of a few sizes, many times. Prints which malloc runs, the
# page faults of the steady state and the RSS before and after it.
SCRIPT = """
import json, resource, sys
from lit_tf.allocator import in_use, use_fast_allocator
use_fast_allocator()
import psutil, torch
sizes = [16 << 20, 4 << 20, 9_600_000, 1 << 20, 16 << 20]  # floats: 64, 16, 38, 4, 64 MB
def step():
    live = [torch.empty(n).fill_(1.0) for n in sizes]
    del live[1::2]
    live += [torch.empty(n).fill_(2.0) for n in sizes[::-1]]
for _ in range(30):
    step()
rss0 = psutil.Process().memory_info().rss
faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    step()
print(json.dumps({"malloc": in_use(), "faults_per_step": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / 40,
                  "rss_growth_mb": (psutil.Process().memory_info().rss - rss0) / 2**20}))
"""


def _run(choice: str | None, code: str = SCRIPT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", allocator.ENV)}
    if choice is not None:
        env[allocator.ENV] = choice
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def _result(choice: str | None) -> dict:
    proc = _run(choice)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@needs_fast
def test_the_fast_allocator_takes_no_page_faults_and_keeps_rss_flat():
    fast = _result(None)
    assert fast["malloc"] == FAST
    # a step touches ~95,000 pages; glibc faults ~69,000 of them back in every step, tcmalloc ~400
    # alone and up to ~2,200 with another process busy on the cores (what it returned to the OS)
    assert fast["faults_per_step"] < 10_000 and abs(fast["rss_growth_mb"]) < 20
    system = _result("system")
    assert system["malloc"] == "system"
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if thp.exists() and "[always]" not in thp.read_text():  # with 2 MB pages glibc would fault 512x less
        # glibc: each block above its mmap threshold (at most 32 MB) is a fresh mapping every time
        assert system["faults_per_step"] > 10_000


@needs_fast
def test_allocator_can_be_named_and_turned_off():
    assert _result(FAST)["malloc"] == FAST
    assert _result("system")["malloc"] == "system"


def test_a_bad_allocator_name_says_which_variable():
    proc = _run("mimalloc")
    assert proc.returncode != 0
    assert "LIT_TF_ALLOCATOR='mimalloc'" in proc.stderr and "tcmalloc" in proc.stderr


def test_a_missing_allocator_is_said_and_the_run_goes_on():
    kind = next((k for k in ("jemalloc", "tcmalloc") if not allocator.find(k)), None)
    if kind is None:
        pytest.skip("both tcmalloc and jemalloc are installed here")
    proc = _run(kind, "from lit_tf.allocator import in_use, use_fast_allocator; use_fast_allocator(); print(in_use())")
    assert proc.returncode == 0 and proc.stdout.strip() == "system"
    assert f"lib{kind} is not installed" in proc.stderr
