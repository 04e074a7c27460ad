"""benchmarks/throughput.py runs end to end (tiny sizes): both sides train and it prints its RATIO line.

The figures themselves belong to the benchmark, never to a test; this only keeps the script working.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT, SHARED

TINY = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.d_ff=128", "model.max_seq_len=64",
        "data.max_seq_len=64", "data.batch_size=4", "data.tokenizer.vocab_size=600", "data.max_docs=200",
        "data.tokenizer.max_train_docs=200"]


def _run(family: str, vs: str, *extra: str) -> str:
    if not SHARED.is_dir():
        pytest.skip(f"shared data missing at {SHARED}")
    env = dict(os.environ, LIT_TF_SHARED_DATA=str(SHARED))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--family", family, "--vs", vs, "--steps", "3",
         "--warmup", "1", "--rounds", "1", *extra, *TINY],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def _ratio(out: str, name: str) -> float:
    m = re.search(rf"^RATIO {name} ([0-9.]+)$", out, re.M)
    assert m, out[-2000:]
    return float(m.group(1))


def test_gpt_against_hf_trainer():
    out = _run("gpt", "hf")
    assert _ratio(out, "gpt_vs_hf") > 0
    assert re.search(r"^MFU gpt 0\.\d+$", out, re.M)


@pytest.mark.slow
@pytest.mark.parametrize(("family", "vs"), [("bert", "hf"), ("xlm", "hf"), ("bert", "loop"), ("gpt", "nolog")])
def test_other_comparisons(family, vs):
    assert _ratio(_run(family, vs), f"{family}_vs_{vs}") > 0


@pytest.mark.slow
def test_levers():
    out = _run("gpt", "levers", "--levers", "fast_dropout,fused_lm_loss")
    assert _ratio(out, "gpt_lever_fast_dropout") > 0 and _ratio(out, "gpt_lever_fused_lm_loss") > 0
