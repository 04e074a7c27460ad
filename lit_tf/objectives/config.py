"""Typed config groups: a frozen dataclass per Hydra group, built once where a run is assembled
(`lit_tf.lit.recipes`) and passed down. A setting's default lives in one place, its field's default.

`Config` is the base of them all (`lit_tf.data.config` for `data`, `lit_tf.lit.optim.OptimConfig`
for `optim`, and the `objective` group below); it lives here, in the lowest layer that the data
and Lightning layers both import. `Cls.from_config(node)` builds one from a composed node (its
`group`, e.g. `data`, names its keys in messages; nested configs pass their own `key`):

- an unknown key is an error naming it in full and the keys the group takes
  (`data.max_doc: unknown key (did you mean data.max_docs?); data takes: name, ...`), raised
  before any data is read;
- a value of an obviously wrong type (a string where a number goes, a number where a list goes)
  is an error naming its key;
- values are kept as given (an integer stays an integer where a float goes), so content hashes
  made from them (token shards, tokenizers) do not depend on the typing;
- a field whose type is a `Config` (or a `dict[str, <Config>]`) is built from its sub-mapping,
  so its keys are checked too; an `INLINE` field's keys sit at its parent's level (the masking
  settings are plain keys of `objective`).
"""

from __future__ import annotations

import difflib
import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar

from lit_tf.errors import LitTfError

INLINE = {"inline": True}  # field metadata: a sub-config whose keys sit at its parent's level


class ConfigError(LitTfError):
    """A config key the group does not take, or a value of the wrong type; the message names the key."""


class Config:
    """Base of the config dataclasses: `from_config` (checked construction) and `to_dict`."""

    group: ClassVar[str] = ""  # where the config sits in the run config (`data`): `from_config`'s default key

    @classmethod
    def keys(cls) -> list[str]:
        """The keys this group takes, in field order (an inline sub-config's keys in its place)."""
        hints = _hints(cls)
        return [k for f in fields(cls) for k in (hints[f.name].keys() if f.metadata.get("inline") else [f.name])]

    @classmethod
    def from_config(cls, cfg: Any, key: str | None = None):
        """An instance from `cfg` (a mapping of this group's keys, an OmegaConf node, or an instance,
        returned as is); `key` is where it sits in the run config (`data.mono.es`; default: `group`)."""
        key = key or cls.group
        if isinstance(cfg, cls):
            return cfg
        if hasattr(cfg, "_get_node"):  # a composed (OmegaConf) node: plain containers, values resolved on access
            cfg = _container(cfg)
        if cfg is None:
            cfg = {}
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"{key}={cfg!r}: expected a mapping with keys {', '.join(cls.keys())}")
        known = cls.keys()
        unknown = [str(k) for k in cfg if k not in known]
        if unknown:
            close = difflib.get_close_matches(unknown[0], known, n=1)
            hint = f" (did you mean {key}.{close[0]}?)" if close else ""
            raise ConfigError(f"{', '.join(f'{key}.{k}' for k in unknown)}: unknown key{hint}; "
                              f"{key} takes: {', '.join(known)}")
        hints, kwargs = _hints(cls), {}
        for f in fields(cls):
            tp = hints[f.name]
            if f.metadata.get("inline"):
                kwargs[f.name] = tp.from_config({k: v for k, v in cfg.items() if k in tp.keys()}, key)
            elif f.name in cfg:
                kwargs[f.name] = _checked(cfg[f.name], tp, f"{key}.{f.name}")
            elif f.default is MISSING and f.default_factory is MISSING:
                raise ConfigError(f"{key}.{f.name}: required ({key} takes: {', '.join(known)})")
        try:
            return cls(**kwargs)
        except ConfigError:
            raise
        except ValueError as e:  # a check in __post_init__: its message gets the group's key unless it names one
            raise ConfigError(str(e) if str(e).startswith(f"{key}.") else f"{key}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        """The group as a mapping of its keys (inline sub-configs flattened): `from_config` inverts it."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("inline"):
                out.update(value.to_dict())
            else:
                out[f.name] = _plain(value)
        return out


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _container(node: Any) -> Any:
    """A config node as plain dicts and lists, read through the Mapping / Sequence protocols (which
    resolve interpolations), so this module needs no config framework of its own."""
    if isinstance(node, Mapping):
        return {k: _container(node[k]) for k in node}
    if isinstance(node, typing.Sequence) and not isinstance(node, (str, bytes)):
        return [_container(v) for v in node]
    return node


def _plain(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


_NAMES = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return "a list"
    if origin is dict or (isinstance(tp, type) and issubclass(tp, Config)):
        return "a mapping"
    return _NAMES.get(tp, str(tp))


def _checked(value: Any, tp: Any, key: str) -> Any:
    """`value` if it fits the annotation `tp` (sub-configs built), else a ConfigError naming `key`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _checked(value, option, key)
            except ConfigError as e:
                if not str(e).startswith(f"{key}="):  # the value has this shape, a key inside it is wrong
                    raise
        raise ConfigError(f"{key}={value!r}: expected {_describe(tp)}")
    if isinstance(tp, type) and issubclass(tp, Config):
        return tp.from_config(value, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r}: expected {_describe(tp)}")
        item = args[0] if args else Any
        return type(value)(_checked(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}={value!r}: expected {_describe(tp)}")
        item = args[1] if len(args) == 2 else Any
        return {k: _checked(v, item, f"{key}.{k}") for k, v in value.items()}
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str)}[tp](value)
    if not ok:
        raise ConfigError(f"{key}={value!r}: expected {_describe(tp)}")
    return value


# --------------------------------------------------------------------------------------------
# the `objective` group
# --------------------------------------------------------------------------------------------
def check_masking(mlm_probability: float, mask_ratio: float, random_ratio: float) -> None:
    """The masking probabilities make sense (used by MaskingConfig and `mask_tokens`)."""
    if not 0.0 < mlm_probability < 1.0:
        raise ValueError(f"mlm_probability must be in (0, 1); got {mlm_probability}")
    if not 0.0 <= mask_ratio <= 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1]; got {mask_ratio}")
    if not 0.0 <= random_ratio <= 1.0:
        raise ValueError(f"random_ratio must be in [0, 1]; got {random_ratio}")
    if mask_ratio + random_ratio > 1.0 + 1e-9:
        raise ValueError(
            f"mask_ratio + random_ratio must be <= 1; got {mask_ratio} + {random_ratio} = {mask_ratio + random_ratio}"
        )


@dataclass(frozen=True)
class MaskingConfig(Config):
    """BERT's masked-LM corruption (`lit_tf.objectives.masking.mask_tokens`, the MLM collators)."""

    group: ClassVar[str] = "objective"  # its keys are keys of `objective`

    mlm_probability: float = 0.15  # share of (non-special) tokens or words selected
    mask_ratio: float = 0.8  # of selected: replaced by [MASK]
    random_ratio: float = 0.1  # of selected: replaced by a random token (the rest kept)
    whole_word: bool = False  # select whole words (all their subword tokens) instead of tokens

    def __post_init__(self) -> None:
        check_masking(self.mlm_probability, self.mask_ratio, self.random_ratio)


@dataclass(frozen=True)
class ObjectiveConfig(Config):
    """The `objective` group (conf/objective/*.yaml). The data modules read the masking and example
    settings; `lit_tf.lit.build` builds the loss from the same group (weights, adversarial)."""

    group: ClassVar[str] = "objective"

    name: str  # a pretraining objective (lit_tf.lit.build.OBJECTIVES) or a fine-tuning task (lit_tf.lit.tasks.TASKS)
    # mlm_probability, mask_ratio, random_ratio, whole_word: keys of `objective` itself
    masking: MaskingConfig = field(default_factory=MaskingConfig, metadata=INLINE)
    nsp: bool = False  # BERT next-sentence prediction: examples are sentence pairs
    short_seq_prob: float = 0.1  # NSP: share of pairs built with a shorter target length (as BERT)
    mono_term: str = "mlm"  # cross-lingual: the monolingual streams' term, mlm | clm (clm makes the model causal)
    weights: dict[str, Any] = field(default_factory=dict)  # per term (or stream, mlm/es): a number or "step:value,..."
    adversarial: dict[str, Any] | None = None  # cross-lingual: language classifier through gradient reversal (lit.build)
    # ELECTRA (lit_tf.objectives.electra.ReplacedTokenDetectionObjective; null: its default)
    rtd_weight: float | None = None  # the replaced-token-detection loss's weight (lambda, 50 in the paper)
    gen_weight: float | None = None  # the generator's MLM loss's weight
    temperature: float | None = None  # sampling temperature of the generator's softmax
    label_smoothing: float | None = None  # translation: eps of the label-smoothed cross-entropy (null: 0.1)
    monitor: str | None = None  # metric for best-checkpoint selection (conf/callbacks: ${objective.monitor})
    monitor_mode: str | None = None  # min | max, for `monitor`
