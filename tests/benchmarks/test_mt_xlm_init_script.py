"""benchmarks/mt_xlm_init.py runs end to end in `--quick` mode (smoke-sized XLM and translation runs):
both translation runs, their beam-search scores and the timed decoding table.

The figures belong to the benchmark, never to a test; this only keeps the script and its tables working.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, shared_file


@pytest.mark.slow  # ~15 s on 2 idle cores, a minute on a loaded one: kept out of make test's budget
def test_quick_run(tmp_path: Path):
    shared = shared_file("tatoeba_laser/tatoeba.spa-eng.eng").parents[1]
    shared_file("wmt_news/eng-spa/newstest2012.eng")
    cwd, root = tmp_path / "cwd", tmp_path / "root"
    cwd.mkdir()
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "mt_xlm_init.py"), "--quick", "--root", str(root)],
                          cwd=cwd, env=dict(os.environ, LIT_TF_SHARED_DATA=str(shared)), capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert not list(cwd.iterdir()), "the benchmark wrote into the current directory"
    out = proc.stdout
    rows = [ln for ln in out.splitlines() if ln.startswith("| from ")]
    assert [r.split("|")[1].strip() for r in rows] == ["from scratch", "from XLM"], out[-2000:]
    for r in rows:
        bleu, chrf = (float(c) for c in r.split("|")[5:7])
        assert 0.0 <= bleu <= 100.0 and 0.0 <= chrf <= 100.0, r
    assert re.search(r"^\| beam 5 \| [0-9.]+ \| [0-9.]+ \|", out, re.M) and re.search(r"^\| greedy \|", out, re.M)
    assert re.search(r"^DELTA bleu_xlm_minus_scratch [-+][0-9.]+$", out, re.M)
    assert re.search(r"^SPEED beam5_sent_per_s [0-9.]+$", out, re.M)
    assert "signatures: nrefs:1|case:mixed|eff:no|tok:13a" in out
