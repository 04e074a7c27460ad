"""Encode sentence batches in worker processes, for `lit_tf.data.shards.write_shards`.

Encoding (the tokenizer's Rust code) is nearly all the cost of sharding a corpus; the tokenizer's
own thread pool speeds one `encode_batch` up by ~1.7x on 2 cores, while the Python around it
(reading documents, writing files) stays serial. `EncoderPool` runs N plain worker processes that
each encode whole batches, while the parent reads documents and writes results in order.

Why plain subprocesses (`python -c ...` over pipes) and not `multiprocessing`: the parent may be a
Lightning/DDP rank 0 (threads, CUDA, a process group) where `fork` is unsafe, and `spawn`/
`forkserver` re-import the parent's `__main__` (a training script: torch, Lightning, ~300 MB and
seconds per worker). A worker here imports numpy, `tokenizers` and `lit_tf.data.tokenizer`
only. Messages are length-prefixed pickles on the worker's stdin/stdout (its own stdout goes to
stderr, so a stray print cannot corrupt them).

Failure handling: a worker that raises sends its traceback back and the parent raises
`ShardWorkerError` with it; a worker that dies (OOM-killed, ...) is reported with its exit code;
`close()` (also on errors, via the context manager) ends every worker. If the parent itself dies,
the workers see end-of-file on stdin and exit.
"""

from __future__ import annotations

import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
import traceback
from collections import deque
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from lit_tf.errors import LitTfError

# Batches queued per worker beyond the one it is encoding: enough to keep it busy while the
# parent reads documents, small enough to keep memory flat.
_DEPTH = 2
_HEADER = struct.Struct("<Q")
_EOF = object()


class ShardWorkerError(RuntimeError):
    """A worker process failed while encoding (its traceback or exit code is in the message)."""


def default_workers() -> int:
    """Encoder processes to use when not told: `LIT_TF_SHARD_WORKERS`, else the cores this process
    may run on, at most 8 (one parent reading documents keeps about that many busy)."""
    env = os.environ.get("LIT_TF_SHARD_WORKERS", "").strip()
    if env:
        if not env.isdigit():
            raise LitTfError(f"LIT_TF_SHARD_WORKERS={env!r}: expected a whole number (0 or 1: encode in-process)")
        return int(env)
    return max(1, min(8, _cores()))


def _send(f: BinaryIO, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    f.write(_HEADER.pack(len(data)))
    f.write(data)
    f.flush()


def _recv(f: BinaryIO) -> Any:
    head = f.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return _EOF
    (n,) = _HEADER.unpack(head)
    data = f.read(n)
    return _EOF if len(data) < n else pickle.loads(data)


# --------------------------------------------------------------------------------------------
# worker side
# --------------------------------------------------------------------------------------------
def worker_main() -> None:
    """Entry point of a worker process: `init` message, then `(seq, sentences)` tasks until EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which ends us
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, never into the message stream
    inp = sys.stdin.buffer
    from tokenizers import Tokenizer

    from lit_tf.data.tokenizer import encode_flat

    init = _recv(inp)
    if init is _EOF:
        return
    tok, dtype = Tokenizer.from_str(init["tokenizer_json"]), np.dtype(init["dtype"])
    tasks: queue.SimpleQueue = queue.SimpleQueue()

    def read() -> None:  # drain stdin at once, so the parent never blocks writing to us
        while (item := _recv(inp)) is not _EOF:
            tasks.put(item)
        tasks.put(_EOF)

    threading.Thread(target=read, daemon=True).start()
    while (item := tasks.get()) is not _EOF:
        seq, sentences = item
        try:
            ids, starts, lengths = encode_flat(tok, sentences, dtype)
        except BaseException:
            _send(out, (seq, "error", traceback.format_exc()))
            return
        try:
            _send(out, (seq, "ok", (ids, starts, lengths)))
        except BrokenPipeError:  # the parent went away
            return


_WORKER_CODE = "from lit_tf.data.shard_workers import worker_main; worker_main()"


# --------------------------------------------------------------------------------------------
# parent side
# --------------------------------------------------------------------------------------------
class EncoderPool:
    """N worker processes encoding batches with one tokenizer; results come back in submit order.

    `submit(sentences)` hands a batch to the next worker (round robin) and `next_result()` returns
    the oldest batch's `(ids, word_start, lengths)` (as `lit_tf.data.tokenizer.encode_flat`).
    Use as a context manager: the workers end when the block ends, whatever happened.
    """

    def __init__(self, tokenizer_json: str, dtype: np.dtype, n_workers: int, *, what: str = "tokenizing") -> None:
        if n_workers < 1:
            raise ValueError(f"EncoderPool needs at least one worker, got {n_workers}")
        self.what = what
        pkg_root = str(Path(__file__).resolve().parents[2])  # the worker imports this same lit_tf
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([pkg_root, *filter(None, [env.get("PYTHONPATH")])])
        # one encoding thread per worker unless told otherwise: N workers already fill N cores
        env.setdefault("RAYON_NUM_THREADS", str(max(1, _cores() // n_workers)))
        self.procs: list[subprocess.Popen] = []
        self._pending: deque[tuple[int, int]] = deque()  # (seq, worker) in submit order
        self._seq = 0
        try:
            for _ in range(n_workers):
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-c", _WORKER_CODE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                ))
            for i in range(n_workers):
                self._write(i, {"tokenizer_json": tokenizer_json, "dtype": np.dtype(dtype).name})
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> EncoderPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    @property
    def capacity(self) -> int:
        """Batches worth keeping in flight: every worker busy plus a queue of `_DEPTH` each."""
        return len(self.procs) * (1 + _DEPTH)

    def submit(self, sentences: list[str]) -> None:
        seq, self._seq = self._seq, self._seq + 1
        w = seq % len(self.procs)
        self._write(w, (seq, sentences))
        self._pending.append((seq, w))

    def next_result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        seq, w = self._pending.popleft()
        msg = _recv(self.procs[w].stdout)
        if msg is _EOF:
            raise ShardWorkerError(f"{self.what}: {self._died(w)} while encoding batch {seq}")
        got, status, payload = msg
        if status != "ok":
            raise ShardWorkerError(
                f"{self.what}: encoder worker {w} (pid {self.procs[w].pid}) failed on batch {seq}:\n{payload.rstrip()}"
            )
        if got != seq:  # cannot happen unless the protocol is broken
            raise ShardWorkerError(f"{self.what}: encoder worker {w} answered batch {got}, expected {seq}")
        return payload

    def _write(self, w: int, obj: Any) -> None:
        try:
            _send(self.procs[w].stdin, obj)
        except (BrokenPipeError, OSError) as e:
            raise ShardWorkerError(f"{self.what}: {self._died(w)} ({e})") from e

    def _died(self, w: int) -> str:
        p = self.procs[w]
        try:
            code = p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        how = "closed its output" if code is None else (
            f"was killed by signal {-code}" if code < 0 else f"exited with code {code}")
        return f"encoder worker {w} (pid {p.pid}) {how}; see its messages above"

    def close(self) -> None:
        """End every worker: EOF on stdin asks it to stop; one that does not is killed."""
        for p in self.procs:
            try:
                if p.stdin:
                    p.stdin.close()
            except OSError:
                pass
        for p in self.procs:
            if self._pending and p.poll() is None:
                p.kill()  # stopping early (an error): do not wait for queued work
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout:
                p.stdout.close()
        self._pending.clear()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
