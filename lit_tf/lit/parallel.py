"""Parallelism, applied from outside the model code (models are written for one device).

- `build_strategy`: `trainer.strategy` as Lightning takes it; `fsdp` becomes an FSDPStrategy that
  wraps each transformer block of the family (the block class comes from the family table in
  `lit_tf.lit.build`, never from a list here).
- `apply_activation_checkpointing`: recompute each block's activations in the backward pass
  (`trainer.activation_checkpointing: true`), for any strategy.
- `ReplicaCheck`: at the end of a data-parallel run, every rank must hold bit-identical weights;
  a divergence (a nondeterministic op, a rank skipping a step) stops the run with an error.
- `process_rank` / `job_process_scope`: how a job finds its rank, and how one process runs several
  jobs (a multirun or a sweep) that each start their own DDP ranks.

Mixed precision is `trainer.precision` (`bf16-mixed` on GPU): Lightning's precision plugins apply it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from lit_tf.errors import LitTfError


def process_rank() -> int:
    """Global rank of this process as the launchers set it (0 outside distributed runs)."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def check_trainer(trainer: Mapping[str, Any]) -> None:
    """Strategy settings that cannot work, caught before any data or model work."""
    strategy, fsdp = str(trainer.get("strategy", "auto")).lower(), trainer.get("fsdp")
    if strategy != "fsdp":
        if fsdp:
            raise LitTfError(f"trainer.fsdp is set but trainer.strategy={strategy}: it applies to strategy=fsdp only")
        return
    accelerator = str(trainer.get("accelerator", "auto")).lower()
    if accelerator == "cpu" or (accelerator in ("gpu", "cuda", "auto") and not torch.cuda.is_available()):
        raise LitTfError(
            "trainer=fsdp needs CUDA GPUs: Lightning's FSDP strategy runs on CUDA devices only"
            + ("" if accelerator == "cpu" else " and this machine has none")
            + "; on CPU use trainer=ddp_cpu (data parallel over CPU processes)")


def holds_full_gradients(strategy: Any) -> bool:
    """True when every rank holds the whole gradient after backward (one device, DDP), False when
    each holds a shard (FSDP, DeepSpeed): exact types, since subclasses may shard."""
    from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

    return type(strategy) in (SingleDeviceStrategy, DDPStrategy)


def build_strategy(strategy: Any, fsdp: Mapping[str, Any] | None, block: type[nn.Module]) -> Any:
    """`trainer.strategy` -> what L.Trainer takes. `fsdp` shards parameters, gradients and optimizer
    state, one FSDP unit per `block`; `trainer.fsdp` holds FSDPStrategy options (sharding_strategy,
    state_dict_type, cpu_offload, ...)."""
    if str(strategy).lower() != "fsdp":
        return strategy
    from lightning.pytorch.strategies import FSDPStrategy

    try:
        return FSDPStrategy(auto_wrap_policy={block}, **dict(fsdp or {}))
    except (TypeError, ValueError) as e:
        raise LitTfError(f"trainer.fsdp: {e}") from None


def apply_activation_checkpointing(model: nn.Module, block: type[nn.Module]) -> int:
    """Make every `block` in `model` recompute its activations during backward (saves memory,
    costs one more forward per block). The module tree and state-dict keys are unchanged: only each
    block instance's `forward` is wrapped. Returns the number of blocks wrapped."""
    n = 0
    for m in model.modules():
        if isinstance(m, block) and not getattr(m, "_lit_tf_checkpointed", False):
            inner = m.forward

            @functools.wraps(inner)
            def forward(*args: Any, _inner=inner, **kwargs: Any) -> Any:
                if not torch.is_grad_enabled():  # eval / generation: nothing to save
                    return _inner(*args, **kwargs)
                return checkpoint(_inner, *args, use_reentrant=False, **kwargs)

            m.forward = forward
            m._lit_tf_checkpointed = True
            n += 1
    if n == 0:
        raise LitTfError(f"trainer.activation_checkpointing: the model has no {block.__name__} to checkpoint")
    return n


def weights_digest(module: nn.Module) -> str:
    """sha256 of every parameter, in registration order (bitwise: equal digests = equal weights).
    Buffers are left out: some are rank-local by design (e.g. the tokens this rank has seen)."""
    h = hashlib.sha256()
    for name, p in module.named_parameters():
        h.update(name.encode())
        h.update(p.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class ReplicaCheck(L.Callback):
    """After data-parallel training (DDP: every rank holds the whole model), compare the ranks'
    weights bit for bit. `result` = (world size, digest) on success; a mismatch raises."""

    def __init__(self) -> None:
        self.result: tuple[int, str] | None = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from lightning.pytorch.strategies import DDPStrategy

        if trainer.world_size < 2 or not isinstance(trainer.strategy, DDPStrategy):
            return  # one process, or a sharded strategy (no rank holds the whole model)
        digest = weights_digest(pl_module)
        digests = trainer.strategy.all_gather(torch.tensor(list(bytes.fromhex(digest)[:16]), dtype=torch.uint8,
                                                           device=pl_module.device))  # (world, 16)
        differ = [r for r in range(trainer.world_size) if not torch.equal(digests[r], digests[0])]
        if differ:
            raise RuntimeError(f"data-parallel replicas diverged: rank(s) {differ} hold weights different from "
                               f"rank 0 after step {trainer.global_step}")
        self.result = (trainer.world_size, digest)


@contextmanager
def job_process_scope(gpu: int | str | None = None) -> Iterator[None]:
    """Run one job in a process that may run more (a multirun or a sweep in one process), with DDP
    inside the job isolated, pinned to CUDA device `gpu` when given (before anything touches CUDA).

    Lightning starts DDP ranks > 0 as `python <script> <sys.argv[1:]> hydra.run.dir=<run.dir>`.
    In a multirun job sys.argv is the multirun's (`-m ...`), so each rank would start a multirun
    of its own: point argv at this job's overrides and run.dir at its output folder, so every rank
    composes exactly the job's config and shares its folder. Lightning also leaves its rendezvous
    variables (MASTER_PORT, WORLD_SIZE, LOCAL_RANK, ...) in os.environ and the process group open;
    both are undone on exit so the next job in this process starts clean.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import read_write

    env, argv = dict(os.environ), list(sys.argv)
    hc = HydraConfig.get() if HydraConfig.initialized() else None
    run_dir = hc.run.dir if hc is not None else None
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    if hc is not None and hc.mode == RunMode.MULTIRUN:
        sys.argv = [sys.argv[0], *hc.overrides.task]
        with read_write(hc):
            hc.run.dir = hc.runtime.output_dir
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for k in set(os.environ) - set(env):
            del os.environ[k]
        os.environ.update(env)
        sys.argv[:] = argv
        if hc is not None:
            with read_write(hc):
                hc.run.dir = run_dir
