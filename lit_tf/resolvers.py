"""OmegaConf resolvers that lit_tf's configs use; registered by every entry point that composes them.

`${lit_tf.cwd:}` is the directory `python train.py` was started from. Hydra's own
`${hydra:runtime.cwd}` only resolves once a job is running, but some paths are needed before
that: a sweep's folder (`hydra.sweeper.dir`) is resolved when Hydra builds the sweeper, and
`compose_config` users have no Hydra runtime at all.

`${lit_tf.slurm_tasks:${trainer.devices},${trainer.accelerator}}` and `${lit_tf.slurm_gpus:...}`
turn the Lightning trainer's devices into what SLURM allocates per node (conf/hydra/launcher/slurm.yaml):
one task per device, as Lightning's SLURM environment expects, and as many GPUs on GPU trainers.
`devices: auto` on CPU is one process, as Lightning makes it; on GPUs the count is not known on the
machine that submits, so `-1`/`auto` is an error that names the key to set.
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


GPU_ACCELERATORS = ("gpu", "cuda")


def _gpu_trainer(accelerator) -> bool:
    return str(accelerator).lower() in GPU_ACCELERATORS


def slurm_tasks(devices, accelerator="cpu") -> int:
    """Processes (SLURM tasks) per node for `trainer.devices` on `trainer.accelerator`."""
    from omegaconf import ListConfig

    if isinstance(devices, (list, tuple, ListConfig)):  # explicit device ids
        n = len(devices)
    elif str(devices).strip() in ("-1", "auto"):
        if _gpu_trainer(accelerator):
            raise ValueError(
                f"trainer.devices={devices} with hydra/launcher=slurm: SLURM needs the number of GPUs per node "
                "before the job starts; set trainer.devices=<GPUs per node> (e.g. trainer.devices=4)")
        n = 1  # Lightning's CPU `auto`: one process
    elif "," in str(devices):  # "0,1": device ids
        n = len([d for d in str(devices).split(",") if d.strip()])
    else:
        try:
            n = int(devices)
        except (TypeError, ValueError):
            raise ValueError(f"trainer.devices={devices!r}: expected a number, a list of device ids, -1 or auto") from None
    if n < 1:
        raise ValueError(f"trainer.devices={devices!r}: expected at least one device")
    return n


def slurm_gpus(devices, accelerator="cpu") -> int | None:
    """GPUs per node to ask SLURM for: one per task on GPU trainers, none (null) otherwise."""
    return slurm_tasks(devices, accelerator) if _gpu_trainer(accelerator) else None


def register() -> None:
    if not OmegaConf.has_resolver("lit_tf.cwd"):
        OmegaConf.register_new_resolver("lit_tf.cwd", launch_cwd)
    if not OmegaConf.has_resolver("lit_tf.slurm_tasks"):
        OmegaConf.register_new_resolver("lit_tf.slurm_tasks", slurm_tasks)
    if not OmegaConf.has_resolver("lit_tf.slurm_gpus"):
        OmegaConf.register_new_resolver("lit_tf.slurm_gpus", slurm_gpus)


register()
