"""A real one-node SLURM cluster for a test module, started by scripts/local_slurm.sh (what
`make slurm-up` runs) in a fresh state folder on free ports, and stopped after the module.

A test module makes it its fixture (`with local_cluster() as c: yield c` in a module-scoped
fixture). It is a plain module rather than a conftest.py here: a second conftest.py would become
the `conftest` module that every `from conftest import ...` collected after this folder resolves to.
"""

from __future__ import annotations

import importlib.util
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "local_slurm.sh"
SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
PROGRAMS = ("munged", "mariadbd", "mariadb-install-db", "slurmdbd", "slurmctld", "slurmd",
            "sbatch", "squeue", "sacct", "scancel", "scontrol", "sacctmgr")


def why_not() -> str | None:
    """Why a local SLURM cluster cannot be started here (None: it can)."""
    missing = [p for p in PROGRAMS if shutil.which(p, path=SBIN) is None]
    if missing:
        return f"SLURM cluster programs missing ({', '.join(missing)}): apt-get install slurm-wlm munge slurmdbd mariadb-server"
    if os.geteuid() != 0:
        return "starting munged, mariadbd and slurmd needs root"
    if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        return "hydra-submitit-launcher not installed: pip install -e ."
    return None


def _free_port_base() -> int:
    """A port p with p, p+1, p+2 free (slurmctld, slurmd, slurmdbd)."""
    for _ in range(200):
        base = random.randrange(20000, 60000, 3)
        try:
            for p in range(base, base + 3):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return base
    raise RuntimeError("no three consecutive free ports found")


def poll(what: str, check: Callable[[], object], timeout: float, every: float = 0.5):
    """check() until it returns something truthy (returned), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        out = check()
        if out:
            return out
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


@dataclass
class Slurm:
    env: dict[str, str]  # os.environ + SLURM_CONF (and the script's LIT_TF_SLURM_* variables)
    state_dir: Path

    def run(self, *cmd: str, check: bool = True) -> str:
        p = subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, timeout=60)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
        return p.stdout

    def sacct(self, job: str, duplicates: bool = False) -> list[tuple[str, str]]:
        """(job id, state) of a job's allocations (array tasks: one row each); every attempt of a
        requeued job with duplicates=True, oldest first."""
        out = self.run("sacct", "-n", "-P", "-X", *(["-D"] if duplicates else []), "-o", "JobID,State", "-j", job)
        return [tuple(line.split("|")[:2]) for line in out.splitlines() if line.strip()]

    def queue(self) -> list[str]:
        return self.run("squeue", "-h", "-o", "%i").split()


@contextmanager
def local_cluster() -> Iterator[Slurm]:
    """Start a cluster in a fresh state folder on free ports (skip when this machine cannot), stop it after."""
    reason = why_not()
    if reason:
        pytest.skip(reason)
    state = Path(tempfile.mkdtemp(prefix="lit_tf_slurm_test."))
    env = {**os.environ, "PATH": SBIN, "LIT_TF_SLURM_DIR": str(state), "LIT_TF_SLURM_PORT": str(_free_port_base())}
    up = subprocess.run(["bash", str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=300)
    try:
        if up.returncode != 0:
            pytest.fail(f"scripts/local_slurm.sh up failed ({up.returncode}):\n{up.stdout}\n{up.stderr}")
        export = [ln for ln in up.stdout.splitlines() if ln.startswith("export SLURM_CONF=")]
        assert export, f"`up` printed no export line:\n{up.stdout}"
        env["SLURM_CONF"] = export[-1].split("=", 1)[1]
        yield Slurm(env, state)
    finally:
        down = subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True, text=True, timeout=300)
        shutil.rmtree(state, ignore_errors=True)
        assert down.returncode == 0, f"scripts/local_slurm.sh down failed:\n{down.stdout}\n{down.stderr}"
