"""`hydra/launcher=local_gpus`: the jobs of a multirun or sweep run side by side on one machine,
each pinned to one GPU of a pool (the job's `gpu=<id>` key sets its CUDA_VISIBLE_DEVICES).

Jobs run in waves of one job per GPU (joblib worker processes), so two jobs never share a GPU,
whatever order they finish in. A job whose overrides already name a `gpu` (e.g. from the Optuna
sweeper's own `hydra.sweeper.gpus` pool) keeps it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
from omegaconf import ListConfig

from lit_tf.errors import LitTfError, user_errors

log = logging.getLogger(__name__)


def visible_gpus() -> list[str]:
    """The ids of every CUDA device this process sees."""
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_pool(gpus: Any) -> list[str]:
    """`auto` (every visible CUDA device) or a list of ids -> the pool, as strings."""
    if gpus in (None, "auto"):
        pool = visible_gpus()
        if not pool:
            raise LitTfError("hydra/launcher=local_gpus: no CUDA GPU is visible on this machine; "
                             "name the pool with hydra.launcher.gpus=[0,1,...] or use hydra/launcher=joblib")
        return pool
    pool = [str(g) for g in (gpus if isinstance(gpus, (list, tuple, ListConfig)) else [gpus])]
    if not pool or len(set(pool)) != len(pool):
        raise LitTfError(f"hydra.launcher.gpus={list(pool)}: give distinct GPU ids, or auto")
    return pool


class LocalGpusLauncher(JoblibLauncher):
    """Configured by `hydra.launcher.*` (conf/hydra/launcher/local_gpus.yaml): `gpus` plus joblib's keys."""

    def __init__(self, gpus: Any = "auto", **joblib: Any) -> None:
        super().__init__(**joblib)
        self.gpus = gpus

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        with user_errors():  # a bad pool is the user's: one `error:` line, exit status 2
            pool = gpu_pool(self.gpus)
        self.joblib["n_jobs"] = len(pool)
        results: list[JobReturn] = []
        for lo in range(0, len(job_overrides), len(pool)):
            wave = [list(o) if any(x.startswith("gpu=") for x in o) else [*o, f"gpu={pool[i]}"]
                    for i, o in enumerate(job_overrides[lo:lo + len(pool)])]
            log.info("local_gpus: jobs %d-%d on GPU(s) %s", initial_job_idx + lo,
                     initial_job_idx + lo + len(wave) - 1, ",".join(pool[:len(wave)]))
            results.extend(super().launch(wave, initial_job_idx + lo))
        return results
