"""The `data`, `objective` and `optim` groups reach the code as dataclasses built once from the
composed config (lit_tf.lit.recipes.run_configs): every YAML composes into its dataclass, an
unknown key or a wrongly typed value fails naming its key before any data is read, and a key left
out of the YAML takes its field's default."""

from __future__ import annotations

from pathlib import Path

import pytest

from lit_tf.data.config import (
    CrossLingualDataConfig,
    FineTuneDataConfig,
    MonoText,
    PretrainDataConfig,
    TranslationDataConfig,
)
from lit_tf.lit.optim import OptimConfig
from lit_tf.lit.recipes import run_configs
from lit_tf.objectives.config import ConfigError, MaskingConfig, ObjectiveConfig

CONF = Path(__file__).resolve().parents[1] / "conf"


def _names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("name", _names("data"))
def test_every_data_config_is_typed(compose, name):
    keys = compose([f"data={name}"]).data  # an objective that reads it: a task, or its pretraining kind
    objective = ("seq_cls" if "train" in keys else "translation" if "src_lang" in keys
                 else "mlm_tlm" if "languages" in keys else "mlm_nsp")
    expected = {"seq_cls": FineTuneDataConfig, "mlm_tlm": CrossLingualDataConfig, "mlm_nsp": PretrainDataConfig,
                "translation": TranslationDataConfig}
    for extra in ([], ["debug=smoke"]):
        _, data, _ = run_configs(compose([f"data={name}", f"objective={objective}", *extra]))
        assert type(data) is expected[objective]
        assert type(data).from_config(data.to_dict(), "data") == data  # to_dict is what from_config reads


@pytest.mark.parametrize("name", _names("objective"))
def test_every_objective_config_is_typed(compose, name):
    cfg = compose([f"objective={name}"])
    objective = ObjectiveConfig.from_config(cfg.objective)
    assert objective.name == cfg.objective.name
    assert objective.monitor == cfg.objective.monitor and objective.monitor_mode == cfg.objective.monitor_mode
    assert objective.masking.mlm_probability == cfg.objective.get("mlm_probability", MaskingConfig.mlm_probability)


@pytest.mark.parametrize("name", _names("optim"))
def test_every_optim_config_is_typed(compose, name):
    cfg = compose([f"optim={name}"])
    optim = OptimConfig.from_config(cfg.optim)
    assert optim.weight_decay == cfg.optim.weight_decay and optim.optimizer["_target_"]


@pytest.mark.parametrize("name", _names("experiment"))
def test_every_experiment_has_typed_groups(compose, name):
    for extra in ([], ["debug=smoke"]):
        objective, data, optim = run_configs(compose([f"experiment={name}", *extra]))
        assert isinstance(objective, ObjectiveConfig) and isinstance(optim, OptimConfig)
        assert data.max_seq_len > 0 and data.batch_size > 0


def _no_data_read(monkeypatch):
    """Make reading any text (corpus, fine-tuning table) an error."""
    from lit_tf.data import finetune, text

    def fail(*args, **kwargs):
        raise AssertionError("data was read before the config was checked")

    for mod, name in ((text, "iter_documents"), (finetune, "read_labeled_table"), (finetune, "read_conll")):
        monkeypatch.setattr(mod, name, fail)


@pytest.mark.parametrize("overrides, message", [
    (["+data.bogus=1"], r"^data\.bogus: unknown key; data takes: name, tokenizer, max_seq_len, .*builtin"),
    (["+data.max_doc=5"], r"^data\.max_doc: unknown key \(did you mean data\.max_docs\?\)"),
    (["experiment=finetune_sst2", "+data.bogus=1"], r"^data\.bogus: unknown key; data takes: .*label_field"),
    (["experiment=xlm_mlm_tlm_en_es", "+data.bogus=1"], r"^data\.bogus: unknown key; data takes: .*alpha"),
    (["experiment=xlm_mlm_tlm_en_es", "+data.mono.es.doc_per_lines=true"],
     r"^data\.mono\.es\.doc_per_lines: unknown key \(did you mean data\.mono\.es\.doc_per_line\?\)"),
    (["+objective.bogus=1"], r"^objective\.bogus: unknown key; objective takes: name, mlm_probability"),
    (["+optim.bogus=1"], r"^optim\.bogus: unknown key; optim takes: optimizer, weight_decay"),
    (["data.alpha=abc", "experiment=xlm_mlm_tlm_en_es"], r"^data\.alpha='abc': expected a number"),
    (["data.max_docs=many"], r"^data\.max_docs='many': expected an integer or null"),
    (["objective.mlm_probability=1.5"], r"^objective: mlm_probability must be in \(0, 1\); got 1\.5"),
    (["optim.schedule=step"], r"^optim\.schedule='step' is not one of"),
    (["+data.tokenizer.vocab=10"], r"data\.tokenizer: unknown keys \['vocab'\]"),
    (["objective=mlm_tlm"], r"^data='pydoc' is a single corpus: a cross-lingual objective needs"),
    (["data=xlm_en_es"], r"^data='xlm_en_es' is a multilingual corpus: it needs objective=mlm_tlm"),
])
def test_bad_keys_fail_before_any_data_is_read(compose, monkeypatch, tmp_path, overrides, message):
    from lit_tf.lit.recipes import build_run

    cfg = compose([f"paths.cache_dir={tmp_path / 'cache'}", *overrides])
    _no_data_read(monkeypatch)
    with pytest.raises(ConfigError, match=message):
        build_run(cfg)
    assert not (tmp_path / "cache").exists()  # no tokenizer, no shard


def test_train_reports_an_unknown_key(compose, monkeypatch, tmp_path):
    """`train(cfg)`, as `python train.py +data.bogus=1` runs it, fails on the key and touches no data."""
    from lit_tf.cli.train import train

    cfg = compose([f"paths.cache_dir={tmp_path / 'cache'}", "+data.bogus=1"])
    _no_data_read(monkeypatch)
    with pytest.raises(ConfigError, match=r"^data\.bogus: unknown key"):
        train(cfg)
    assert not (tmp_path / "cache").exists()


def test_keys_left_out_take_the_dataclass_defaults(compose):
    objective, data, optim = run_configs(compose([
        "experiment=xlm_mlm_tlm_en_es", "~data.alpha", "~data.tokenizer_chars", "~data.val_fraction",
        "~objective.mlm_probability", "~objective.whole_word", "~optim.warmup_ratio", "~optim.schedule"]))
    assert data.alpha == 0.7 == CrossLingualDataConfig.alpha
    assert data.tokenizer_chars == CrossLingualDataConfig.tokenizer_chars and data.val_fraction == 0.02
    assert objective.masking.mlm_probability == 0.15 and objective.masking.whole_word is False
    assert optim.warmup_ratio == 0.0 and optim.schedule == "linear"  # adamw.yaml says 0.06: the field says 0.0
    _, data, _ = run_configs(compose(["experiment=finetune_sst2", "~data.scheme", "~data.conll", "~data.train_lang"]))
    assert (data.scheme, data.conll.token_col, data.conll.tag_col, data.train_lang) == ("IOB2", 0, -1, "en")


def test_datamodules_type_plain_mappings(tmp_path):
    """Tests and benchmarks may still hand DataModules plain dicts: typed at the constructor, so the
    defaults are the dataclasses' too."""
    from lit_tf.data.crosslingual import CrossLingualDataModule
    from lit_tf.data.datamodule import PretrainDataModule

    dm = PretrainDataModule({"builtin": "pydoc"}, {"name": "mlm"}, cache_dir=str(tmp_path))
    assert dm.cfg == PretrainDataConfig(builtin="pydoc") and dm.cfg.val_fraction == 0.05
    assert dm.obj.masking == MaskingConfig() and dm.sources.train == {"builtin": "pydoc", "max_files": None}
    xl = CrossLingualDataModule({"languages": ["en", "es"], "mono": {"en": ["a.txt"], "es": {"files": ["b.txt"]}}},
                                {"name": "xlm", "whole_word": True}, cache_dir=str(tmp_path))
    assert xl.cfg.mono == {"en": MonoText(["a.txt"]), "es": MonoText(["b.txt"])} and xl.cfg.alpha == 0.7
    assert xl.obj.masking == MaskingConfig(whole_word=True)
    with pytest.raises(ConfigError, match=r"^data\.languages='en': expected a list"):
        CrossLingualDataModule({"languages": "en"}, {"name": "xlm"}, cache_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=r"^objective\.name: required"):
        PretrainDataModule({"builtin": "pydoc"}, {}, cache_dir=str(tmp_path))
