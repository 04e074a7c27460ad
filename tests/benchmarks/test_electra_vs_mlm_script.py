"""benchmarks/electra_vs_mlm.py runs end to end in `--quick` mode (tiny models, a few steps): BERT MLM and
ELECTRA pretrained at equal FLOPs and equal time, each fine-tuned on a few hundred SST-2 rows.

The figures themselves belong to the benchmark, never to a test; this only keeps the script working
and its table well formed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SHARED

NEEDED = ("wikitext2/wiki.valid.raw", "tinyshakespeare/input.txt", "sst2/train.tsv", "sst2/dev.tsv")


def _table(out: str) -> list[dict[str, str]]:
    """The Markdown table's rows as {column: cell}."""
    lines = [ln for ln in out.splitlines() if ln.startswith("| ")]
    assert lines and lines[0].startswith("| budget | model |"), out[-3000:]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in ln.strip("|").split("|")), strict=True)) for ln in lines[1:]]


@pytest.mark.slow  # 20 s on 2 idle cores, up to 100 s on a loaded one: kept out of make test's 15-minute budget
def test_quick_run(tmp_path: Path):
    missing = [f for f in NEEDED if not (SHARED / f).is_file()]
    if missing:
        pytest.skip(f"shared data missing: {SHARED / missing[0]} (set LIT_TF_SHARED_DATA)")
    cwd, root = tmp_path / "cwd", tmp_path / "root"
    cwd.mkdir()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "electra_vs_mlm.py"), "--quick", "--root", str(root)],
        cwd=cwd, env=dict(os.environ, LIT_TF_SHARED_DATA=str(SHARED)), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert not list(cwd.iterdir()), "the benchmark wrote into the current directory (outputs/, mlruns/, .cache/)"
    out = proc.stdout

    rows = {(r["budget"], r["model"]): r for r in _table(out)}
    for budget in ("equal FLOPs", "equal time"):
        for model in ("BERT MLM", "ELECTRA"):
            r = rows.get((budget, model))
            assert r is not None, f"no row for {model} at {budget}:\n{out[-3000:]}"
            assert int(r["pretrain steps"]) > 0 and float(r["total FLOPs"]) > 0
            for col in ("held-out acc", "dev acc", "dev F1"):
                assert 0.0 <= float(r[col]) <= 1.0, (col, r)
            metrics = ("val/mlm_acc",) if model == "BERT MLM" else ("val/gen_mlm_acc", "val/rtd_auc")
            for col in metrics:
                assert 0.0 <= float(r[col]) <= 1.0, (col, r)
    assert ("none", "BERT from scratch") in rows
    assert 0.0 <= float(rows[("none", "BERT from scratch")]["dev acc"]) <= 1.0

    # equal FLOPs: the two runs' total training FLOPs agree within a few percent (whole steps only)
    bert, electra = (float(rows[("equal FLOPs", m)]["total FLOPs"]) for m in ("BERT MLM", "ELECTRA"))
    assert abs(electra / bert - 1) < 0.05, (bert, electra)
    ratio = re.search(r"^RATIO equal_flops_electra_over_bert ([0-9.]+)$", out, re.M)
    assert ratio and abs(float(ratio.group(1)) - 1) < 0.05, out[-2000:]
    # ELECTRA costs more per token than BERT's sparse MLM head alone: fewer steps for the same FLOPs
    assert float(rows[("equal FLOPs", "ELECTRA")]["MFLOP/token"]) > float(rows[("equal FLOPs", "BERT MLM")]["MFLOP/token"])
    assert re.search(r"^RATIO equal_time_electra_over_bert [0-9.]+$", out, re.M), out[-2000:]
    assert re.search(r"^command: python benchmarks/electra_vs_mlm.py --quick ", out, re.M), out[-2000:]
