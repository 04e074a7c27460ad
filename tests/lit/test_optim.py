"""Optimizer groups and LR schedules."""

from __future__ import annotations

import math

import pytest
import torch

from lit_tf.lit.optim import OptimConfig, lr_lambda, param_groups, warmup_steps_for
from lit_tf.models import BertConfig, BertForPreTraining


def test_no_decay_on_biases_and_norms_and_tied_weights_once():
    model = BertForPreTraining(BertConfig(vocab_size=50, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_seq_len=16))
    decay, no_decay = param_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim < 2 for p in no_decay["params"])
    norm_weights = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.LayerNorm)}
    assert norm_weights <= {id(p) for p in no_decay["params"]}
    ids = [id(p) for g in (decay, no_decay) for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))  # tied embedding appears once


def test_schedules():
    f = lr_lambda(100, 10, "linear", 0.0)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5) and f(100) == pytest.approx(0.0)
    c = lr_lambda(100, 0, "cosine", 0.1)
    assert c(0) == pytest.approx(1.0) and c(50) == pytest.approx(0.55) and c(100) == pytest.approx(0.1)
    k = lr_lambda(100, 5, "constant", 0.0)
    assert k(2) == pytest.approx(0.6) and k(80) == 1.0
    vals = [lr_lambda(1000, 100, "cosine", 0.0)(s) for s in range(100, 1000)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))  # monotone after warmup
    assert not any(math.isnan(v) for v in vals)
    with pytest.raises(ValueError, match="optim.schedule='step' is not one of"):
        lr_lambda(10, 1, "step", 0.0)
    assert warmup_steps_for(1000, None, 0.06) == 60 and warmup_steps_for(1000, 5, 0.5) == 5


def test_optim_config_schedule():
    """OptimConfig: warmup_steps wins over warmup_ratio; its lr_lambda is the schedule's; a bad
    schedule or a string where a number goes fails naming the key."""
    from lit_tf.objectives.config import ConfigError

    cfg = OptimConfig.from_config({"schedule": "cosine", "warmup_ratio": 0.1, "min_lr_ratio": 0.1})
    f = cfg.lr_lambda(100)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0) and f(100) == pytest.approx(0.1)
    assert OptimConfig(warmup_steps=3, warmup_ratio=0.5).lr_lambda(100)(2) == pytest.approx(1.0)
    assert OptimConfig().lr_lambda(10)(0) == pytest.approx(1.0)  # defaults: no warmup, linear decay
    with pytest.raises(ConfigError, match=r"^optim.schedule='step' is not one of"):
        OptimConfig.from_config({"schedule": "step"})
    with pytest.raises(ConfigError, match=r"optim.weight_decay='high': expected a number"):
        OptimConfig.from_config({"weight_decay": "high"})
