"""Experiments lit_tf creates or reuses are marked as model training (MLflow 3's UI then opens them
on their runs, not on the GenAI traces page) and described by their experiment YAML's header."""

from __future__ import annotations

from conftest import ROOT

from lit_tf.tracking.mlflow import (
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    NOTE_TAG,
    experiment_description,
    mark_experiment,
    open_store,
)


def test_description_is_the_experiment_yaml_header(tmp_path):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "demo.yaml").write_text(
        "# @package _global_\n# First line of the header,\n#   and its second line.\n#\ndefaults: []\n# not this\n")
    assert experiment_description(tmp_path, "demo") == "First line of the header, and its second line."
    (tmp_path / "experiment" / "bare.yaml").write_text("name: bare\n")
    assert experiment_description(tmp_path, "bare") is None
    assert experiment_description(tmp_path, "missing") is None
    # every shipped experiment has one
    for path in (ROOT / "conf" / "experiment").glob("*.yaml"):
        assert experiment_description(ROOT / "conf", path.stem), path


def test_marks_a_new_experiment_and_keeps_what_a_user_set(tmp_path):
    from mlflow.tracking import MlflowClient

    store = open_store({"dir": str(tmp_path / "mlruns")})
    client = MlflowClient(store.tracking_uri)
    fresh = client.create_experiment("fresh")
    mark_experiment(store, client, fresh, "What it trains.")
    tags = client.get_experiment(fresh).tags
    assert tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND and tags[NOTE_TAG] == "What it trains."

    mine = client.create_experiment("mine", tags={EXPERIMENT_KIND_TAG: "genai_development", NOTE_TAG: "My notes."})
    mark_experiment(store, client, mine, "What it trains.")
    tags = client.get_experiment(mine).tags
    assert tags[EXPERIMENT_KIND_TAG] == "genai_development" and tags[NOTE_TAG] == "My notes."
