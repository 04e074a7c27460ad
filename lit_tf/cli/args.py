"""`key=value` command lines for the small CLIs (generate, predict, export)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def parse_kv(argv: Sequence[str], options: Mapping[str, type], defaults: Mapping, required: Sequence[str],
             usage: str) -> dict:
    args = dict(defaults)
    for a in argv:
        key, sep, value = a.partition("=")
        if not sep or key not in options:
            raise SystemExit(f"error: expected key=value with key in {sorted(options)}, got {a!r}\n{usage}")
        try:
            args[key] = options[key](value)
        except ValueError:
            raise SystemExit(f"error: {key}={value!r} is not a valid {options[key].__name__}") from None
    missing = [k for k in required if k not in args]
    if missing:
        raise SystemExit(f"error: {', '.join(f'{k}=...' for k in missing)} required\n{usage}")
    return args
