"""Search spaces in the Hydra override syntax that hydra-optuna-sweeper users know.

    params:
      optim.optimizer.lr: tag(log, interval(1e-5, 1e-3))   # float, log-uniform
      optim.warmup_ratio: interval(0.0, 0.2)               # float, uniform
      model.n_layers: choice(2, 4)                         # categorical
      data.batch_size: range(16, 65, 16)                   # int, step 16 (stop exclusive, as Python's range)
      trainer.max_steps: tag(int, interval(100, 400))      # int, uniform
      model.d_ff: tag(log, int, interval(64, 1024))        # int, log-uniform
      seed: 7                                              # fixed value, not searched

Each entry becomes an Optuna distribution (the sweeper samples them all at once with
`study.ask(space.distributions)`); `to_overrides` turns a trial's values back into `key=value` strings for the job's command line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from lit_tf.errors import LitTfError

SPACE_TAGS = frozenset({"log", "int"})
CategoricalValue = None | bool | int | float | str


class SearchSpaceError(LitTfError):
    """A `params:` entry that cannot become an Optuna distribution (the message names the key)."""


@dataclass(frozen=True)
class SearchSpace:
    """distributions: searched keys; fixed: keys pinned to one value for every trial."""

    distributions: dict[str, BaseDistribution]
    fixed: dict[str, Any]

    def grid(self) -> dict[str, list]:
        """The search space for Optuna's GridSampler: every key must be discrete."""
        out = {}
        for key, d in self.distributions.items():
            if isinstance(d, CategoricalDistribution):
                out[key] = list(d.choices)
            elif isinstance(d, IntDistribution) and not d.log:
                out[key] = list(range(d.low, d.high + 1, d.step))
            elif isinstance(d, FloatDistribution) and d.step is not None:
                n = round((d.high - d.low) / d.step)
                out[key] = [round(d.low + i * d.step, 12) for i in range(n + 1)]
            else:
                raise SearchSpaceError(
                    f"params.{key}: the grid sampler needs discrete values (choice(...) or range(...)), got {d}"
                )
        return out


def _number(x: Any, key: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise SearchSpaceError(f"params.{key}: bounds must be numbers, got {x!r}")
    return x


def _range_high(start: float, stop: float, step: float, key: str) -> float:
    """Largest start + k*step that is < stop (Hydra's range, like Python's, excludes stop)."""
    if step <= 0 or stop <= start:
        raise SearchSpaceError(f"params.{key}: range(start, stop, step) needs stop > start and step > 0")
    k = math.ceil((stop - start) / step) - 1
    return start + k * step


def _distribution(key: str, value: Any) -> BaseDistribution | None:
    """One override value -> a distribution, or None for a fixed (non-sweep) value."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    tags = set(getattr(value, "tags", ()) or ())
    unknown = tags - SPACE_TAGS
    if unknown:
        raise SearchSpaceError(f"params.{key}: unknown tag(s) {sorted(unknown)}; known: {sorted(SPACE_TAGS)}")
    log, as_int = "log" in tags, "int" in tags
    if isinstance(value, ChoiceSweep):
        choices = list(value.list)
        bad = [c for c in choices if not isinstance(c, CategoricalValue)]
        if bad:
            raise SearchSpaceError(f"params.{key}: choice() values must be numbers, strings, booleans or null, "
                                   f"got {bad[0]!r}")
        if len(set(map(repr, choices))) != len(choices):
            raise SearchSpaceError(f"params.{key}: choice() lists a value twice: {choices}")
        if log:
            raise SearchSpaceError(f"params.{key}: tag(log, ...) applies to interval() and range(), not choice()")
        return CategoricalDistribution(choices)
    if isinstance(value, IntervalSweep):
        low, high = _number(value.start, key), _number(value.end, key)
        if not low < high:
            raise SearchSpaceError(f"params.{key}: interval(low, high) needs low < high, got {low}, {high}")
        if log and low <= 0:
            raise SearchSpaceError(f"params.{key}: a log interval needs low > 0, got {low}")
        if as_int:
            if low != int(low) or high != int(high):
                raise SearchSpaceError(f"params.{key}: tag(int, interval(...)) needs whole-number bounds")
            return IntDistribution(int(low), int(high), log=log)
        return FloatDistribution(float(low), float(high), log=log)
    if isinstance(value, RangeSweep):
        start, stop, step = (_number(v, key) for v in (value.start, value.stop, value.step))
        high = _range_high(start, stop, step, key)
        if all(isinstance(v, int) for v in (start, stop, step)) or as_int:
            if log and step != 1:
                raise SearchSpaceError(f"params.{key}: Optuna's log int distribution needs step 1")
            if log and start <= 0:
                raise SearchSpaceError(f"params.{key}: a log range needs start > 0")
            return IntDistribution(int(start), int(high), log=log, step=int(step))
        if log:
            raise SearchSpaceError(f"params.{key}: Optuna cannot combine log with a float step; "
                                   "use tag(log, interval(...))")
        return FloatDistribution(float(start), float(round(high, 12)), step=float(step))
    if isinstance(value, (list, tuple)):
        raise SearchSpaceError(
            f"params.{key}: a YAML list is ambiguous here; write choice(a, b, ...) to search over values"
        )
    return None


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested keys (`hydra.sweeper.params.model.n_layers=...` on the command line) -> dotted keys."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def parse_search_space(params: Mapping[str, Any] | None) -> SearchSpace:
    """`params:` mapping (values in override syntax, or plain YAML scalars) -> SearchSpace."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException, OverrideParseException

    parser = OverridesParser.create()
    dists: dict[str, BaseDistribution] = {}
    fixed: dict[str, Any] = {}
    for key, raw in _flatten(params or {}).items():
        if isinstance(raw, str):
            try:
                value = parser.parse_override(f"{key}={raw}").value()
            except (OverrideParseException, HydraException) as e:
                raise SearchSpaceError(f"params.{key}: cannot parse {raw!r}: {e}") from None
        else:
            value = raw
        d = _distribution(key, value)
        if d is None:
            fixed[key] = value
        else:
            dists[key] = d
    return SearchSpace(dists, fixed)


def format_value(value: Any) -> str:
    """A Python value in Hydra's override syntax (strings quoted only when needed)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        from hydra.core.override_parser.overrides_parser import OverridesParser

        try:  # keep a plain string plain when the parser reads it back as the same string
            if OverridesParser.create().parse_override(f"k={value}").value() == value:
                return value
        except Exception:
            pass
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(value)


def to_overrides(values: Mapping[str, Any]) -> list[str]:
    """{"optim.optimizer.lr": 1e-4} -> ["optim.optimizer.lr=0.0001"]."""
    return [f"{k}={format_value(v)}" for k, v in values.items()]
