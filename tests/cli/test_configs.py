"""Every config in conf/ composes; every experiment builds its model; bad overrides fail early and clearly."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import CONF
from omegaconf import OmegaConf

from lit_tf.cli.config_check import ConfigError, check_overrides
from lit_tf.lit.build import ObjectiveContext, build_model, build_objective
from lit_tf.lit.init_from import InitSource, build_classifier
from lit_tf.lit.tasks import TASKS

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("hydra", "paths"))
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes(compose, group, option):
    cfg = compose([f"{group}={option}"])
    # resolve everything a run would resolve (paths, interpolations), except Hydra's own node
    OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("debug", [None, "smoke"])
def test_every_experiment_instantiates(compose, experiment, debug):
    cfg = compose([f"experiment={experiment}"] + ([f"debug={debug}"] if debug else []))
    assert cfg.name == experiment
    obj = OmegaConf.to_container(cfg.objective, resolve=True)
    data = OmegaConf.to_container(cfg.data, resolve=True)
    langs = data.get("languages") or []
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    if obj["name"] in TASKS:  # fine-tuning from scratch (init_from=null)
        model, _ = build_classifier(InitSource("scratch"), obj["name"], 3, model_cfg, vocab_size=1000)
    else:
        model = build_model(model_cfg, obj, vocab_size=cfg.data.tokenizer.vocab_size, languages=langs)
    streams = {lang: "mlm" for lang in langs}
    objective = build_objective(obj, ObjectiveContext(model=model, streams=streams, n_langs=max(2, len(langs))))
    assert model.num_parameters() > 0 and objective.terms and objective.val_terms
    assert model.cfg.max_seq_len >= cfg.data.max_seq_len
    if debug == "smoke":
        assert cfg.trainer.max_steps <= 10 and cfg.model.d_model <= 64


def test_override_checks_accept_valid_overrides():
    check_overrides(
        ["experiment=bert_mlm_nsp_en", "data.batch_size=4", "optim.optimizer.lr=1e-4", "trainer.max_steps=10",
         "data.train_files=[a.txt,b.txt]", "+trainer.profiler=simple", "trainer.precision=bf16-mixed",
         "optim.optimizer.lr=3", "ckpt_path=last", "data.batch_size=2,4,8"],
        CONF,
    )


@pytest.mark.parametrize(
    "override, fragments",
    [
        ("data.bach_size=3", ["unknown config key 'data.bach_size'", "did you mean 'data.batch_size'",
                              "valid keys under 'data':", "+data.bach_size"]),
        ("modle.d_model=3", ["unknown config key 'modle.d_model'", "did you mean 'model'"]),
        ("data.tokenizer.kindd=bpe", ["did you mean 'data.tokenizer.kind'"]),
        ("trainer.max_steps=abc", ["'trainer.max_steps' expects an integer", "got 'abc'"]),
        ("trainer.max_steps=1.5", ["expects an integer"]),
        ("objective.whole_word=3", ["'objective.whole_word' expects a boolean"]),
        ("optim.optimizer.lr=fast", ["'optim.optimizer.lr' expects a number"]),
        ("data.batch_size=4,x", ["'data.batch_size' expects an integer", "got 'x'"]),
    ],
)
def test_override_checks_name_key_and_expectation(override, fragments):
    with pytest.raises(ConfigError) as e:
        check_overrides([override], CONF)
    for frag in fragments:
        assert frag in str(e.value)


def test_unknown_group_option_lists_choices(tmp_path):
    proc = subprocess.run([sys.executable, "-c", "from lit_tf.cli.train import main; main()", "model=bert_huge"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "bert_huge" in proc.stderr and "bert_tiny" in proc.stderr  # Hydra lists the available options


def test_models_and_objectives_import_no_frameworks():
    code = (
        "import sys, lit_tf.models, lit_tf.objectives, lit_tf.objectives.pretraining\n"
        "bad = sorted(m for m in ('lightning', 'pytorch_lightning', 'hydra', 'omegaconf', 'mlflow', 'optuna')"
        " if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


SWEEPS = sorted(p.stem for p in (CONF.parent / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("name", SWEEPS)
def test_every_sweep_composes_with_valid_search_keys(compose, name):
    from lit_tf.sweeping.space import parse_search_space
    from lit_tf.sweeping.study import build_pruner, build_sampler, objectives

    cfg = compose([f"sweep={name}"])
    sw = cfg.hydra.sweeper
    assert sw._target_.startswith("hydra_plugins.lit_tf_sweeper")
    metrics, _ = objectives(sw.metric, sw.direction)
    space = parse_search_space(OmegaConf.to_container(sw.params))
    assert space.distributions, f"sweeps/{name}.yaml searches nothing"
    missing = [k for k in space.distributions if OmegaConf.select(cfg, k, default="<missing>") == "<missing>"]
    assert not missing, f"sweeps/{name}.yaml searches keys the config lacks: {missing}"
    build_sampler(OmegaConf.to_container(sw.sampler))
    build_pruner(OmegaConf.to_container(sw.pruner))
    assert all(m.startswith("val/") for m in metrics)
