"""OmegaConf resolvers that lit_tf's configs use; registered by every entry point that composes them.

`${lit_tf.cwd:}` is the directory `python train.py` was started from. Hydra's own
`${hydra:runtime.cwd}` only resolves once a job is running, but some paths are needed before
that: a sweep's folder (`hydra.sweeper.dir`) is resolved when Hydra builds the sweeper, and
`compose_config` users have no Hydra runtime at all.
"""

from __future__ import annotations

import os

from omegaconf import OmegaConf


def launch_cwd() -> str:
    """Hydra's recorded launch directory inside a job (correct even with `hydra.job.chdir=true`),
    else the current directory."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        cwd = HydraConfig.get().runtime.get("cwd")
        if cwd:
            return str(cwd)
    return os.getcwd()


def register() -> None:
    if not OmegaConf.has_resolver("lit_tf.cwd"):
        OmegaConf.register_new_resolver("lit_tf.cwd", launch_cwd)


register()
