"""`hydra/launcher=slurm` (conf/hydra/launcher/slurm.yaml): hydra-submitit-launcher's SLURM
launcher, with the outcome of every job reported on its own.

The plugin's own `launch` waits for its jobs in order and raises at the first one that left no
result (a job killed by SLURM, the out-of-memory killer, its time limit or `scancel`): the other
jobs' results are lost with it, and a sweeper cannot tell which trial failed. Here each job gets
its `JobReturn`: its result, or status FAILED holding a `SlurmJobFailed` that names the job, its
final SLURM state and its log, so lit_tf's sweeper records each trial by itself and a plain
multirun names the job that failed. Ctrl-C while waiting cancels the jobs that have not finished,
so no job keeps training for a trial the sweeper has just marked interrupted.

Preemption and time limits need nothing here. The job's training writes `last.ckpt` at the end of
the current batch and requeues its own SLURM job (lit_tf.lit.failure); the requeued job runs the
same pickled submission, with the same output folder, and resumes from that checkpoint in the same
MLflow run (lit_tf.lit.resume.requeued_checkpoint). The interrupted attempt exits without a result
file and submitit counts REQUEUED and PENDING as unfinished, so `job.results()` simply waits for
the attempt that finishes.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

log = logging.getLogger(__name__)

# executor-level keys (submitit's AutoExecutor names them without the "slurm_" prefix)
_GENERIC_KEYS = {f.name for f in dataclasses.fields(BaseQueueConf)} - {"submitit_folder"}


class SlurmJobFailed(RuntimeError):
    """A SLURM job that ended without a result (or whose submitit wrapper failed)."""


def _failure(job, error: Exception) -> SlurmJobFailed:
    try:
        state = job.watcher.get_state(job.job_id, mode="force")
    except Exception:  # sacct trouble: the reason below still names the job and its log
        state = "UNKNOWN"
    detail = [ln for ln in str(error).splitlines() if ln.strip()][-15:]
    return SlurmJobFailed("\n".join([
        *detail,
        f"SLURM job {job.job_id} ended {state} without a result (killed, out of memory, past its time limit, "
        f"cancelled, or failed outside the run); its log: {job.paths.stderr}",
    ]))


class LitTfSlurmLauncher(SlurmLauncher):
    """hydra-submitit-launcher's `SlurmLauncher` whose `launch` returns one JobReturn per job."""

    def _executor(self):
        import submitit

        params = dict(self.params)
        folder = params.pop("submitit_folder")
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm",
                                         slurm_max_num_timeout=int(params.pop("max_num_timeout", 0) or 0))
        executor.update_parameters(**{k if k in _GENERIC_KEYS else f"slurm_{k}": v for k, v in params.items()})
        return executor

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and len(job_overrides) > 0
        executor = self._executor()
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"SLURM sweep output dir: {sweep_dir}")
        args = []
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            args.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        jobs = executor.map_array(self, *zip(*args))
        log.info(f"SLURM job(s) {', '.join(j.job_id for j in jobs)}")
        results: list[JobReturn] = []
        try:
            for job, overrides in zip(jobs, job_overrides):
                try:
                    results.append(job.results()[0])
                except Exception as e:  # no result file: the job died outside Python's reach
                    results.append(JobReturn(overrides=list(overrides), status=JobStatus.FAILED,
                                             _return_value=_failure(job, e)))
        except BaseException:  # Ctrl-C (or the sweeper stopping) while waiting: stop what still runs
            left = [j for j in jobs if not j.paths.result_pickle.exists()]
            for j in left:
                j.cancel(check=False)
            if left:
                log.warning("cancelled SLURM job(s) %s", ", ".join(j.job_id for j in left))
            raise
        return results
