"""Check command-line overrides against the composed config before any work starts.

Hydra already rejects unknown config *groups* with the list of options; this adds the same
courtesy for *keys* (typos get "did you mean" and the valid keys) and for *types* (a value whose
type does not fit the default, e.g. `trainer.max_steps=abc`).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

import lit_tf.resolvers  # noqa: F401  (${lit_tf.cwd:} in conf/paths)
from lit_tf.errors import LitTfError

_MISSING = object()


class ConfigError(LitTfError):
    """A bad config key or value; the message names the key and what was expected."""


def _groups(config_dir: Path) -> set[str]:
    """Config groups: conf/ subfolders, plus `sweep` (the top-level sweeps/ folder on the search path)."""
    return {p.relative_to(config_dir).as_posix() for p in config_dir.rglob("*") if p.is_dir()} | {"sweep"}


def _raw_child(node: Any, key: str) -> Any:
    if isinstance(node, DictConfig):
        if key not in node:
            return _MISSING
        return OmegaConf.to_container(node, resolve=False)[key]
    if isinstance(node, ListConfig) and key.isdigit() and int(key) < len(node):
        return OmegaConf.to_container(node, resolve=False)[int(key)]
    return _MISSING


def _lookup(cfg: DictConfig, dotted: str) -> tuple[Any, str, Any]:
    """(raw value or _MISSING, deepest existing parent path, that parent node)."""
    node: Any = cfg
    parent_path = ""
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        raw = _raw_child(node, part)
        if raw is _MISSING:
            return _MISSING, parent_path, node
        if i == len(parts) - 1:
            return raw, parent_path, node
        child = node[part] if isinstance(node, DictConfig) else node[int(part)]
        if not isinstance(child, (DictConfig, ListConfig)):
            return _MISSING, ".".join(parts[: i + 1]), child
        node = child
        parent_path = ".".join(parts[: i + 1])
    return _MISSING, parent_path, node


def _type_name(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a mapping"}.get(type(v), type(v).__name__)


def _fits(default: Any, value: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, str) and "${" in default:
        return True  # an interpolation: its type is decided elsewhere
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, (str, int, float, bool))
    if isinstance(default, (list, ListConfig)):
        return isinstance(value, (list, ListConfig))
    if isinstance(default, (dict, DictConfig)):
        return isinstance(value, (dict, DictConfig))
    return True


def check_overrides(overrides: Sequence[str], config_dir: str | Path, config_name: str = "train") -> None:
    """Raise ConfigError listing every unknown key or ill-typed value among `overrides`."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep

    config_dir = Path(config_dir).resolve()
    groups = _groups(config_dir)
    parsed = OverridesParser.create().parse_overrides([o for o in overrides if "=" in o])
    group_ovs = [o.input_line for o in parsed if o.key_or_group in groups or o.key_or_group.split("@")[0] in groups]
    value_ovs = [
        o for o in parsed
        if o.input_line not in group_ovs and not o.is_add() and not o.is_delete() and not o.is_force_add()
        and not o.key_or_group.startswith("hydra.") and not o.is_hydra_override()
    ]
    if not value_ovs:
        return
    # Compose only with the group choices: that is the config the values must fit.
    if any(o.is_sweep_override() for o in parsed if o.input_line in group_ovs):
        return  # a sweep over groups: each job is checked by Hydra itself
    was_init = GlobalHydra.instance().is_initialized()
    if was_init:
        base = compose(config_name=config_name, overrides=group_ovs)
    else:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            base = compose(config_name=config_name, overrides=group_ovs)

    problems: list[str] = []
    for o in value_ovs:
        key = o.key_or_group
        raw, parent_path, parent = _lookup(base, key)
        if raw is _MISSING:
            leaf = key.split(".")[-1] if not parent_path else key[len(parent_path) + 1 :].split(".")[0]
            valid = sorted(str(k) for k in parent.keys()) if isinstance(parent, DictConfig) else []
            close = difflib.get_close_matches(leaf, valid, n=3)
            where = f"under '{parent_path}'" if parent_path else "at the top level"
            msg = f"unknown config key '{key}'"
            if close:
                msg += f" (did you mean {' or '.join(repr((parent_path + '.' if parent_path else '') + c) for c in close)}?)"
            if valid:
                msg += f"; valid keys {where}: {', '.join(valid)}"
            msg += f". To add a new key on purpose use '+{key}=...'"
            problems.append(msg)
            continue
        value = o.value()
        values = list(value.list) if isinstance(value, ChoiceSweep) else ([] if o.is_sweep_override() else [value])
        for v in values:
            if not _fits(raw, v):
                problems.append(
                    f"config key '{key}' expects {_type_name(raw)} (default: {raw!r}) but got {v!r} ({_type_name(v)})"
                )
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError("invalid overrides:\n  - " + "\n  - ".join(problems))
