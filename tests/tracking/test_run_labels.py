"""Run names and labelling tags (`lit_tf.tracking.labels`): scannable defaults, user templates,
clear errors for a template that cannot be filled in."""

from __future__ import annotations

import re

import pytest

from lit_tf.errors import LitTfError
from lit_tf.tracking.labels import run_labels, short_id

KW = dict(family="gpt", objective="clm", experiment="gpt_clm_en", command=([], {}))


def test_default_name_is_family_objective_and_a_short_id(tmp_path):
    a = run_labels(None, out_dir=tmp_path / "runs" / "2026-12-02_10-00-00_000001", **KW)
    b = run_labels(None, out_dir=tmp_path / "runs" / "2026-12-02_10-00-00_000002", **KW)
    assert re.fullmatch(r"gpt-clm-[0-9a-f]{6}", a.name) and a.name != b.name
    assert a.name == run_labels(None, out_dir=tmp_path / "runs" / "2026-12-02_10-00-00_000001", **KW).name
    assert a.tags["lit_tf.debug"] == "false" and a.tags["lit_tf.trial"] == "false"
    trial = run_labels(None, out_dir=tmp_path / "trial_3", trial_number=3, **KW)
    assert trial.name == "gpt-clm-t3" and trial.tags["lit_tf.trial"] == "true"


def test_command_line_goes_to_tags_and_description(tmp_path):
    kw = dict(KW, command=(["experiment=gpt_clm_en", "debug=smoke", "optim.optimizer.lr=3e-4"],
                           {"experiment": "gpt_clm_en", "debug": "smoke"}))
    tags = run_labels(None, out_dir=tmp_path, **kw).tags
    assert tags["lit_tf.overrides"] == "experiment=gpt_clm_en debug=smoke optim.optimizer.lr=3e-4"
    assert tags["lit_tf.debug"] == "true"
    assert tags["mlflow.note.content"] == "Started as: `python train.py experiment=gpt_clm_en debug=smoke optim.optimizer.lr=3e-4`"


def test_template_fields(tmp_path):
    out = tmp_path / "run"
    name = run_labels("{experiment}/{family}-{objective}-{id}", out_dir=out, **KW).name
    assert name == f"gpt_clm_en/gpt-clm-{short_id(out)}"
    assert run_labels("lr-sweep-{trial}", out_dir=out, trial_number=7, **KW).name == "lr-sweep-7"
    assert run_labels("plain", out_dir=out, **KW).name == "plain"


@pytest.mark.parametrize("template", ["{famly}-{id}", "{family", "{0}"])
def test_a_template_that_cannot_be_filled_names_the_key_and_the_fields(tmp_path, template):
    with pytest.raises(LitTfError, match=r"run_name=.*\{family\}, \{objective\}, \{experiment\}, \{id\}, \{trial\}"):
        run_labels(template, out_dir=tmp_path, **KW)
