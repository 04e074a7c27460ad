"""Deterministic, resumable batch sampling.

Training reads an endless stream of shuffled epochs: position p of the stream is
`perm_e[p % n]` with `e = p // n` and `perm_e` a permutation seeded by `(seed, e)`. Global
batch b covers stream positions `[b*G, (b+1)*G)` with `G = batch_size * world_size`, and rank r
takes its own `batch_size` slice. Each row also gets a masking seed from (seed, b, its position in
the global batch). So every batch and its masks depend only on (seed, b, rank): resuming at batch b
reproduces exactly what an uninterrupted run would see, DDP ranks never overlap, and a global batch
is the same rows with the same masks whether one process or N ranks handle it.

With `lengths`, each epoch's permutation is grouped by length (fine-tuning's
`data.group_by_length`): the shuffled epoch is cut into chunks of `group_batches` global
batches, each chunk is sorted by length, cut into global batches, and those batches are
shuffled within the chunk. Batches then hold rows of similar length (little padding) while the
order stays random; it is still a function of (seed, epoch), so resume stays exact. A grouped
epoch is a whole number of global batches, so that every epoch starts on a batch boundary and
no batch mixes two epochs' groups: the `n mod G` rows left over are a random few that each
epoch leaves out (as `drop_last`). An eval pass with `lengths` goes through the rows sorted by
length (longest first), which changes no metric and pads little.

The sampler yields lists of `(index, row_seed)` keys; datasets unpack them so the collator can
mask each row from its own seed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader


def row_seeds(seed: int, batch: int, positions: np.ndarray) -> np.ndarray:
    """Masking seeds (uint32 values as int64) of the rows at `positions` of global batch `batch`:
    a function of the global position, so they do not depend on how ranks split the batch."""
    base = np.random.SeedSequence([seed, batch]).generate_state(1)[0].astype(np.uint64)
    return ((base + np.asarray(positions, dtype=np.uint64) * np.uint64(0x9E3779B1)) & np.uint64(0xFFFFFFFF)).astype(np.int64)


class StreamBatchSampler:
    """Batches of `(index, row_seed)` over an endless epoch stream (train) or one ordered pass (eval).

    Args:
        n: dataset size.
        batch_size: per-rank batch size.
        num_batches: batches per iteration (per "Lightning epoch").
        seed: base seed for shuffling and masking.
        shuffle: endless shuffled stream (train) vs. a single ordered pass (eval).
        rank / world_size: DDP sharding (each rank takes its slice of every global batch).
        drop_last: eval only — keep or drop a final partial batch.
        lengths: the length of each example: training batches are grouped by length, an eval pass
            is sorted by length (see above).
        group_batches: global batches per length-sorted chunk.
    """

    def __init__(
        self, n: int, batch_size: int, *, num_batches: int | None = None, seed: int = 0, shuffle: bool = True,
        rank: int = 0, world_size: int = 1, drop_last: bool = False, lengths: Sequence[int] | None = None,
        group_batches: int = 50,
    ) -> None:
        if n <= 0:
            raise ValueError("dataset is empty: nothing to sample (corpus too small for the sequence length?)")
        if lengths is not None and len(lengths) != n:
            raise ValueError(f"lengths has {len(lengths)} entries for {n} examples")
        self.lengths = None if lengths is None else np.asarray(lengths, dtype=np.int64)
        self.group_batches = int(group_batches)
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        global_bs = batch_size * world_size
        # stream positions per epoch: all rows, or whole global batches of them when grouping by length
        self.epoch_len = n if self.lengths is None or n < global_bs else (n // global_bs) * global_bs
        # an eval pass with lengths: longest first
        self._eval_order = None if self.lengths is None else np.argsort(-self.lengths, kind="stable")
        if shuffle:
            self.num_batches = num_batches if num_batches is not None else max(1, n // global_bs)
        else:
            full = n // global_bs if drop_last else -(-n // global_bs)
            self.num_batches = min(full, num_batches) if num_batches is not None else full
        self.start_batch = 0  # first global batch of the next iteration (set by resume / epochs)
        self._skip = 0  # batches of the next iteration already consumed before a resume
        self._perm_cache: tuple[int, np.ndarray] | None = None

    def _perm(self, epoch: int) -> np.ndarray:
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            perm = rng.permutation(self.n)
            self._perm_cache = (epoch, perm if self.lengths is None else self._grouped(perm[:self.epoch_len], rng))
        return self._perm_cache[1]

    def _grouped(self, perm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """`perm` regrouped so that each global batch holds rows of similar length (module docstring)."""
        G = self.batch_size * self.world_size
        chunk_size = G * max(1, self.group_batches)
        out = []
        for lo in range(0, len(perm), chunk_size):
            chunk = perm[lo:lo + chunk_size]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]  # longest first
            batches = [chunk[i:i + G] for i in range(0, len(chunk), G)]
            full = len(chunk) // G  # a partial batch (only when n < G) stays last
            out.extend(batches[i] for i in rng.permutation(full))
            out.extend(batches[full:])
        return np.concatenate(out)

    def global_batch_indices(self, b: int) -> np.ndarray:
        return self.batch_keys(b)[0]

    def batch_keys(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        """(dataset indices, row seeds) of this rank's slice of global batch `b`."""
        G = self.batch_size * self.world_size
        lo = b * G + self.rank * self.batch_size
        pos = np.arange(lo, lo + self.batch_size)
        if not self.shuffle:
            pos = pos[pos < self.n]
            idx = pos if self._eval_order is None else self._eval_order[pos]
        else:
            idx = np.empty(self.batch_size, dtype=np.int64)
            for e in np.unique(pos // self.epoch_len):
                sel = (pos // self.epoch_len) == e
                idx[sel] = self._perm(int(e))[pos[sel] % self.epoch_len]
        return idx, row_seeds(self.seed, b, pos - b * G)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        skip, self._skip = self._skip, 0
        for i in range(skip, self.num_batches):
            b = self.start_batch + i
            idx, seeds = self.batch_keys(b)
            if len(idx) == 0:
                return
            yield [(int(j), int(s)) for j, s in zip(idx, seeds)]


class ResumableLoader(DataLoader):
    """A DataLoader that starts where training stands, so resume continues the data stream.

    At each `iter()` it asks `consumed_batches()` (optimizer steps x accumulation, from the
    trainer) how many batches training has used, and positions the stream there: a fresh
    epoch continues after the previous one, and a resumed run skips exactly what the
    checkpoint had already seen. It implements Lightning's `_Stateful` protocol so that the
    position is also recorded in checkpoints (and Lightning knows mid-epoch resume is exact).
    """

    def __init__(self, *args: Any, consumed_batches: Callable[[], int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._consumed_batches = consumed_batches

    @property
    def stream_sampler(self) -> StreamBatchSampler:
        return self.batch_sampler  # type: ignore[return-value]

    def __iter__(self):
        s = self.stream_sampler
        consumed = int(self._consumed_batches())
        s.start_batch = (consumed // s.num_batches) * s.num_batches
        s._skip = consumed - s.start_batch
        return super().__iter__()

    def state_dict(self) -> dict[str, int]:
        return {"consumed": int(self._consumed_batches()), "seed": self.stream_sampler.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        # The position itself is re-derived from the restored trainer step in __iter__; the
        # stored seed guards against resuming with a different data order.
        if int(state.get("seed", self.stream_sampler.seed)) != self.stream_sampler.seed:
            raise ValueError(
                f"checkpoint was trained with seed {state['seed']} but this run uses {self.stream_sampler.seed}: "
                "resume with the same seed (or start a new run)"
            )


class StreamDataModule(L.LightningDataModule):
    """What every lit_tf DataModule shares: where this rank stands and how far training got.

    Subclasses set `seed` and `cfg` (their typed `data` group, a `lit_tf.data.config.DataConfig`). Gradient accumulation (`accumulate`) and the run's length (`max_steps`)
    are read from the trainer the module is attached to; the values set on the module only serve
    when it runs without one (tests, benchmarks).
    """

    seed: int = 0
    _accumulate: int = 1
    _max_steps: int = -1

    @property
    def accumulate(self) -> int:
        t = self.trainer
        return int(t.accumulate_grad_batches) if t is not None else self._accumulate

    @accumulate.setter
    def accumulate(self, value: int) -> None:
        self._accumulate = int(value)

    @property
    def max_steps(self) -> int:
        t = self.trainer
        return int(t.max_steps) if t is not None else self._max_steps

    @max_steps.setter
    def max_steps(self, value: int) -> None:
        self._max_steps = int(value)

    def dataset_records(self) -> list:
        """The data this module trains and evaluates on (`lit_tf.data.records.DatasetRecord`s),
        once set up; the tracker logs them as the run's dataset inputs."""
        return []

    def rank_world(self) -> tuple[int, int]:
        t = self.trainer
        return (t.global_rank, t.world_size) if t is not None else (0, 1)

    def consumed_batches(self) -> int:
        """Training batches used so far on this rank (optimizer steps x accumulation)."""
        t = self.trainer
        return t.global_step * self.accumulate if t is not None else 0

    def train_batches(self) -> int | None:
        """Length of the training stream: `max_steps` worth of batches (None: one pass per epoch)."""
        return self.max_steps * self.accumulate if self.max_steps > 0 else None

    def resumable_loader(self, dataset, sampler, collate_fn) -> ResumableLoader:
        return ResumableLoader(dataset, batch_sampler=sampler, consumed_batches=self.consumed_batches,
                               **self.loader_kwargs(collate_fn))

    def loader_kwargs(self, collate_fn) -> dict[str, Any]:
        # The loader's own generator keeps iterator creation from consuming the global RNG
        # (which dropout uses), so a resumed run sees the same random stream.
        workers = self.cfg.num_workers
        return {"collate_fn": collate_fn, "num_workers": workers, "persistent_workers": workers > 0,
                "pin_memory": self.cfg.pin_memory,
                "generator": torch.Generator().manual_seed(self.seed)}
