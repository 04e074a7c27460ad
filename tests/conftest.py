"""Shared fixtures: compose the real Hydra configs with overrides, in temp dirs."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

# `make test` runs one pytest worker per core. Each worker (and every process it starts, which
# inherits the variable) then gets its share of the cores as torch threads: two workers each
# spinning two OpenMP threads on two cores made the in-process training tests 5x slower.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1 and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _WORKERS))

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SHARED = Path(os.environ.get("LIT_TF_SHARED_DATA", ROOT.parent / "shared" / "data"))


def sigint_default() -> None:
    """`preexec_fn` for a child a test stops with SIGINT (Ctrl-C): restore the default action, since
    a test run started as a background job of a non-interactive shell inherits SIGINT ignored, and
    Python then never turns it into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(proc: subprocess.Popen, argv: list[str], url: str, timeout: float = 180) -> str:
    """The body of the first 200 answer from `url`, polled while `proc` (started as `argv`) runs;
    fails as soon as it exits (with the end of its output, when piped) or after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        out = proc.stdout.read()[-3000:] if proc.poll() is not None and proc.stdout else ""
        assert proc.poll() is None, f"`{shlex.join(argv)}` exited {proc.returncode}:\n{out}"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                assert r.status == 200
                return r.read().decode(errors="replace")
        except OSError:
            assert time.monotonic() < deadline, f"`{shlex.join(argv)}`: no HTTP answer at {url} within {timeout:.0f}s"
            time.sleep(0.25)


def shared_file(rel: str) -> Path:
    path = SHARED / rel
    if not path.is_file():
        pytest.skip(f"shared data file missing: {path} (set LIT_TF_SHARED_DATA)")
    return path


def skip_without_shared(cfg) -> None:
    """Skip (with the reason) a test whose composed config reads the shared data folder when that
    folder is missing, e.g. in a clone made without ../shared beside it. The quickstart corpus
    ships with the package, so the tests built on it still run."""
    if SHARED.is_dir():
        return
    from omegaconf import OmegaConf

    # the folder as this file finds it, or as the config spells it (`<repo>/../shared/data` by default)
    names = {str(SHARED), str(OmegaConf.select(cfg, "paths.shared_data", default=SHARED))}
    data = json.dumps(OmegaConf.to_container(cfg.data, resolve=True), default=str)
    if any(name in data for name in names):
        pytest.skip(f"shared data missing at {SHARED} (clone beside ../shared, or set LIT_TF_SHARED_DATA)")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One tokenizer/shard cache for the whole session (content-hashed, so sharing is safe)."""
    return tmp_path_factory.mktemp("lit_tf_cache")


@pytest.fixture
def compose(tmp_path, cache_dir):
    """compose(overrides) -> DictConfig of conf/train.yaml, with every output under tmp_path."""
    from hydra.core.global_hydra import GlobalHydra

    from lit_tf.cli.train import compose_config

    def _compose(overrides: list[str] = (), out: Path | None = None):
        out = out or tmp_path
        cfg = compose_config([
            f"paths.root_dir={ROOT}",
            f"paths.shared_data={SHARED}",
            f"paths.cache_dir={cache_dir}",
            f"paths.log_dir={out / 'outputs'}",
            f"paths.mlruns_dir={out / 'mlruns'}",
            "paths.output_dir=${paths.runs_root}/run",
            *overrides,
        ])
        skip_without_shared(cfg)
        return cfg

    yield _compose
    GlobalHydra.instance().clear()
