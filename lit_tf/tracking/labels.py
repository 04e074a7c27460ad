"""How a run reads in the MLflow UI: a name a person can scan, the overrides it was started with,
and tags that let debug runs and sweep trials be filtered out.

Default name: `<family>-<objective>-<id>`, e.g. `bert-mlm_nsp-3fa9c1` (`id`: six hex digits of
the run's output folder; a sweep trial's is `t<number>`). The start time is MLflow's own column,
not part of the name. `run_name=` sets a template: `{family}`, `{objective}`, `{experiment}`,
`{id}` and `{trial}` are filled in, `${...}` interpolates config values as anywhere in Hydra
(quote it on the command line: `'run_name="{family}-bs${data.batch_size}-{id}"'`).
"""

from __future__ import annotations

import hashlib
import shlex
import string
from dataclasses import dataclass
from pathlib import Path

from lit_tf.errors import LitTfError

FIELDS = ("family", "objective", "experiment", "id", "trial")
OVERRIDES_TAG = "lit_tf.overrides"
DEBUG_TAG = "lit_tf.debug"
TRIAL_TAG = "lit_tf.trial"
NOTE_TAG = "mlflow.note.content"  # MLflow's description of a run (or experiment)


@dataclass(frozen=True)
class RunLabels:
    name: str
    tags: dict[str, str]


def _command_line() -> tuple[list[str], dict[str, str]]:
    """(the overrides the run was started with, Hydra's config group choices); empty outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return [], {}
    hc = HydraConfig.get()
    choices = {k: str(v) for k, v in hc.runtime.choices.items() if v is not None}
    return [str(o) for o in hc.overrides.task], choices


def short_id(out_dir: str | Path) -> str:
    """Six hex digits naming a run's output folder (unique per run: folders are time-stamped)."""
    return hashlib.sha1(str(Path(out_dir).resolve()).encode()).hexdigest()[:6]


def run_labels(template: str | None, *, family: str, objective: str, experiment: str, out_dir: str | Path,
               trial_number: int | None = None, command: tuple[list[str], dict[str, str]] | None = None) -> RunLabels:
    """The run's name (from `template`, see the module doc, or the default) and its labelling tags:
    `lit_tf.overrides` (what the command line changed), `lit_tf.debug` and `lit_tf.trial` ("true" /
    "false", always set so `tags.lit_tf.debug != "true"` filters), and the run's description (the
    command that reproduces its config). `command`: (overrides, config group choices); default:
    this process's Hydra command line."""
    overrides, choices = command if command is not None else _command_line()
    fields = {"family": family, "objective": objective, "experiment": experiment,
              "id": f"t{trial_number}" if trial_number is not None else short_id(out_dir),
              "trial": "" if trial_number is None else str(trial_number)}
    if template:
        try:
            used = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
            unknown = sorted(used - set(FIELDS))
            if unknown:
                raise KeyError(unknown[0])
            name = template.format(**fields)
        except (KeyError, ValueError, IndexError) as e:
            raise LitTfError(f"run_name={template!r}: cannot fill it in ({e}); its fields are "
                             + ", ".join("{" + f + "}" for f in FIELDS),
                             hint="quote it on the command line: 'run_name=\"{family}-{objective}-{id}\"'") from e
    else:
        name = f"{family}-{objective}-{fields['id']}"
    debug = choices.get("debug", "") not in ("", "none", "null")
    command = "python train.py" + "".join(" " + shlex.quote(o) for o in overrides)
    tags = {
        OVERRIDES_TAG: " ".join(overrides)[:5000],
        DEBUG_TAG: "true" if debug else "false",
        TRIAL_TAG: "false" if trial_number is None else "true",
        NOTE_TAG: f"Started as: `{command}`",
    }
    return RunLabels(name=name, tags=tags)
