"""Optuna study plumbing shared by the sweeper, the jobs and `lit_tf.cli.study`:
storage specs, named samplers and pruners, and the bookkeeping that makes a study resumable.

Storage spec (the `storage:` key of a study file, or the CLI argument):
- null: a journal file `optuna.journal` in the sweep's output folder (Optuna's JournalStorage
  appends one record per operation under a file lock, so parallel writers on one machine or on
  a shared file system stay consistent; SQLite is not safe for that);
- a path, or `journal:///abs/path`: that journal file;
- an RDB URL (`sqlite:///file.db`, `postgresql://user@host/db`, `mysql+pymysql://...`): Optuna's
  RDBStorage, for clusters.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from omegaconf import ListConfig
from optuna.trial import TrialState

from lit_tf.errors import LitTfError

DEFAULT_JOURNAL = "optuna.journal"
JOURNAL_SCHEME = "journal://"

# Trial user attributes the sweeper writes (prefix keeps them apart from the user's own).
ATTR_OWNER = "lit_tf.owner"  # "host:pid" of the sweeper process that asked the trial
ATTR_INTERRUPTED = "lit_tf.interrupted"  # True: the trial did not fail on its own; it is asked again
ATTR_RETRY_OF = "lit_tf.retry_of"  # on a re-asked trial: the number of the interrupted one it repeats
ATTR_FAIL_REASON = "lit_tf.fail_reason"
ATTR_PRUNED_STEP = "lit_tf.pruned_step"
STUDY_ATTR_PARENT_RUN = "lit_tf.mlflow_parent_run_id"


class StudyConfigError(LitTfError):
    """A study setting that cannot work (the message names the key)."""


# ----------------------------------------------------------------------------------------- storage
def is_rdb_url(spec: str) -> bool:
    return "://" in spec and not spec.startswith(JOURNAL_SCHEME)


def resolve_storage_spec(spec: str | None, sweep_dir: str | os.PathLike | None) -> str:
    """Normalise a storage spec to an RDB URL or an absolute journal path (what jobs receive)."""
    if spec is None or str(spec).strip() in ("", "null", "None"):
        if sweep_dir is None:
            raise StudyConfigError("storage: null needs the sweep's output folder (hydra.sweep.dir)")
        return str(Path(sweep_dir).resolve() / DEFAULT_JOURNAL)
    spec = str(spec)
    if is_rdb_url(spec):
        return spec
    path = spec[len(JOURNAL_SCHEME):] if spec.startswith(JOURNAL_SCHEME) else spec
    return str(Path(path).expanduser().resolve())


def open_storage(spec: str) -> optuna.storages.BaseStorage | str:
    """A resolved spec -> what optuna.create_study/load_study accept."""
    if is_rdb_url(spec):
        return spec
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = Path(spec)
    if path.is_dir():
        raise StudyConfigError(f"storage: {path} is a directory; give the journal file inside it")
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def open_existing_storage(spec: str) -> optuna.storages.BaseStorage | str:
    """open_storage for reading: a journal file must already exist (never create an empty one)."""
    if not is_rdb_url(spec) and not Path(spec).is_file():
        raise FileNotFoundError(f"storage {spec}: no such journal file")
    return open_storage(spec)


def load_existing_study(spec: str, name: str, pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """Load a study that must exist; the error lists the studies the storage does hold."""
    storage = open_existing_storage(spec)
    try:
        return optuna.load_study(study_name=name, storage=storage, pruner=pruner)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
        raise KeyError(f"study '{name}' is not in {spec}; it holds: {names or 'no studies'}") from None


# ------------------------------------------------------------------------------ samplers / pruners
def named_spec(spec: Any, key: str) -> tuple[str, dict]:
    """`tpe` or `{name: tpe, seed: 0, ...}` -> ("tpe", {"seed": 0, ...})."""
    if spec is None:
        return "none", {}
    if isinstance(spec, str):
        return spec.lower(), {}
    if isinstance(spec, Mapping):
        kwargs = dict(spec)
        name = kwargs.pop("name", None)
        if name is None:
            raise StudyConfigError(f"{key}: give `name:` (one of the names listed in the README) with its options")
        return str(name).lower(), kwargs
    raise StudyConfigError(f"{key}: expected a name or a mapping with `name:`, got {spec!r}")


class AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler for the sweeper's ask/tell loop: Optuna's calls `study.stop()` once the grid is
    used up, which only works inside `study.optimize`; the sweeper caps n_trials at the grid size."""

    def after_trial(self, study, trial, state, values) -> None:
        try:
            super().after_trial(study, trial, state, values)
        except RuntimeError as e:
            if "Study.stop" not in str(e):
                raise


def build_sampler(spec: Any, grid_space: Mapping[str, list] | None = None, seed: int | None = None):
    """Named sampler: tpe | random | cmaes | grid | nsgaii | qmc (options as keyword arguments)."""
    name, kwargs = named_spec(spec, "sampler")
    if seed is not None:
        kwargs.setdefault("seed", seed)
    samplers = optuna.samplers
    table = {"tpe": samplers.TPESampler, "random": samplers.RandomSampler, "cmaes": samplers.CmaEsSampler,
             "nsgaii": samplers.NSGAIISampler, "nsga2": samplers.NSGAIISampler, "qmc": samplers.QMCSampler,
             "grid": AskTellGridSampler}
    if name not in table:
        raise StudyConfigError(f"sampler: unknown name '{name}'; known: {sorted(table)}")
    if name == "grid":
        kwargs.setdefault("search_space", dict(grid_space or {}))
    try:
        return table[name](**kwargs)
    except TypeError as e:
        raise StudyConfigError(f"sampler '{name}': {e}") from None


def build_pruner(spec: Any) -> optuna.pruners.BasePruner:
    """Named pruner: none | median | percentile | successive_halving | hyperband | threshold."""
    name, kwargs = named_spec(spec, "pruner")
    pruners = optuna.pruners
    table = {"none": pruners.NopPruner, "nop": pruners.NopPruner, "median": pruners.MedianPruner,
             "percentile": pruners.PercentilePruner, "successive_halving": pruners.SuccessiveHalvingPruner,
             "asha": pruners.SuccessiveHalvingPruner, "hyperband": pruners.HyperbandPruner,
             "threshold": pruners.ThresholdPruner, "wilcoxon": pruners.WilcoxonPruner}
    if name not in table:
        raise StudyConfigError(f"pruner: unknown name '{name}'; known: {sorted(table)}")
    try:
        return table[name](**kwargs)
    except TypeError as e:
        raise StudyConfigError(f"pruner '{name}': {e}") from None


def as_list(x: Any) -> list:
    if x is None:
        return []
    if isinstance(x, (list, tuple, ListConfig)):
        return list(x)
    return [x]


def objectives(metric: Any, direction: Any) -> tuple[list[str], list[str]]:
    """metric(s) and direction(s) -> two equal-length lists (one direction applies to all)."""
    metrics = [str(m) for m in as_list(metric)]
    aliases = {"min": "minimize", "max": "maximize"}
    directions = [aliases.get(str(d).lower(), str(d).lower()) for d in as_list(direction)] or ["minimize"]
    if not metrics:
        raise StudyConfigError("metric: name the validation metric(s) to optimise, e.g. metric: val/loss")
    if len(directions) == 1 and len(metrics) > 1:
        directions *= len(metrics)
    if len(directions) != len(metrics):
        raise StudyConfigError(f"direction: {len(directions)} direction(s) for {len(metrics)} metric(s) {metrics}")
    bad = [d for d in directions if d not in ("minimize", "maximize")]
    if bad:
        raise StudyConfigError(f"direction: expected minimize or maximize, got {bad[0]!r}")
    return metrics, directions


# ----------------------------------------------------------------------------------- bookkeeping
def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(owner: str | None) -> bool:
    """False when `owner` is a process on this host that no longer exists."""
    if not owner or ":" not in owner:
        return True  # unknown: leave it alone
    host, pid = owner.rsplit(":", 1)
    if host != socket.gethostname():
        return True  # another node's sweeper: its own business
    try:
        pid_n = int(pid)
        if pid_n == os.getpid():
            return False  # recover() runs before this process asks anything: an earlier holder of our pid
        os.kill(pid_n, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def trial_id(study: optuna.Study, number: int) -> int:
    """Storage id of trial `number` (Optuna has no public lookup by number across processes)."""
    return study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)


def fail_trial(study: optuna.Study, trial_number: int, reason: str, interrupted: bool = False) -> None:
    """Mark a RUNNING trial FAIL with its reason (a finished trial keeps its state)."""
    storage = study._storage
    tid = trial_id(study, trial_number)
    if storage.get_trial(tid).state != TrialState.RUNNING:
        return
    storage.set_trial_user_attr(tid, ATTR_FAIL_REASON, reason[:2000])
    if interrupted:
        storage.set_trial_user_attr(tid, ATTR_INTERRUPTED, True)
    storage.set_trial_state_values(tid, TrialState.FAIL)


def recover(study: optuna.Study) -> list[int]:
    """Resume: RUNNING trials whose sweeper died become FAIL (interrupted); every interrupted
    trial's params are enqueued once so the next asks re-run them. Returns the re-queued numbers."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _owner_alive(t.user_attrs.get(ATTR_OWNER)):
            fail_trial(study, t.number, "interrupted: its sweeper process exited", interrupted=True)
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get(ATTR_RETRY_OF) for t in trials}  # a finished trial's attrs are frozen
    requeued = []
    for t in trials:
        if t.state == TrialState.FAIL and t.user_attrs.get(ATTR_INTERRUPTED) and t.number not in retried:
            study.enqueue_trial(t.params, user_attrs={ATTR_RETRY_OF: t.number}, skip_if_exists=False)
            requeued.append(t.number)
    return requeued


def counts(study: optuna.Study) -> dict[str, int]:
    """complete / pruned / failed (real failures) / interrupted / running / waiting."""
    c = dict.fromkeys(("complete", "pruned", "failed", "interrupted", "running", "waiting"), 0)
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            c["complete"] += 1
        elif t.state == TrialState.PRUNED:
            c["pruned"] += 1
        elif t.state == TrialState.FAIL:
            c["interrupted" if t.user_attrs.get(ATTR_INTERRUPTED) else "failed"] += 1
        elif t.state == TrialState.RUNNING:
            c["running"] += 1
        elif t.state == TrialState.WAITING:
            c["waiting"] += 1
    c["done"] = c["complete"] + c["pruned"] + c["failed"]
    return c


def finite_values(values: list[float]) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


# ---------------------------------------------------------------------------------- search space
STUDY_ATTR_SPACE = "lit_tf.search_space"  # the study's distributions, as Optuna JSON, set on first use


def _show_distribution(d: optuna.distributions.BaseDistribution) -> str:
    if isinstance(d, optuna.distributions.CategoricalDistribution):
        return f"choice{tuple(d.choices)}"
    kind = "int" if isinstance(d, optuna.distributions.IntDistribution) else "float"
    step = f", step {d.step}" if d.step not in (None, 1) else ""
    return f"{kind} [{d.low}, {d.high}]{' log' if d.log else ''}{step}"


def check_search_space(study: optuna.Study, distributions: Mapping[str, optuna.distributions.BaseDistribution],
                       shown: str) -> None:
    """A study has one search space: a re-run (resume) must search the same keys with the same
    distributions, or its trials would mix incomparable points. The first run records the space on
    the study; studies from before that are compared with their trials' distributions."""
    from optuna.distributions import distribution_to_json, json_to_distribution

    recorded = study.user_attrs.get(STUDY_ATTR_SPACE)
    if recorded is not None:
        stored = {k: json_to_distribution(v) for k, v in recorded.items()}
    else:
        stored = {}
        for t in study.get_trials(deepcopy=False):
            for k, d in t.distributions.items():
                stored.setdefault(k, d)
    diffs = []
    for key in sorted(set(stored) | set(distributions)) if stored else ():
        old, new = stored.get(key), distributions.get(key)
        if old is None:
            diffs.append(f"params.{key}: not in the stored trials (now {_show_distribution(new)})")
        elif new is None:
            diffs.append(f"params.{key}: in the stored trials ({_show_distribution(old)}) but not in this sweep")
        elif old != new:
            diffs.append(f"params.{key}: stored {_show_distribution(old)}, now {_show_distribution(new)}")
    if diffs:
        raise StudyConfigError(
            f"study '{study.study_name}' in {shown} was run with a different search space: " + "; ".join(diffs),
            hint="give this search space a new study_name (hydra.sweeper.study_name=...) or storage, "
                 "or restore the study's params to resume it")
    if recorded is None:
        study.set_user_attr(STUDY_ATTR_SPACE, {k: distribution_to_json(d) for k, d in distributions.items()})
