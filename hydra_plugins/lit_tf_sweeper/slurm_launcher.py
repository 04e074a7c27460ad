"""Registration shim for `hydra/launcher=slurm` (Hydra instantiates launchers only from classes
defined under `hydra_plugins`); the launcher itself is lit_tf/sweeping/slurm_launcher.py."""

from lit_tf.sweeping.slurm_launcher import LitTfSlurmLauncher


class SlurmLauncher(LitTfSlurmLauncher):
    """lit_tf's SLURM launcher; see lit_tf/sweeping/slurm_launcher.py."""
