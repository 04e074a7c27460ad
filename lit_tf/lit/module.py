"""The one generic LightningModule: a model, an objective and an optimizer, all injected.

The module never knows which family or objective it trains: the objective maps
`(model, batch, step)` to a weighted loss plus per-term `(sum, n)` counts; this module backprops the
loss and turns the counts into exact, DDP-synced metrics (`train/<term>_loss`,
`val/<term>_loss`, `val/<term>_ppl`, `val/<term>_acc`, ...).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric

from lit_tf.lit.optim import OptimConfig, build_optimizer
from lit_tf.lit.parallel import holds_full_gradients

# Terms whose exp(loss) is a perplexity worth reporting.
PPL_TERMS = ("mlm", "clm", "tlm", "mt")


def _flat_batches(batch: Mapping[str, Any]) -> list[Mapping[str, torch.Tensor]]:
    """A batch is either one dict of tensors or (multi-stream objectives) a dict of such dicts."""
    return [batch] if "input_ids" in batch else [b for b in batch.values() if isinstance(b, Mapping)]


def _key(name: str) -> str:
    return name.replace("/", "__")  # module names cannot hold '.', and '/' reads badly in state dicts


class LitModule(L.LightningModule):
    """Args:
    model: a `lit_tf.models` network.
    objective: callable `(model, batch, step) -> ObjectiveOutput` with `terms` (train) and
        `val_terms` (validation metric names); an `nn.Module` objective's parameters are trained too.
    optimizer: a partial `torch.optim` constructor taking parameter groups (e.g. AdamW(lr=...)).
    optim: weight decay (>= 2-D weights only), warmup and decay schedule (`lit_tf.lit.optim.OptimConfig`;
        None: its defaults).
    meta: what a checkpoint needs to rebuild the model without the config tree (family, model
        config, tokenizer, languages...); stored under `checkpoint["lit_tf"]`.
    eval_metrics: optional factory of an evaluation metric module (`update(preds, target)`,
        `compute() -> dict`, `report()`, `reset()`) fed with the objective's `predictions`.
    val_streams / test_streams: names of the validation / test dataloaders in order (e.g. one per
        language for zero-shot transfer; "" for a single unnamed one). Metrics are logged as
        `val/<name>` or `val/<stream>/<name>` (same for `test/`).
    """

    def __init__(
        self, model: nn.Module, objective: Callable, optimizer: Callable[..., torch.optim.Optimizer], *,
        optim: OptimConfig | None = None, meta: Mapping[str, Any] | None = None,
        eval_metrics: Callable[[], nn.Module] | None = None, val_streams: tuple[str, ...] = ("",),
        test_streams: tuple[str, ...] = ("",),
    ) -> None:
        super().__init__()
        self.model, self.objective, self.optimizer_factory = model, objective, optimizer
        self.optim = optim or OptimConfig()
        self.meta = dict(meta or {})
        self.val_names = tuple(dict.fromkeys((*objective.val_terms, *objective.terms)))
        self.val_loss = nn.ModuleDict({_key(t): MeanMetric() for t in self.val_names})
        self.val_acc = nn.ModuleDict({_key(t): MeanMetric() for t in self.val_names})
        self.streams = {"val": tuple(val_streams), "test": tuple(test_streams)}
        self.eval_metrics = nn.ModuleDict(
            {f"{split}__{_key(st) or '_'}": eval_metrics() for split, sts in self.streams.items() for st in sts}
        ) if eval_metrics else None
        self.reports: dict[str, dict[str, dict]] = {}  # split -> stream -> metric report (after each epoch)
        # Real (non-padding) tokens trained on by this rank; a buffer so checkpoints carry it.
        self.register_buffer("tokens_seen", torch.zeros((), dtype=torch.float64), persistent=True)
        # This step's total gradient norm, when NonFiniteGuard has computed it (clipping reuses it).
        self.step_grad_norm: torch.Tensor | None = None

    # ------------------------------------------------------------------ steps
    def forward(self, *args: Any, **kwargs: Any):
        return self.model(*args, **kwargs)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        out = self.objective(self.model, batch, step=self.global_step)
        parts = _flat_batches(batch)
        bs = sum(p["input_ids"].shape[0] for p in parts)
        self.log("train/loss", out.loss.detach(), prog_bar=True, batch_size=bs)
        for name, (s, n) in out.terms.items():
            self.log(f"train/{name}_loss", s.detach() / n.clamp(min=1), batch_size=bs)
        self.tokens_seen += sum(p["attention_mask"].sum() for p in parts)
        # Every rank sees batches of the same shape, so rank-local x world size is the global count.
        self.log("train/tokens", self.tokens_seen * self.trainer.world_size, on_step=True, on_epoch=False)
        if self._trainer is not None and self.lr_schedulers() is not None:
            self.log("train/lr", self.lr_schedulers().get_last_lr()[0], on_step=True, on_epoch=False)
        return out.loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        out = self.objective(self.model, batch, step=self.global_step)
        for name, (s, n) in out.terms.items():
            if n > 0 and _key(name) in self.val_loss:
                self.val_loss[_key(name)].update(s / n, weight=n)
        for name, (c, n) in out.accuracy.items():
            if n > 0 and _key(name) in self.val_acc:
                self.val_acc[_key(name)].update(c.float() / n, weight=n)
        self._update_eval("val", dataloader_idx, out)

    def test_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._update_eval("test", dataloader_idx, self.objective(self.model, batch, step=self.global_step))

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    # ------------------------------------------------------------------ evaluation metrics
    def _metric(self, split: str, stream: str) -> nn.Module:
        return self.eval_metrics[f"{split}__{_key(stream) or '_'}"]

    def _update_eval(self, split: str, dataloader_idx: int, out) -> None:
        if self.eval_metrics is None or not out.predictions:
            return
        metric = self._metric(split, self.streams[split][dataloader_idx])
        for preds, target in out.predictions.values():
            metric.update(preds, target)

    def _log_eval(self, split: str) -> None:
        if self.eval_metrics is None:
            return
        logged, self.reports[split] = {}, {}
        for stream in self.streams[split]:
            metric = self._metric(split, stream)
            prefix = f"{split}/{stream}/" if stream else f"{split}/"
            logged.update({prefix + k: v for k, v in metric.compute().items()})
            self.reports[split][stream] = metric.report()
            metric.reset()
        self.log_dict(logged, add_dataloader_idx=False, prog_bar=split == "val", sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        # Each term's mean is token-weighted over the whole evaluation (all batches, all ranks), and
        # val/loss is the objective's own mix of those means: exact whatever the number of ranks.
        metrics, means = {}, {}
        for name in self.val_names:
            loss_m, acc_m = self.val_loss[_key(name)], self.val_acc[_key(name)]
            if loss_m.update_called:
                loss = means[name] = loss_m.compute()
                metrics[f"val/{name}_loss"] = loss
                if name.rsplit("/", 1)[-1] in PPL_TERMS:
                    metrics[f"val/{name}_ppl"] = torch.exp(loss.clamp(max=50.0))
            if acc_m.update_called:
                metrics[f"val/{name}_acc"] = acc_m.compute()
            loss_m.reset()
            acc_m.reset()
        if means:
            metrics["val/loss"] = self.objective.combine({k: (v, torch.ones_like(v)) for k, v in means.items()},
                                                         self.global_step)
        terms = tuple(self.objective.terms)
        if len(terms) == 1 and terms[0] in PPL_TERMS and f"val/{terms[0]}_loss" in metrics:
            metrics["val/ppl"] = metrics[f"val/{terms[0]}_ppl"]  # a single-term LM: its perplexity
        self._log_eval("val")
        main = self.val_names[0]
        shown = {k: v for k, v in metrics.items() if k in (f"val/{main}_loss", f"val/{main}_acc")}
        # torchmetrics already reduced these over ranks; sync_dist averages equal values (exact) and
        # keeps Lightning from warning about unsynced epoch metrics
        self.log_dict(shown, prog_bar=True, add_dataloader_idx=False, sync_dist=True)
        self.log_dict({k: v for k, v in metrics.items() if k not in shown}, add_dataloader_idx=False, sync_dist=True)

    # ------------------------------------------------------------------ exact resume
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lit_tf"] = self.meta
        # Dropout draws from the global generator: store it so a resumed run continues the same
        # random stream (data order and masking are already functions of the step).
        checkpoint["lit_tf_rng"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            checkpoint["lit_tf_rng"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get("lit_tf_rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(rng["cuda"])

    # ------------------------------------------------------------------ optimization
    def _total_steps(self) -> int | float:
        """Optimizer steps of the whole run (the LR schedule's length).

        With `max_epochs` set, Lightning's `estimated_stepping_batches` builds the train loader and
        starts its iterator to count batches, and it does so here, before a resumed run's loop
        state is restored: that iterator would replay the data stream from batch 0. So count from
        a loader object of our own (never iterated) instead.
        """
        t = self.trainer
        dm = t.datamodule
        if t.max_epochs in (None, -1) or dm is None:
            return t.estimated_stepping_batches  # step-based: Lightning reads max_steps, touches no data
        batches = len(dm.train_dataloader())
        limit = t.limit_train_batches
        batches = min(batches, int(limit)) if isinstance(limit, int) else int(batches * float(limit))
        steps = math.ceil(batches / t.accumulate_grad_batches) * max(t.max_epochs, 1)
        return min(steps, t.max_steps) if t.max_steps != -1 else steps

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip by norm with the norm NonFiniteGuard computed for this step (the same function over
        the same gradients, so the same value): one pass over the gradients instead of two. Sharded
        strategies (whose norm needs their own reduction) and other algorithms use Lightning's."""
        norm, self.step_grad_norm = self.step_grad_norm, None
        full_grads = holds_full_gradients(self.trainer.strategy)  # sharded strategies clip (and reduce) on their own
        if norm is not None and gradient_clip_val and (gradient_clip_algorithm or "norm") == "norm" and full_grads:
            grads = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grads_with_norm_(grads, float(gradient_clip_val), norm)
            return
        self.clip_gradients(optimizer, gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm)

    def configure_optimizers(self):
        opt = build_optimizer(self, self.optimizer_factory, self.optim.weight_decay)  # model + objective heads
        total = self._total_steps()
        if not math.isfinite(total) or total <= 0:
            raise ValueError("set trainer.max_steps (or max_epochs) so the LR schedule knows its length")
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self.optim.lr_lambda(total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "name": "lr"}}
