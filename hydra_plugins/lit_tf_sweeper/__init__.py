"""Hydra plugins shipped with lit_tf (Hydra discovers plugins only under `hydra_plugins`):

- `optuna_sweeper.OptunaSweeper`: the Optuna sweeper (`hydra/sweeper=optuna`), implemented in
  `lit_tf.sweeping.sweeper`;
- `sweeps_source.SweepsConfigSource` + `LitTfSweepsSearchPath`: serve the top-level `sweeps/`
  folder as the `sweep` config group, so `python train.py -m sweep=<name>` picks `sweeps/<name>.yaml`.
"""
