"""Optuna study plumbing shared by the sweeper, the jobs and `lit_tf.cli.study`:
storage specs, named samplers and pruners, and the bookkeeping that makes a study resumable.

Storage spec (the `storage:` key of a study file, or the CLI argument):
- null: a journal file `optuna.journal` in the sweep's output folder (Optuna's JournalStorage
  appends one record per operation under a file lock, so parallel writers on one machine or on
  a shared file system stay consistent; SQLite is not safe for that);
- a path, or `journal:///abs/path`: that journal file;
- an RDB URL (`postgresql://user@host:port/dbname`, `postgresql+psycopg2://...`, `sqlite:///file.db`):
  Optuna's RDBStorage. PostgreSQL is the one for several sweepers on several machines driving one
  study (`make postgres` starts a local one); a password in the URL is never printed
  (`shown_storage`), and libpq also reads it from PGPASSWORD or ~/.pgpass.

Several sweeper processes may drive one study at the same time: their bookkeeping (create or join
the study, recover, count, ask) is serialised by `study_lock`, trials running under another live
sweeper count as in flight, and a sweeper that dies is noticed (its process is gone, or its
heartbeat stops) so that its trials are asked again exactly once.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from omegaconf import ListConfig
from optuna.trial import TrialState

from lit_tf.errors import LitTfError
from lit_tf.sweeping import locks

log = logging.getLogger(__name__)

DEFAULT_JOURNAL = "optuna.journal"
JOURNAL_SCHEME = "journal://"

# Trial user attributes the sweeper writes (prefix keeps them apart from the user's own).
ATTR_OWNER = "lit_tf.owner"  # "host:pid" of the sweeper process that asked the trial
ATTR_INTERRUPTED = "lit_tf.interrupted"  # True: the trial did not fail on its own; it is asked again
ATTR_RETRY_OF = "lit_tf.retry_of"  # on a re-asked trial: the number of the interrupted one it repeats
ATTR_FAIL_REASON = "lit_tf.fail_reason"
ATTR_PRUNED_STEP = "lit_tf.pruned_step"
STUDY_ATTR_PARENT_RUN = "lit_tf.mlflow_parent_run_id"
STUDY_ATTR_SWEEPERS = "lit_tf.sweepers"  # how many sweeper processes have joined the study so far
# Trial system attributes (internal: not in trials.csv): where the owner's pid means something, and
# its heartbeat (a time stamp, read by other sweepers only as "has it changed").
SYS_OWNER_NS = "lit_tf:owner_ns"
SYS_HEARTBEAT = "lit_tf:heartbeat"

HEARTBEAT_S = 30.0  # a sweeper stamps its running trials this often
STALE_AFTER_S = 300.0  # a running trial whose stamp has not changed for this long lost its sweeper
RDB_CONNECT_TIMEOUT_S = 10  # seconds to reach a database server before the sweep reports it unreachable


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


def shown_storage(spec: str) -> str:
    """The spec as it may be printed: an RDB URL with its password masked (`user:***@host`)."""
    if not is_rdb_url(spec):
        return spec
    try:
        from sqlalchemy.engine import make_url

        return make_url(spec).render_as_string(hide_password=True)
    except Exception:
        return "'<storage URL>'"


_RDB_STORAGES: dict[str, optuna.storages.RDBStorage] = {}  # one engine per URL and process


def open_storage(spec: str, key: str = "hydra.sweeper.storage") -> optuna.storages.BaseStorage:
    """A resolved spec -> what optuna.create_study/load_study accept. A database that cannot be
    reached (or a URL that cannot work) is a StudyConfigError naming `key`."""
    if is_rdb_url(spec):
        if spec not in _RDB_STORAGES:
            _RDB_STORAGES[spec] = _open_rdb(spec, key)
        return _RDB_STORAGES[spec]
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = Path(spec)
    if path.is_dir():
        raise StudyConfigError(f"storage: {path} is a directory; give the journal file inside it")
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def _open_rdb(url: str, key: str) -> optuna.storages.RDBStorage:
    import sqlalchemy
    from sqlalchemy import exc
    from sqlalchemy.engine import make_url

    shown = shown_storage(url)
    form = "dialect[+driver]://user[:password]@host[:port]/dbname, e.g. postgresql://postgres@127.0.0.1:5433/optuna"
    try:
        u = make_url(url)
    except exc.ArgumentError:
        raise StudyConfigError(f"{key}: {shown} is not a database URL; expected {form}") from None
    backend = u.get_backend_name()
    if u.drivername == "postgresql" and _missing("psycopg") and not _missing("psycopg2"):
        # SQLAlchemy 2.1 reads postgresql:// as psycopg (3); use psycopg2 when that is what is installed
        url = u.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    engine_kwargs: dict[str, Any] = {}
    if backend == "postgresql":  # fail fast on an unreachable host; survive server-side idle disconnects
        engine_kwargs = {"connect_args": {"connect_timeout": RDB_CONNECT_TIMEOUT_S}, "pool_pre_ping": True}
    where = f"{u.host or 'localhost'}:{u.port or {'postgresql': 5432, 'mysql': 3306}.get(backend, '-')}"
    try:
        if backend != "postgresql":
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        # Optuna creates its tables and version rows on first use without a lock, and two sweepers
        # started at once on an empty database would collide: one of them does it at a time.
        engine = sqlalchemy.create_engine(url, **engine_kwargs)
        try:
            with locks.advisory_lock(engine, "optuna-schema", f"{key}: creating Optuna's tables"):
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        finally:
            engine.dispose()
    except exc.NoSuchModuleError:
        hint = " (write postgresql://, not postgres://)" if u.drivername == "postgres" else ""
        raise StudyConfigError(f"{key}: unknown database kind '{u.drivername}' in {shown}{hint}; expected {form}") from None
    except ImportError as e:
        pkg = {"postgresql": "psycopg2-binary (or psycopg)", "mysql": "pymysql"}.get(backend, "the database driver")
        raise StudyConfigError(f"{key}: no Python driver for {u.drivername}:// ({e})",
                               hint=f"pip install {pkg}") from None
    except exc.DBAPIError as e:
        reason = " ".join(str(e.orig or e).split())  # libpq's message: host, port, cause (never the password)
        hint = ("start a local PostgreSQL with `make postgres` (it prints the URL to use), or check the "
                "server, user, password and database name in the URL") if backend == "postgresql" else \
            "check that the database server runs and the URL's user, password and database name"
        raise StudyConfigError(f"{key}: cannot use the {backend} database '{u.database}' at {where}: {reason}",
                               hint=hint) from None


def _missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


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
        raise KeyError(f"study '{name}' is not in {shown_storage(spec)}; it holds: {names or 'no studies'}") from None


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


def build_sampler(spec: Any, grid_space: Mapping[str, list] | None = None, seed: int | None = None,
                  seed_offset: int = 0):
    """Named sampler: tpe | random | cmaes | grid | nsgaii | qmc (options as keyword arguments).
    `seed_offset` (the sweeper's join index, see `join_study`) shifts the seed, so that sweepers of
    one study, and a resumed sweep, draw new points instead of repeating the first sweeper's."""
    name, kwargs = named_spec(spec, "sampler")
    if seed is not None:
        kwargs.setdefault("seed", seed)
    if seed_offset and kwargs.get("seed") is not None:
        kwargs["seed"] = (int(kwargs["seed"]) + seed_offset) % 2**32
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


def process_namespace() -> str:
    """Where a pid names this process: the kernel's boot id and the pid namespace. Host names
    alone are not enough: containers on one host may share its name but not its pids, and
    cluster nodes are sometimes all called `localhost`."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:  # not Linux: the host name is the best there is
        return socket.gethostname()


def claim_trial(study: optuna.Study, trial: optuna.Trial, owner: str) -> None:
    """Mark a freshly asked trial as run by sweeper `owner` (host:pid) of this process namespace."""
    trial.set_user_attr(ATTR_OWNER, owner)
    study._storage.set_trial_system_attr(trial._trial_id, SYS_OWNER_NS, process_namespace())
    study._storage.set_trial_system_attr(trial._trial_id, SYS_HEARTBEAT, time.time())


def _owner_alive(owner: str | None, namespace: str | None = None) -> bool:
    """False when `owner` is a process of this machine (and pid namespace) that no longer exists.
    Another machine's sweeper cannot be checked from here: its heartbeat tells (StaleWatcher)."""
    if not owner or ":" not in owner:
        return True  # unknown: leave it alone
    host, pid = owner.rsplit(":", 1)
    if namespace is not None:
        if namespace != process_namespace():
            return True
    elif host != socket.gethostname():  # a trial from before namespaces were recorded
        return True
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


def fail_trial(study: optuna.Study, trial_number: int, reason: str, interrupted: bool = False) -> bool:
    """Mark a RUNNING trial FAIL with its reason (a finished trial keeps its state). False when the
    trial was already finished, also when another process finished it at the same moment."""
    storage = study._storage
    tid = trial_id(study, trial_number)
    if storage.get_trial(tid).state != TrialState.RUNNING:
        return False
    try:
        storage.set_trial_user_attr(tid, ATTR_FAIL_REASON, reason[:2000])
        if interrupted:
            storage.set_trial_user_attr(tid, ATTR_INTERRUPTED, True)
        storage.set_trial_state_values(tid, TrialState.FAIL)  # atomic: only one process finishes a trial
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    return True


class StaleWatcher:
    """Tells when a running trial of another sweeper has lost it: its heartbeat (SYS_HEARTBEAT,
    renewed every HEARTBEAT_S by the owner) has not changed for `after_s` seconds of this process's
    own clock. Only change is compared, never the stamp itself, so clocks of different machines
    need not agree. A trial becomes stale `after_s` after this watcher first saw it at the earliest."""

    def __init__(self, after_s: float = STALE_AFTER_S):
        self.after_s = after_s
        self._seen: dict[int, tuple[Any, float]] = {}  # trial number -> (stamp, when it was first seen)

    def stale(self, trial: optuna.trial.FrozenTrial) -> bool:
        stamp, now = trial.system_attrs.get(SYS_HEARTBEAT), time.monotonic()
        seen = self._seen.get(trial.number)
        if seen is None or seen[0] != stamp:
            self._seen[trial.number] = (stamp, now)
            return False
        return now - seen[1] > self.after_s


def recover(study: optuna.Study, own: str | None = None, watcher: StaleWatcher | None = None) -> list[int]:
    """RUNNING trials whose sweeper is gone become FAIL (interrupted): its process no longer exists
    on this machine, or (with a `watcher`) its heartbeat stopped. Every interrupted trial's params
    are then enqueued once, so the next asks re-run them. Trials of sweeper `own` (the caller, while
    it sweeps) are left alone. Run it under `study_lock`: then the re-queueing happens once however
    many sweepers recover at the same time. Returns the re-queued trial numbers."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get(ATTR_OWNER)
        if own is not None and owner == own:
            continue
        if not _owner_alive(owner, t.system_attrs.get(SYS_OWNER_NS)):
            fail_trial(study, t.number, "interrupted: its sweeper process exited", interrupted=True)
        elif watcher is not None and watcher.stale(t):
            fail_trial(study, t.number, f"interrupted: its sweeper ({owner or 'unknown'}) stopped its heartbeat "
                                        f"for {watcher.after_s:.0f} s", interrupted=True)
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


def join_study(study: optuna.Study) -> int:
    """Count this sweeper in: returns how many joined before it (0 for the first). Under study_lock."""
    k = int(study.user_attrs.get(STUDY_ATTR_SWEEPERS, 0))
    study.set_user_attr(STUDY_ATTR_SWEEPERS, k + 1)
    return k


@contextmanager
def study_lock(spec: str, storage: optuna.storages.BaseStorage, study_name: str) -> Iterator[None]:
    """Serialise one step of a study's bookkeeping with every other sweeper of the study: a
    PostgreSQL advisory lock for a PostgreSQL storage (all machines), an flock on the journal or
    SQLite file itself (no extra file; Optuna's journal lock and SQLite's locks are separate
    mechanisms, so this one does not get in their way). Other databases get no lock (one sweeper
    per study there)."""
    what = f"study '{study_name}' in {shown_storage(spec)}"
    if not is_rdb_url(spec):
        with locks.file_lock(spec, what):
            yield
        return
    backend = storage.engine.url.get_backend_name()
    database = storage.engine.url.database
    if backend == "postgresql":
        with locks.advisory_lock(storage.engine, f"study:{study_name}", what):
            yield
    elif backend == "sqlite" and database and database != ":memory:":
        with locks.file_lock(Path(database).resolve(), what):
            yield
    else:
        yield


class Heartbeat:
    """A thread that stamps SYS_HEARTBEAT on the RUNNING trials of sweeper `owner` every
    `interval_s`, so that other sweepers can tell it is alive (StaleWatcher). Storage trouble is
    logged, never raised: a missed stamp or two is what STALE_AFTER_S is for."""

    def __init__(self, study: optuna.Study, owner: str, interval_s: float = HEARTBEAT_S):
        self.study, self.owner, self.interval_s = study, owner, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lit_tf-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def beat(self) -> None:
        storage = self.study._storage
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get(ATTR_OWNER) == self.owner:
                try:
                    storage.set_trial_system_attr(t._trial_id, SYS_HEARTBEAT, time.time())
                except optuna.exceptions.UpdateFinishedTrialError:
                    pass  # told meanwhile

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat()
            except Exception as e:
                log.warning("sweep heartbeat not recorded: %s", e)


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
