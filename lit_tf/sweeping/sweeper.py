"""lit_tf's Optuna sweeper for Hydra: `python train.py -m sweep=<name>`.

The sweeper asks Optuna for `n_jobs` trials at a time, launches them as one batch through the
configured Hydra launcher (basic: in this process; joblib: local processes; submitit: SLURM),
and tells Optuna each result. Everything it needs to continue lives in the study storage, so
re-running the same command resumes: finished trials stay, trials cut off by a crash or Ctrl-C
are marked FAIL (interrupted) and their parameters asked again, and numbering continues.

Several sweepers may drive one study at once (the same command on several machines, with a
PostgreSQL `storage`): they take turns asking, trials running under another live sweeper count
as in flight, a sweeper with nothing left to ask waits for the others' trials, and the trials of
a sweeper that died are asked again once (see lit_tf/sweeping/study.py). The study ends at
`n_trials` in total.

A job that raises (a bad sampled config, CUDA out-of-memory, ...) or returns NaN becomes a FAIL
trial with its error and the sweep goes on; the sweep stops only when more than
`max_failure_rate` x `n_trials` trials have failed.
"""

from __future__ import annotations

import logging
import math
import shlex
import time
import traceback
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.trial import TrialState

import lit_tf.resolvers  # noqa: F401  (${lit_tf.cwd:}: the sweep folder resolves before any job runs)
from lit_tf.data.atomic import atomic_file
from lit_tf.errors import user_errors
from lit_tf.sweeping import space as sp
from lit_tf.sweeping import study as st

log = logging.getLogger("lit_tf.sweep")

STUDY_ATTR_ENQUEUED = "lit_tf.enqueued_initial"
WAIT_POLL_S = 2.0  # with nothing left to ask, how often to look at the trials other sweepers run


class SweepFailed(RuntimeError):
    """Too many trials failed: the study is kept as it is and the sweep stops."""


def _metric_values(ret: Any, metrics: list[str]) -> list[float]:
    """The job's return value -> one float per objective metric (KeyError names what is missing)."""
    if isinstance(ret, (int, float)) and len(metrics) == 1:
        return [float(ret)]
    if not isinstance(ret, dict):
        raise TypeError(f"the job returned {type(ret).__name__}, expected the metrics dict of train()")
    missing = [m for m in metrics if m not in ret]
    if missing:
        logged = sorted(k for k, v in ret.items() if isinstance(v, float))
        raise KeyError(f"objective metric(s) {missing} not among the run's final metrics {logged}")
    return [float(ret[m]) for m in metrics]


def _exception_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


class LitTfOptunaSweeper(Sweeper):
    """Configured by `hydra.sweeper.*` (see conf/hydra/sweeper/optuna.yaml for every key)."""

    def __init__(self, study_name: str, dir: str, metric: Any = None, direction: Any = "minimize",
                 storage: str | None = None, sampler: Any = "tpe", pruner: Any = "none", n_trials: int = 20,
                 n_jobs: int = 1, max_failure_rate: float = 0.5, gpus: Any = None, params: Any = None,
                 enqueue: Any = None, seed: int | None = None, debug_n_trials: int = 3):
        self.study_name = str(study_name)
        self.debug_n_trials = int(debug_n_trials)
        self.dir = dir
        self.metrics, self.directions = st.objectives(metric, direction)
        self.storage = storage
        self.sampler_spec = OmegaConf.to_container(sampler) if isinstance(sampler, DictConfig) else sampler
        self.pruner_spec = OmegaConf.to_container(pruner) if isinstance(pruner, DictConfig) else pruner
        if int(n_trials) < 1 or int(n_jobs) < 1:
            raise st.StudyConfigError(f"n_trials and n_jobs must be >= 1, got {n_trials}, {n_jobs}")
        if not 0.0 <= float(max_failure_rate) <= 1.0:
            raise st.StudyConfigError(f"max_failure_rate must be in [0, 1], got {max_failure_rate}")
        self.n_trials, self.n_jobs, self.max_failure_rate = int(n_trials), int(n_jobs), float(max_failure_rate)
        self.gpus = [str(g) for g in st.as_list(gpus)] if gpus not in (None, "auto") else gpus
        self.params = OmegaConf.to_container(params) if isinstance(params, DictConfig) else dict(params or {})
        self.enqueue = [OmegaConf.to_container(e) if isinstance(e, DictConfig) else dict(e)
                        for e in ([enqueue] if isinstance(enqueue, (dict, DictConfig)) else st.as_list(enqueue))]
        self.seed = seed
        self.config: DictConfig | None = None
        self.launcher = None
        self.hydra_context = None

    # ------------------------------------------------------------------------------- setup
    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.sweep_dir = Path(str(self.dir)).expanduser().resolve()
        self._debug_variant(config)
        with open_dict(config):  # one stable folder per study: what makes `re-run to resume` possible
            config.hydra.sweep.dir = str(self.sweep_dir)
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def _debug_variant(self, config: DictConfig) -> None:
        """`python train.py -m sweep=NAME debug=smoke`: a quick check of a real study. Its trials are
        shrunk by the debug config, so they must not join the real study: they go to study
        `NAME-smoke` (folder `<dir>-smoke`), and at most `debug_n_trials` of them run. A study file
        that selects the debug config itself (sweeps/smoke.yaml) is already a debug study."""
        debug = OmegaConf.select(config, "hydra.runtime.choices.debug", default=None)
        if not debug or debug == "null" or self.study_name.endswith(str(debug)):
            return
        self.study_name = f"{self.study_name}-{debug}"
        self.sweep_dir = self.sweep_dir.with_name(f"{self.sweep_dir.name}-{debug}")
        if self.n_trials > self.debug_n_trials:
            self._print(f"debug={debug}: study '{self.study_name}', n_trials {self.n_trials} -> {self.debug_n_trials}")
            self.n_trials = self.debug_n_trials

    # ------------------------------------------------------------------------------- helpers
    def _split_arguments(self, arguments: list[str]) -> tuple[list[str], sp.SearchSpace]:
        """Command-line sweep syntax (`optim.optimizer.lr=interval(...)`) joins the study's params;
        everything else is passed to every trial unchanged."""
        parser = OverridesParser.create()
        base, params = [], dict(self.params)
        for override in parser.parse_overrides(arguments):
            if override.is_sweep_override():
                params[override.get_key_element()] = override.value()
            else:
                base.append(override.input_line)
        return base, sp.parse_search_space(params)

    def _check_keys(self, keys: list[str]) -> None:
        """A searched key must exist in the config (or be added with +key): catch typos before any trial."""
        import difflib

        missing = object()
        for key in keys:
            if key.startswith(("+", "~")) or "@" in key:
                continue
            if OmegaConf.select(self.config, key, default=missing, throw_on_resolution_failure=False) is missing:
                parent, _, leaf = key.rpartition(".")
                node = OmegaConf.select(self.config, parent, default=None) if parent else self.config
                valid = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []
                close = difflib.get_close_matches(leaf, valid, n=3)
                hint = f" (did you mean {' or '.join((parent + '.' if parent else '') + c for c in close)}?)" if close else ""
                raise st.StudyConfigError(f"params.{key}: no such config key{hint}; use +{key} to add a new key")

    def _gpu_pool(self) -> list[str]:
        from lit_tf.sweeping.local_gpus import visible_gpus

        return visible_gpus() if self.gpus == "auto" else list(self.gpus or [])

    def _job_overrides(self, trial: optuna.Trial, base: list[str], fixed: list[str], spec: str,
                       gpu: str | None) -> list[str]:
        o = [*base, *fixed, *sp.to_overrides(trial.params), f"trial.number={trial.number}",
             f"trial.study={sp.format_value(self.study_name)}", f"trial.prune={str(self.pruning).lower()}",
             f"hydra.sweep.dir={self.sweep_dir}", f"hydra.sweep.subdir=trial_{trial.number}"]
        if not st.is_rdb_url(spec):  # the resolved journal path, so jobs never re-derive it
            o.append(f"hydra.sweeper.storage={spec}")
        if gpu is not None:
            o.append(f"gpu={gpu}")
        return o

    def _print(self, msg: str) -> None:
        print(f"[sweep {self.study_name}] {msg}", flush=True)

    # ------------------------------------------------------------------------------- sweep
    def sweep(self, arguments: list[str]) -> Any:
        # A bad study setting (search space, storage, a reused study name) is the user's: one
        # `error:` line. Trial failures never get here: the launcher returns them to _tell.
        with user_errors():
            return self._sweep(arguments)

    def _sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None
        base, space = self._split_arguments(list(arguments))
        if not space.distributions:
            raise st.StudyConfigError("params: the study searches nothing; give at least one interval(), "
                                      "range() or choice() under hydra.sweeper.params")
        self._check_keys([*space.distributions, *space.fixed])
        fixed = sp.to_overrides(space.fixed)
        spec = st.resolve_storage_spec(self.storage, self.sweep_dir)
        self.spec_shown = st.shown_storage(spec)  # an RDB URL's password is never printed
        self._check_storage_reach(spec)
        mlflow_store = self._mlflow_store()  # an unreachable tracking server: one error line, nothing written
        storage = st.open_storage(spec)  # an unreachable database: one error line naming hydra.sweeper.storage
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        pruner = st.build_pruner(self.pruner_spec)
        self.pruning = len(self.metrics) == 1 and not isinstance(pruner, optuna.pruners.NopPruner)
        sampler_name = st.named_spec(self.sampler_spec, "sampler")[0]
        n_trials = self.n_trials
        if sampler_name == "grid":
            n_grid = math.prod(len(v) for v in space.grid().values())
            if n_grid < n_trials:
                self._print(f"grid has {n_grid} points: n_trials {n_trials} -> {n_grid}")
                n_trials = n_grid

        # Several sweepers (on this machine or others) may drive this study at once: each step of
        # bookkeeping below (create or join, recover, count + ask) holds the study lock, trials run
        # without it. `owner` marks this process's trials; its heartbeat shows it is alive.
        owner = st.owner_id()
        with st.study_lock(spec, storage, self.study_name):
            joined = 0
            if self.study_name in optuna.get_all_study_names(storage):  # check a resumed study before writing to it
                existing = optuna.load_study(study_name=self.study_name, storage=storage)
                st.check_search_space(existing, space.distributions, self.spec_shown)
                joined = int(existing.user_attrs.get(st.STUDY_ATTR_SWEEPERS, 0))
            sampler = st.build_sampler(self.sampler_spec, space.grid() if sampler_name == "grid" else None,
                                       self.seed, seed_offset=joined)
            study = optuna.create_study(storage=storage, study_name=self.study_name, sampler=sampler,
                                        pruner=pruner, directions=self.directions, load_if_exists=True)
            if [d.name.lower() for d in study.directions] != self.directions:
                raise st.StudyConfigError(
                    f"study '{self.study_name}' in {self.spec_shown} was created with directions "
                    f"{[d.name.lower() for d in study.directions]}, this sweep asks {self.directions}: "
                    "use a new study_name (or storage) for a different objective")
            st.check_search_space(study, space.distributions, self.spec_shown)
            if study.metric_names is None:
                study.set_metric_names(self.metrics)
            st.join_study(study)
            requeued = st.recover(study)
            if self.enqueue and not study.user_attrs.get(STUDY_ATTR_ENQUEUED):
                for params in self.enqueue:
                    study.enqueue_trial(params, skip_if_exists=True)
                study.set_user_attr(STUDY_ATTR_ENQUEUED, True)
            runs = self._open_mlflow(study, spec, mlflow_store)  # under the lock: one parent run for all sweepers
            c = st.counts(study)
        self._print(f"study '{self.study_name}' in {self.spec_shown}: {c['done']}/{n_trials} trials done"
                    + (f", {c['running']} running under other sweepers" if c["running"] else "")
                    + (f", re-asking interrupted trial(s) {requeued}" if requeued else "")
                    + (f"; sweeper #{joined + 1} of this study (sampler seed +{joined})" if joined else "")
                    + f"; outputs in {self.sweep_dir}")
        with atomic_file(self.sweep_dir / "multirun.yaml") as tmp:  # sweepers of one study share the folder
            OmegaConf.save(self.config, tmp)

        pool = self._gpu_pool() if self.n_jobs > 1 else []
        status = "FINISHED"
        watcher = st.StaleWatcher()
        waited: set[int] = set()
        try:
            with st.Heartbeat(study, owner):
                while True:
                    with st.study_lock(spec, storage, self.study_name):
                        st.recover(study, own=owner, watcher=watcher)  # another sweeper that died
                        c = st.counts(study)
                        if c["failed"] > self.max_failure_rate * n_trials:
                            raise SweepFailed(
                                f"{c['failed']} of {n_trials} planned trials failed (max_failure_rate="
                                f"{self.max_failure_rate}); the study is kept in {self.spec_shown}. First errors:\n"
                                + "\n".join(f"  trial {t.number}: {t.user_attrs.get(st.ATTR_FAIL_REASON, '?')}"
                                            for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                                            if not t.user_attrs.get(st.ATTR_INTERRUPTED))[:3000])
                        # trials running under other live sweepers are in flight: they count, never stolen
                        left = n_trials - c["done"] - c["running"]
                        trials = self._ask(study, min(self.n_jobs, left), space, owner) if left > 0 else []
                    if trials:
                        self._run_batch(study, trials, base, fixed, space, spec, pool, runs)
                    elif c["running"]:  # the rest runs elsewhere: wait, and take over what a dead sweeper leaves
                        others = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                        if {t.number for t in others} - waited:
                            waited = {t.number for t in others}
                            self._print(f"{c['done']}/{n_trials} trials done; waiting for "
                                        + ", ".join(f"#{t.number} ({t.user_attrs.get(st.ATTR_OWNER, '?')})"
                                                    for t in others))
                        time.sleep(WAIT_POLL_S)
                    else:
                        break
        except BaseException as e:
            status = "KILLED" if isinstance(e, (KeyboardInterrupt, SystemExit)) else "FAILED"
            raise
        finally:
            self._finish(study, runs, status)
        return study

    def _check_storage_reach(self, spec: str) -> None:
        """SLURM jobs open the study themselves: a database on 127.0.0.1 (what `make postgres`
        starts) is reachable from a one-node cluster on this machine (`make slurm-up`), not from
        other nodes. Say so before the jobs go out, without refusing."""
        if not st.is_rdb_url(spec) or "Slurm" not in str(OmegaConf.select(self.config, "hydra.launcher._target_")):
            return
        from sqlalchemy.engine import make_url

        u = make_url(spec)
        if u.get_backend_name() != "sqlite" and (u.host or "localhost") in ("localhost", "127.0.0.1", "::1"):
            self._print(f"warning: hydra.sweeper.storage {self.spec_shown} is on {u.host or 'localhost'}: only SLURM "
                        "jobs on this machine reach it; on a real cluster use a server the nodes reach by its host name")

    def _ask(self, study, size, space, owner) -> list[optuna.Trial]:
        """Ask `size` trials (re-asked and enqueued ones first) and mark them as this sweeper's."""
        trials = []
        try:
            for _ in range(size):
                t = study.ask(space.distributions)
                trials.append(t)
                st.claim_trial(study, t, owner)
        except BaseException as e:
            for t in trials:
                st.fail_trial(study, t.number, f"interrupted: {type(e).__name__}", interrupted=True)
            raise
        return trials

    def _run_batch(self, study, trials, base, fixed, space, spec, pool, runs) -> None:
        try:
            self._launch_and_tell(study, trials, base, fixed, spec, pool, runs)
        except (KeyboardInterrupt, SystemExit) as e:  # Lightning turns Ctrl-C into SystemExit after its cleanup
            for t in trials:  # fail_trial leaves trials that were already told alone
                st.fail_trial(study, t.number, f"interrupted: {type(e).__name__}", interrupted=True)
            raise

    def _launch_and_tell(self, study, trials, base, fixed, spec, pool, runs) -> None:
        batch = [self._job_overrides(t, base, fixed, spec, pool[i % len(pool)] if pool else None)
                 for i, t in enumerate(trials)]
        # A sampled config that cannot even be composed fails its trial here, before any launch.
        launchable = []
        for t, o in zip(trials, batch):
            try:
                self.validate_batch_is_legal([o])
                launchable.append((t, o))
            except Exception as e:
                self._tell_fail(study, t, f"config error: {_exception_text(e)}", runs)
        if not launchable:
            return
        names = ", ".join(f"#{t.number} {' '.join(sp.to_overrides(t.params))}" for t, _ in launchable)
        self._print(f"running trial(s) {names}")
        try:
            results = self.launcher.launch([o for _, o in launchable], initial_job_idx=launchable[0][0].number)
        except Exception as e:  # the launcher itself broke (e.g. a joblib worker killed by the OOM killer)
            for t, _ in launchable:
                self._tell_fail(study, t, f"launcher error: {_exception_text(e)}", runs)
            return
        for (t, _), r in zip(launchable, results):
            self._tell(study, t, r, runs)

    # ------------------------------------------------------------------------------- results
    def _tell(self, study, trial, job_return, runs) -> None:
        if job_return.status != JobStatus.COMPLETED:
            exc = job_return._return_value  # Hydra keeps the job's exception here
            if isinstance(exc, BaseException):
                log.error("trial %d failed:\n%s", trial.number,
                          "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
                self._tell_fail(study, trial, _exception_text(exc), runs)
            else:
                self._tell_fail(study, trial, f"job status {job_return.status}", runs)
            return
        ret = job_return.return_value
        pruned_step = ret.get("pruned_step") if isinstance(ret, dict) else None
        if pruned_step is not None:
            trial.set_user_attr(st.ATTR_PRUNED_STEP, int(pruned_step))
            study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
            self._print(f"trial {trial.number} pruned at step {pruned_step}")
            self._record(runs, study, trial, "PRUNED", {}, {"optuna.pruned_step": pruned_step})
            return
        try:
            values = _metric_values(ret, self.metrics)
        except (KeyError, TypeError) as e:
            self._tell_fail(study, trial, str(e), runs)
            return
        if not st.finite_values(values):
            self._tell_fail(study, trial, f"objective is not finite: {dict(zip(self.metrics, values))}", runs)
            return
        study.tell(trial, values, skip_if_finished=True)  # another sweeper may have taken it over meanwhile
        shown = ", ".join(f"{m}={v:.5g}" for m, v in zip(self.metrics, values))
        self._print(f"trial {trial.number} complete: {shown}")
        self._record(runs, study, trial, "COMPLETE", dict(zip(self.metrics, values)), {})

    def _tell_fail(self, study, trial, reason: str, runs) -> None:
        trial.set_user_attr(st.ATTR_FAIL_REASON, reason[:2000])
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        self._print(f"trial {trial.number} FAILED: {reason.splitlines()[-1] if reason else '?'}")
        self._record(runs, study, trial, "FAIL", {}, {"optuna.fail_reason": reason})

    def _record(self, runs, study, trial, state, values, tags) -> None:
        if runs is None:
            return
        try:
            runs.record_trial(trial.number, self.study_name, state, trial.params, values, tags)
        except Exception as e:  # tracking trouble never stops the study
            log.warning("MLflow: could not record trial %d: %s", trial.number, e)

    # ------------------------------------------------------------------------------- MLflow / end
    def _mlflow_store(self):
        """The study's MLflow store (`logger.mlflow`), a tracking server checked now; None without MLflow."""
        mcfg = (self.config.get("logger") or {}).get("mlflow") if self.config.get("logger") else None
        if not mcfg:
            return None
        from lit_tf.tracking.mlflow import open_store

        return open_store(mcfg, check=True)

    def _open_mlflow(self, study, spec, store):
        if store is None:
            return None
        from lit_tf.cli.train import CONFIG_DIR
        from lit_tf.tracking.mlflow import experiment_description
        from lit_tf.tracking.study_runs import StudyRuns

        runs = StudyRuns(store, str(self.config.logger.mlflow.experiment_name),
                         experiment_description(CONFIG_DIR, str(self.config.get("name") or "")))
        parent = runs.open_parent(study.user_attrs.get(st.STUDY_ATTR_PARENT_RUN), self.study_name,
                                  {"optuna.storage": spec if not st.is_rdb_url(spec) else "rdb",
                                   "optuna.sweep_dir": str(self.sweep_dir),
                                   "optuna.directions": ",".join(self.directions),
                                   "optuna.metrics": ",".join(self.metrics)})
        study.set_user_attr(st.STUDY_ATTR_PARENT_RUN, parent)
        return runs

    def reproduce_command(self, params: dict) -> str:
        """The single-run command that repeats a trial: this sweep's own overrides + its values."""
        parsed = OverridesParser.create().parse_overrides(list(self.config.hydra.overrides.task))
        keep = [o.input_line for o in parsed if not o.is_sweep_override()]
        return "python train.py " + " ".join(shlex.quote(o) for o in [*keep, *sp.to_overrides(params)])

    def _best(self, study) -> dict:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            return {}
        if len(self.directions) == 1:
            t = study.best_trial
        else:  # multi-objective: report the first Pareto-optimal trial by the first metric
            sign = 1 if self.directions[0] == "minimize" else -1
            t = min(study.best_trials, key=lambda tr: sign * tr.values[0])
        return {"number": t.number, "params": dict(t.params), "values": dict(zip(self.metrics, t.values))}

    def _finish(self, study, runs, status: str) -> None:
        from lit_tf.sweeping.plots import write_study_files

        c = st.counts(study)
        best = self._best(study)
        files: list[Path] = []
        try:
            files = write_study_files(study, self.sweep_dir / "study")
        except Exception as e:
            log.warning("study files not written: %s", e)
        if runs is not None:
            try:
                runs.log_study_result(best, files)
                runs.close_parent(status)
            except Exception as e:
                log.warning("MLflow: parent run not updated: %s", e)
        lines = [f"{c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed"
                 + (f", {c['interrupted']} interrupted" if c["interrupted"] else "")]
        if best:
            shown = ", ".join(f"{m}={v:.5g}" for m, v in best["values"].items())
            lines += [f"best trial #{best['number']}: {shown}",
                      f"  params: {best['params']}",
                      f"  reproduce: {self.reproduce_command(best['params'])}"]
        lines += [f"trials table: {self.sweep_dir / 'study' / 'trials.csv'}",
                  f"summary:      python -m lit_tf.cli.study summary {self.spec_shown} {self.study_name}"]
        self._print("\n  ".join(lines))
