"""How fast a run trains: tokens/s, step time, model FLOPs utilisation (MFU) and peak memory.

MFU = (real tokens per second x model FLOPs per token) / the device's peak FLOP/s (PaLM,
Chowdhery et al., 2022, appendix B). FLOPs per token are counted from the model config, not
measured: forward matmul FLOPs x 3 (the backward pass costs twice the forward). Attention scores
and their weighted sum count 2 x 2 x T x d_model per token and layer over the full sequence T,
causal or not (PaLM's convention). Heads count what they really compute: BERT/XLM's sparse MLM
head only on the masked share of tokens, a GPT head on every token. Embedding look-ups,
LayerNorms, activations and the optimizer are not model FLOPs.

The peak comes from a table for data-centre GPUs (dense, no sparsity, NVIDIA's data sheets) and,
on CPU, from a matmul probe run once per machine and cached.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch

log = logging.getLogger(__name__)

# Dense peak TFLOP/s by device-name pattern and math mode (NVIDIA data sheets; SXM parts unless the
# name says PCIe/NVL). "tf32": fp32 tensors with tensor-core matmuls (torch matmul precision "high"
# or "medium"); "fp32": matmul precision "highest"; "bf16" also stands for fp16.
GPU_PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "H100 NVL": {"bf16": 835.0, "tf32": 417.5, "fp32": 60.0},
    "H100 PCIe": {"bf16": 756.5, "tf32": 378.0, "fp32": 51.2},
    "H100": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "A100": {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5},
}
CPU_PROBE_SIZE = 2048  # the probe multiplies two fp32 matrices of this size


# ----------------------------------------------------------------------------- FLOPs per token
def transformer_flops_per_token(d_model: int, n_layers: int, d_ff: int, seq_len: int, head_weights: float) -> float:
    """Training (forward + backward) FLOPs per token of a Transformer stack plus its heads.

    head_weights: matmul weights the heads apply per token on average (e.g. d * V for a GPT head,
    mlm_probability * (d^2 + d * V) for BERT's sparse MLM head)."""
    blocks = n_layers * (4 * d_model * d_model + 2 * d_model * d_ff)  # q, k, v, out + the MLP
    attention = n_layers * 2 * seq_len * d_model  # multiply-adds of q k^T and of probs @ v, per token
    return 3 * 2 * (blocks + attention + head_weights)


def head_weights_per_token(family: str, cfg: Any, objective: Mapping[str, Any], seq_len: int,
                           num_labels: int | None = None) -> float:
    """Average matmul weights the heads of a `family` model apply per token under `objective`: a
    fine-tuning task's head (its task spec) or the family's pretraining heads (its family spec)."""
    from lit_tf.lit.tasks import TASKS
    from lit_tf.models.families import FAMILIES

    task = TASKS.get(str(objective.get("name")))
    if task is not None:
        return task.head_weights(cfg.d_model, num_labels or 2, seq_len)
    return FAMILIES[family].head_weights(cfg, objective, seq_len)


def flops_per_token(family: str, cfg: Any, objective: Mapping[str, Any], seq_len: int,
                    num_labels: int | None = None) -> float:
    """Training FLOPs per real token of a lit_tf model (`cfg`: its config dataclass)."""
    head = head_weights_per_token(family, cfg, objective, seq_len, num_labels)
    return transformer_flops_per_token(cfg.d_model, cfg.n_layers, cfg.d_ff, seq_len, head)


# ----------------------------------------------------------------------------- device peak
def math_mode(precision: str) -> str:
    """The matmul math of a Lightning `precision` setting on GPU: bf16, tf32 or fp32."""
    if "16" in str(precision):
        return "bf16"
    return "fp32" if torch.get_float32_matmul_precision() == "highest" else "tf32"


def gpu_peak_flops(device_name: str, precision: str) -> float | None:
    """Peak FLOP/s of a known GPU in the math mode `precision` uses, else None."""
    for pattern, peaks in GPU_PEAK_TFLOPS.items():  # more specific names first
        if pattern in device_name:
            return peaks[math_mode(precision)] * 1e12
    return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def probe_cpu_peak_flops(size: int = CPU_PROBE_SIZE, repeats: int = 5) -> float:
    """FLOP/s of the best of `repeats` fp32 (size x size) matmuls on this process's CPU threads."""
    # a private generator: the probe must not move the global one (dropout draws from it, and a
    # resumed run, whose probe is cached, must see the same random stream as an uninterrupted one)
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(size, size, generator=gen), torch.randn(size, size, generator=gen)
    a @ b  # warm-up: thread pool, caches
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best


def cpu_peak_flops(cache_dir: str | os.PathLike | None) -> tuple[float, str]:
    """(peak FLOP/s, where it came from): the matmul probe, cached per CPU model, thread count and
    torch version in `<cache_dir>/perf/cpu_peak.json` (measured again when any of them changes)."""
    key = f"{_cpu_name()} | {torch.get_num_threads()} threads | torch {torch.__version__}"
    path = Path(cache_dir) / "perf" / "cpu_peak.json" if cache_dir else None
    cached: dict[str, float] = {}
    if path is not None and path.is_file():
        try:
            cached = json.loads(path.read_text())
        except (OSError, ValueError):
            cached = {}
    if key in cached:
        return float(cached[key]), "cpu matmul probe (cached)"
    peak = probe_cpu_peak_flops()
    if path is not None:
        from lit_tf.data.atomic import atomic_file

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps({**cached, key: peak}, indent=2))
    return peak, "cpu matmul probe"


def device_peak_flops(device: torch.device, precision: str, cache_dir: str | os.PathLike | None) -> tuple[float | None, str]:
    """(peak FLOP/s of one device, its source); (None, reason) for an unknown GPU."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = gpu_peak_flops(name, precision)
        return peak, f"{name} {math_mode(precision)} data sheet" if peak else f"{name}: not in the peak table"
    return cpu_peak_flops(cache_dir)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: allocated GPU memory on CUDA, else the resident set (RSS)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def process_age_s() -> float | None:
    """Seconds since this process started (for time-to-first-step), None where unknown."""
    try:
        import psutil

        return time.time() - psutil.Process().create_time()
    except Exception:
        return None


# ----------------------------------------------------------------------------- the callback
class Throughput(L.Callback):
    """Logs `perf/tokens_per_s` (real, non-padding tokens, all ranks), `perf/step_ms`, `perf/mfu`
    and `perf/peak_mem_mb` every `log_every_n_steps` optimizer steps, and `perf/first_step_s`
    (process start to the end of the first step: imports, data, model, compilation) once.

    Time spent in validation is not training time: the clock stops for it. The window is read
    at logging steps only, so the step itself never waits on the device. `summary()` gives the
    whole run's figures after fit (the first logging window, with start-up effects, left out when
    there are later ones).
    """

    def __init__(self, cache_dir: str | None = None) -> None:
        self.cache_dir = cache_dir
        self.flops_per_token: float | None = None
        self.peak: float | None = None
        self.peak_source = ""
        self.first_step_s: float | None = None
        self.world_size = 1
        self.windows: list[tuple[float, float, int]] = []  # (seconds, tokens, steps) per logging window
        self._t0 = self._tokens0 = self._paused = 0.0
        self._step0 = 0
        self._pause_start: float | None = None

    # what the model costs and what the device can do
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        meta = getattr(pl_module, "meta", {}) or {}
        model, family = getattr(pl_module, "model", None), meta.get("family")
        dm = trainer.datamodule
        seq_len = int(getattr(getattr(dm, "cfg", None), "max_seq_len", 0) or 0)
        if model is not None and family and seq_len:
            labels = meta.get("labels")
            self.flops_per_token = flops_per_token(family, model.cfg, meta.get("objective") or {}, seq_len,
                                                   len(labels) if labels else None)
        self.peak, self.peak_source = device_peak_flops(pl_module.device, str(trainer.precision), self.cache_dir)
        self.world_size = trainer.world_size
        self._restart(trainer, pl_module)

    def _tokens(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float:
        # the module's own counter of real tokens (rank-local); reading it is the window's one sync
        return float(pl_module.tokens_seen) * trainer.world_size

    def _restart(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0, self._paused, self._pause_start = time.perf_counter(), 0.0, None
        self._tokens0, self._step0 = self._tokens(trainer, pl_module), trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if self.first_step_s is None:
            self.first_step_s = process_age_s()
            if trainer.is_global_zero and trainer.logger is not None and self.first_step_s is not None:
                trainer.logger.log_metrics({"perf/first_step_s": self.first_step_s}, step=trainer.global_step)
            self._restart(trainer, pl_module)  # the first step (compilation, warm-up) is not throughput
            return
        steps = trainer.global_step - self._step0
        every = max(1, int(trainer.log_every_n_steps or 1))
        if steps <= 0 or trainer.global_step % every:
            return
        seconds = time.perf_counter() - self._t0 - self._paused
        tokens = self._tokens(trainer, pl_module) - self._tokens0
        self.windows.append((seconds, tokens, steps))
        if trainer.is_global_zero and trainer.logger is not None:
            trainer.logger.log_metrics(self._figures(seconds, tokens, steps, pl_module.device), step=trainer.global_step)
        self._restart(trainer, pl_module)

    def _figures(self, seconds: float, tokens: float, steps: int, device: torch.device) -> dict[str, float]:
        out = {"perf/tokens_per_s": tokens / seconds, "perf/step_ms": 1e3 * seconds / steps,
               "perf/peak_mem_mb": peak_memory_mb(device)}
        mfu = self.mfu(tokens / seconds)
        if mfu is not None:
            out["perf/mfu"] = mfu
        return out

    def mfu(self, tokens_per_s: float) -> float | None:
        """MFU of a throughput summed over all ranks (each rank has one device of this peak)."""
        if not self.flops_per_token or not self.peak:
            return None
        return tokens_per_s * self.flops_per_token / (self.peak * self.world_size)

    # validation is not training time
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self._pause_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pause_start is not None:
            self._paused += time.perf_counter() - self._pause_start
            self._pause_start = None

    def summary(self, device: torch.device) -> dict[str, float]:
        """The run's figures: tokens/s, step ms and MFU over its logging windows, peak memory."""
        windows = self.windows[1:] if len(self.windows) > 1 else self.windows
        seconds, tokens, steps = (sum(w[i] for w in windows) for i in range(3))
        out = (self._figures(seconds, tokens, steps, device) if seconds > 0
               else {"perf/peak_mem_mb": peak_memory_mb(device)})
        if self.first_step_s is not None:
            out["perf/first_step_s"] = self.first_step_s
        return out
