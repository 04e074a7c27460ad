"""Callbacks that write to the run's tracking store."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch

from lit_tf.models.generation import generate
from lit_tf.tracking import mlflow as tracking


def sample_texts(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int, temperature: float,
                 top_k: int | None, top_p: float | None, seed: int, device: torch.device | str = "cpu") -> list[str]:
    """Continue each prompt; its own generator leaves the global RNG (dropout) untouched."""
    g = torch.Generator(device=device).manual_seed(seed)
    eos = tokenizer.token_to_id("[SEP]")
    out = []
    for prompt in prompts:
        ids = tokenizer.encode(prompt, add_special_tokens=False).ids or [eos]
        x = torch.tensor([ids], dtype=torch.long, device=device)
        y = generate(model, x, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, eos_id=eos,
                     generator=g)
        new = [t for t in y[0, len(ids):].tolist() if t != eos]
        out.append(prompt + tokenizer.decode(new, skip_special_tokens=True))
    return out


class SampleGenerator(L.Callback):
    """After each validation, continue a few prompts and log them as `samples/step_<N>.txt`
    (MLflow artifact when the run logs to MLflow; always also under the run folder)."""

    def __init__(self, prompts: Sequence[str], max_new_tokens: int = 40, temperature: float = 0.8,
                 top_k: int | None = 50, top_p: float | None = 0.95, seed: int = 0) -> None:
        self.prompts, self.max_new_tokens = list(prompts), max_new_tokens
        self.temperature, self.top_k, self.top_p, self.seed = temperature, top_k, top_p, seed

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        tok = trainer.datamodule.tokenizer.tokenizer
        texts = sample_texts(pl_module.model, tok, self.prompts, max_new_tokens=self.max_new_tokens,
                             temperature=self.temperature, top_k=self.top_k, top_p=self.top_p, seed=self.seed,
                             device=pl_module.device)
        body = f"step {trainer.global_step}\n\n" + "\n\n".join(f"[{i}] {t}" for i, t in enumerate(texts)) + "\n"
        name = f"step_{trainer.global_step:07d}.txt"
        folder = Path(trainer.default_root_dir) / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(body)
        if isinstance(trainer.logger, tracking.MLFlowLogger):
            tracking.log_text(trainer.logger, body, f"samples/{name}")


class TranslationSamples(L.Callback):
    """After each validation, log the sample translations of the run's `BleuEvaluator` as
    `translations/step_<N>.txt` (MLflow text artifacts), and sacreBLEU's signatures once, as the tags
    `sacrebleu.bleu` and `sacrebleu.chrf` (what `val/bleu` and `val/chrf` mean)."""

    def __init__(self) -> None:
        self._tagged = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from lit_tf.lit.translation import BleuEvaluator

        if trainer.sanity_checking or not trainer.is_global_zero or not isinstance(trainer.logger, tracking.MLFlowLogger):
            return
        evaluator = next((c for c in trainer.callbacks if isinstance(c, BleuEvaluator)), None)
        if evaluator is None or evaluator.last is None:
            return
        tracking.log_text(trainer.logger, evaluator.last_samples, f"translations/step_{trainer.global_step:07d}.txt")
        if not self._tagged and isinstance(trainer.logger, tracking.LitTfMLflowLogger):
            tracking.set_tag(trainer.logger, "sacrebleu.bleu", evaluator.last.bleu_signature)
            tracking.set_tag(trainer.logger, "sacrebleu.chrf", evaluator.last.chrf_signature)
            self._tagged = True


class MetricsBeforeCheckpoints(L.Callback):
    """Checkpoints never get ahead of the metric curves in the store (LitTfMLflowLogger.before_checkpoint)."""

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if isinstance(trainer.logger, tracking.LitTfMLflowLogger):
            trainer.logger.before_checkpoint()


class DatasetInputs(L.Callback):
    """Log the DataModule's `dataset_records()` as the MLflow run's dataset inputs: training and
    validation data when fitting starts (after set-up, so counts are known), test data when
    testing starts."""

    def _log(self, trainer: L.Trainer, contexts: tuple[str, ...]) -> None:
        logger, dm = trainer.logger, trainer.datamodule
        if not isinstance(logger, tracking.LitTfMLflowLogger) or dm is None or not hasattr(dm, "dataset_records"):
            return
        records = [r for r in dm.dataset_records() if r.context in contexts]
        if records:
            tracking.log_datasets(logger, records)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, ("train", "validation"))

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, ("test",))
