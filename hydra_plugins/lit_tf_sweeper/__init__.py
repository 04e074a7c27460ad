"""Hydra plugins shipped with lit_tf (Hydra discovers plugins only under `hydra_plugins`):

- `optuna_sweeper.OptunaSweeper`: the Optuna sweeper (`hydra/sweeper=optuna`), implemented in
  `lit_tf.sweeping.sweeper`;
- `sweeps_source.SweepsConfigSource` + `LitTfSweepsSearchPath`: serve the top-level `sweeps/`
  folder as the `sweep` config group, so `python train.py -m sweep=<name>` picks `sweeps/<name>.yaml`;
- `slurm_launcher.SlurmLauncher`: `hydra/launcher=slurm` (conf/hydra/launcher/slurm.yaml), implemented
  in `lit_tf.sweeping.slurm_launcher` on hydra-submitit-launcher;
- `local_gpus_launcher.LocalGpusLauncher`: `hydra/launcher=local_gpus`, implemented in
  `lit_tf.sweeping.local_gpus` on hydra-joblib-launcher.
"""
