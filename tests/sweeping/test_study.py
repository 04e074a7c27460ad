"""Study plumbing: storage specs, named samplers/pruners, objectives, and crash recovery."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from lit_tf.sweeping import study as st


def test_storage_spec_default_path_and_urls(tmp_path):
    assert st.resolve_storage_spec(None, tmp_path) == str(tmp_path.resolve() / "optuna.journal")
    assert st.resolve_storage_spec("journal://" + str(tmp_path / "s.log"), None) == str(tmp_path / "s.log")
    assert st.resolve_storage_spec("postgresql://u@h/db", None) == "postgresql://u@h/db"
    assert st.resolve_storage_spec("sqlite:///x.db", None) == "sqlite:///x.db"
    with pytest.raises(st.StudyConfigError, match="sweep"):
        st.resolve_storage_spec(None, None)


def test_named_samplers_and_pruners():
    assert isinstance(st.build_sampler({"name": "tpe", "seed": 1}), optuna.samplers.TPESampler)
    assert isinstance(st.build_sampler("random", seed=3), optuna.samplers.RandomSampler)
    assert isinstance(st.build_sampler("cmaes"), optuna.samplers.CmaEsSampler)
    assert isinstance(st.build_sampler("nsgaii"), optuna.samplers.NSGAIISampler)
    assert isinstance(st.build_sampler("grid", grid_space={"a": [1, 2]}), optuna.samplers.GridSampler)
    assert isinstance(st.build_pruner({"name": "median", "n_startup_trials": 1}), optuna.pruners.MedianPruner)
    assert isinstance(st.build_pruner("hyperband"), optuna.pruners.HyperbandPruner)
    assert isinstance(st.build_pruner(None), optuna.pruners.NopPruner)
    with pytest.raises(st.StudyConfigError, match="unknown name 'tpee'"):
        st.build_sampler("tpee")
    with pytest.raises(st.StudyConfigError, match="pruner 'median'"):
        st.build_pruner({"name": "median", "n_startup": 1})


def test_objectives_pair_metrics_with_directions():
    assert st.objectives("val/loss", "min") == (["val/loss"], ["minimize"])
    assert st.objectives(["a", "b"], "maximize") == (["a", "b"], ["maximize", "maximize"])
    with pytest.raises(st.StudyConfigError, match="2 direction"):
        st.objectives(["a", "b", "c"], ["minimize", "maximize"])
    with pytest.raises(st.StudyConfigError, match="metric"):
        st.objectives(None, "minimize")


def test_recover_fails_orphaned_trials_and_asks_their_params_again(tmp_path):
    spec = st.resolve_storage_spec(None, tmp_path)
    study = optuna.create_study(study_name="s", storage=st.open_storage(spec))
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    done = study.ask(dist)
    study.tell(done, 0.5)
    orphan = study.ask(dist)  # still running under a sweeper on another machine
    orphan.set_user_attr(st.ATTR_OWNER, "localhost-that-is-not-here:1")
    dead = study.ask(dist)
    import socket

    dead.set_user_attr(st.ATTR_OWNER, f"{socket.gethostname()}:999999")  # no such pid
    requeued = st.recover(optuna.load_study(study_name="s", storage=st.open_storage(spec)))
    study = optuna.load_study(study_name="s", storage=st.open_storage(spec))
    states = {t.number: t.state for t in study.trials}
    assert states[dead.number] == TrialState.FAIL and requeued == [dead.number]
    assert states[orphan.number] == TrialState.RUNNING  # another host's sweeper: left alone
    assert study.trials[dead.number].user_attrs[st.ATTR_INTERRUPTED] is True
    assert st.recover(study) == []  # requeued once only
    c = st.counts(study)
    assert (c["complete"], c["interrupted"], c["running"], c["waiting"], c["done"]) == (1, 1, 1, 1, 1)
    retry = study.ask(dist)  # the next ask re-runs the interrupted trial's parameters
    assert retry.params == study.trials[dead.number].params
    assert retry.number == 3  # a new number after the three asked before: numbers are never reused
