"""Translating text with a seq2seq model, and scoring it with sacreBLEU, during training and after.

- `translate_texts`: raw sentences in, detokenised translations out; batched by length (sorted, so
  little padding), greedy (beam = 1) or beam search on the KV cache (lit_tf.models.decoding).
- `score`: corpus BLEU and chrF with sacreBLEU's defaults (13a tokenisation, exp smoothing; chrF
  with char order 6, beta 2) and their signatures, so a figure can be compared with published ones.
- `BleuEvaluator`: at every validation, translate the held-out pairs of the run's DataModule
  (`val_texts()`), log `val/bleu` and `val/chrf` and keep a few sample translations (logged to MLflow
  as text by lit_tf.tracking.callbacks.TranslationSamples). With several ranks, each translates
  its share and all of them score the gathered corpus, so every rank logs the same number.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from tokenizers import Tokenizer, pre_tokenizers
from torch import nn

from lit_tf.data.tokenizer import PAD
from lit_tf.data.translation import encode_sources, pad_batch


@dataclass(frozen=True)
class DecodeSettings:
    """How a translation is searched for (the keys of `objective.decode` and of lit_tf.cli.translate)."""

    beam: int = 1  # 1: greedy; > 1: beam search with that many hypotheses per sentence
    length_penalty: float = 1.0  # beam score = sum log p / length ** length_penalty
    max_len_ratio: float = 1.5  # a translation stops at ratio * source length + offset tokens
    max_len_offset: int = 10
    early_stop: bool = True  # beam: a sentence is done once `beam` hypotheses have ended
    batch_size: int = 64  # sentences per decoding batch

    def __post_init__(self) -> None:
        if int(self.beam) < 1:
            raise ValueError(f"beam must be >= 1, got {self.beam}")
        if float(self.max_len_ratio) <= 0 or int(self.max_len_offset) < 0:
            raise ValueError(f"max_len_ratio must be > 0 and max_len_offset >= 0, got {self.max_len_ratio}, "
                             f"{self.max_len_offset}")
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def encode_batch(tokenizer: Tokenizer, texts: Sequence[str], max_len: int, device: torch.device | str = "cpu"
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sources framed as in training (lit_tf.data.translation), right-padded -> (ids (B, S), mask (B, S) bool)."""
    ids, mask = pad_batch(encode_sources(tokenizer, texts, max_len), tokenizer.token_to_id(PAD))
    return ids.to(device), mask.to(device)


_NO_SPACE_BEFORE = re.compile(r" ([.,;:!?%)\]}»])")
_NO_SPACE_AFTER = re.compile(r"([(\[{¿¡«]) ")
_NUMBER = re.compile(r"(\d) ([.,:]) (?=\d)")
_APOSTROPHE = re.compile(r"(\w) (['-]) (?=\w)")  # don't, road-rollers


def detokenize(text: str) -> str:
    """Undo the spaces a punctuation-splitting tokenizer (BERT's pre-tokenizer, lit_tf's WordPiece and
    BPE) puts around punctuation when it decodes: `¿ Dónde está ? Es 3 . 5 % , don ' t , non - stop` ->
    `¿Dónde está? Es 3.5%, don't, non-stop`. Straight double quotes pair up left to right (opening ones lose
    the space after them, closing ones the space before)."""
    text = _NUMBER.sub(r"\1\2", text)
    text = _APOSTROPHE.sub(r"\1\2", text)
    text = _NO_SPACE_AFTER.sub(r"\1", _NO_SPACE_BEFORE.sub(r"\1", text))
    if '"' in text:
        parts, out = text.split('"'), []
        for i, part in enumerate(parts):
            if i % 2 == 1 and i < len(parts) - 1:  # inside a pair of quotes
                part = part.strip()
            out.append(part)
        text = '"'.join(out)
    return text


def splits_punctuation(tokenizer: Tokenizer) -> bool:
    """Whether decoding this tokenizer spaces out punctuation (its pre-tokenizer splits it off)."""
    return isinstance(tokenizer.pre_tokenizer, pre_tokenizers.BertPreTokenizer)


@torch.no_grad()
def translate_texts(model: nn.Module, tokenizer: Tokenizer, texts: Sequence[str], settings: DecodeSettings = DecodeSettings(),
                    *, device: torch.device | str = "cpu", progress: bool = False) -> list[str]:
    """Translations of `texts`, in their order. Sentences are decoded in batches of similar length
    (longest first); an empty line translates to an empty line; the output is detokenised (`detokenize`)
    when the tokenizer spaces out punctuation. The model's train/eval mode is kept."""
    from lit_tf.models.decoding import beam_search, greedy_decode

    out: list[str] = [""] * len(texts)
    todo = sorted((i for i, t in enumerate(texts) if t.strip()), key=lambda i: -len(texts[i]))
    max_len = int(model.cfg.max_seq_len)
    detok = splits_punctuation(tokenizer)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="translating", unit="sent", leave=False)
    for lo in range(0, len(todo), settings.batch_size):
        chunk = todo[lo : lo + settings.batch_size]
        ids, mask = encode_batch(tokenizer, [texts[i] for i in chunk], max_len, device)
        kw = {"max_len_ratio": settings.max_len_ratio, "max_len_offset": settings.max_len_offset}
        if settings.beam == 1:
            hyps = greedy_decode(model, ids, mask, **kw)
        else:
            hyps = beam_search(model, ids, mask, beam=settings.beam, length_penalty=settings.length_penalty,
                               early_stop=settings.early_stop, **kw)
        for i, h in zip(chunk, tokenizer.decode_batch(hyps, skip_special_tokens=True)):
            out[i] = detokenize(h) if detok else h
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return out


@dataclass(frozen=True)
class Scores:
    bleu: float
    chrf: float
    bleu_signature: str
    chrf_signature: str

    def line(self) -> str:
        return f"BLEU {self.bleu:.2f}  chrF {self.chrf:.2f}  ({self.bleu_signature}; {self.chrf_signature})"


def score(hypotheses: Sequence[str], references: Sequence[str]) -> Scores:
    """Corpus BLEU and chrF of hypotheses against one reference each (sacreBLEU defaults)."""
    from sacrebleu.metrics import BLEU, CHRF

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references: they must align line by line")
    bleu, chrf = BLEU(), CHRF()
    b = bleu.corpus_score(list(hypotheses), [list(references)])
    c = chrf.corpus_score(list(hypotheses), [list(references)])
    return Scores(float(b.score), float(c.score), str(bleu.get_signature()), str(chrf.get_signature()))


def _gather(items: list, trainer: L.Trainer) -> list:
    """Every rank's list, concatenated in rank order (the list itself on one process)."""
    import torch.distributed as dist

    if trainer.world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return items
    parts: list = [None] * trainer.world_size
    dist.all_gather_object(parts, items)
    return [x for p in parts for x in p]


class BleuEvaluator(L.Callback):
    """sacreBLEU BLEU and chrF of the model's translations of the validation pairs, at every validation.

    Args:
        decode: DecodeSettings keys (beam 1 = greedy: several times faster than beam 5 on a CPU).
        samples: how many (source, reference, hypothesis) triples to keep for the run's text log.
    """

    def __init__(self, decode: dict | None = None, samples: int = 8) -> None:
        self.settings = DecodeSettings(**dict(decode or {}))
        self.samples = int(samples)
        self.last: Scores | None = None
        self.last_samples: str = ""

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        dm = trainer.datamodule
        sources, references = dm.val_texts()
        rank, world = trainer.global_rank, trainer.world_size
        mine = list(range(rank, len(sources), world))
        hyps = translate_texts(pl_module.model, dm.tokenizer.tokenizer, [sources[i] for i in mine], self.settings,
                               device=pl_module.device)
        gathered = dict(_gather(list(zip(mine, hyps)), trainer))
        hypotheses = [gathered[i] for i in range(len(sources))]
        self.last = s = score(hypotheses, references)
        pl_module.log_dict({"val/bleu": s.bleu, "val/chrf": s.chrf}, prog_bar=True)
        body = [f"step {trainer.global_step}: {s.line()}", ""]
        for i in range(min(self.samples, len(sources))):
            body += [f"[{i}] src: {sources[i]}", f"[{i}] ref: {references[i]}", f"[{i}] hyp: {hypotheses[i]}", ""]
        self.last_samples = "\n".join(body)
        if trainer.is_global_zero:
            folder = Path(trainer.default_root_dir) / "translations"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"step_{trainer.global_step:07d}.txt").write_text(self.last_samples, encoding="utf-8")
