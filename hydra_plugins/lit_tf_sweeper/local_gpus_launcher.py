"""Registration shim: Hydra instantiates launchers only from classes defined under `hydra_plugins`."""

from lit_tf.sweeping.local_gpus import LocalGpusLauncher as _LocalGpusLauncher


class LocalGpusLauncher(_LocalGpusLauncher):
    """`hydra/launcher=local_gpus`; see lit_tf/sweeping/local_gpus.py."""
