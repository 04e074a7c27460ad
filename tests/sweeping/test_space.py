"""The search-space syntax: every distribution type, the tags, and the errors a typo gets."""

from __future__ import annotations

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from lit_tf.sweeping.space import SearchSpaceError, format_value, parse_search_space, to_overrides


def one(value):
    space = parse_search_space({"k": value})
    return space.distributions.get("k", space.fixed.get("k"))


def test_interval_float_uniform_and_log():
    assert one("interval(0.1, 0.5)") == FloatDistribution(0.1, 0.5)
    assert one("tag(log, interval(1e-5, 1e-3))") == FloatDistribution(1e-5, 1e-3, log=True)


def test_interval_int_tag():
    assert one("tag(int, interval(100, 400))") == IntDistribution(100, 400)
    assert one("tag(log, int, interval(64, 1024))") == IntDistribution(64, 1024, log=True)


def test_choice_keeps_types_and_order():
    assert one("choice(2, 4)") == CategoricalDistribution([2, 4])
    assert one("choice(adamw, sgd)") == CategoricalDistribution(["adamw", "sgd"])
    assert one("choice(true, false)") == CategoricalDistribution([True, False])


def test_range_excludes_stop_like_python():
    d = one("range(16, 65, 16)")
    assert d == IntDistribution(16, 64, step=16)
    assert list(range(d.low, d.high + 1, d.step)) == list(range(16, 65, 16))
    assert one("range(2, 5)") == IntDistribution(2, 4)
    assert one("range(1, 10, 4)") == IntDistribution(1, 9, step=4)  # 1, 5, 9


def test_range_float_step_and_log_int_range():
    d = one("range(0.1, 0.5, 0.1)")
    assert isinstance(d, FloatDistribution) and d.step == pytest.approx(0.1)
    assert d.low == pytest.approx(0.1) and d.high == pytest.approx(0.4)
    assert one("tag(log, range(1, 9))") == IntDistribution(1, 8, log=True)


def test_fixed_values_are_not_searched():
    space = parse_search_space({"seed": 7, "data.name": "sst2", "optim.schedule": "cosine"})
    assert not space.distributions
    assert space.fixed == {"seed": 7, "data.name": "sst2", "optim.schedule": "cosine"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("interval(1e-3, 1e-5)", "low < high"),
        ("tag(log, interval(0, 1))", "low > 0"),
        ("tag(sqrt, interval(0.1, 1))", "unknown tag"),
        ("choice(2, 2)", "twice"),
        ("tag(log, choice(1, 2))", "not choice"),
        ("range(5, 1)", "stop > start"),
        ("tag(int, interval(0.5, 3))", "whole-number"),
        ("interval(1e-5, ", "cannot parse"),
        ("choice(0.1, null)", "cannot parse"),
        ([1, 2], "ambiguous"),
    ],
)
def test_errors_name_the_key(value, message):
    with pytest.raises(SearchSpaceError, match=message) as e:
        parse_search_space({"optim.optimizer.lr": value})
    assert "params.optim.optimizer.lr" in str(e.value)


def test_nested_keys_from_the_command_line_become_dotted():
    space = parse_search_space({"model": {"n_layers": "choice(2, 4)"}, "optim.optimizer.lr": 1e-3})
    assert space.distributions == {"model.n_layers": CategoricalDistribution([2, 4])}
    assert space.fixed == {"optim.optimizer.lr": 1e-3}


def test_grid_lists_discrete_values_and_rejects_intervals():
    space = parse_search_space({"a": "choice(x, y)", "b": "range(1, 4)", "c": "range(0.0, 0.3, 0.1)"})
    grid = space.grid()
    assert grid["a"] == ["x", "y"] and grid["b"] == [1, 2, 3]
    assert grid["c"] == pytest.approx([0.0, 0.1, 0.2])
    with pytest.raises(SearchSpaceError, match="grid sampler"):
        parse_search_space({"lr": "interval(0.1, 0.2)"}).grid()


def test_overrides_round_trip_through_hydra_parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    values = {"a.lr": 3.0e-4, "b": 4, "c": "cosine", "d": None, "e": True, "f": "has space", "g": "1e-3"}
    parser = OverridesParser.create()
    back = {o.key_or_group: o.value() for o in parser.parse_overrides(to_overrides(values))}
    assert back == values
    assert format_value(1e-5) == "1e-05"
