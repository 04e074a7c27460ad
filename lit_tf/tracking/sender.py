"""Metric points sent to the tracking store from a background thread, never dropped while the run lasts.

Why not MLflow's own asynchronous logging (`log_batch(..., synchronous=False)`, what Lightning's
`MLFlowLogger(synchronous=False)` uses)? In mlflow 3.x each queued batch is handed to a pool of
10 threads; a batch whose request still fails after MLflow's HTTP retries (urllib3, configured
by `MLFLOW_HTTP_REQUEST_MAX_RETRIES` / `_BACKOFF_FACTOR` / `_BACKOFF_JITTER` / `_TIMEOUT`) is
only reported by MLflow's logger and dropped: the run goes on with a hole in its curves. Here:

- a training step only appends to an in-memory queue (it never waits on the store);
- one thread sends the queue in order, in batches of at most 1000 points (MLflow's limit), each
  with one synchronous `MlflowClient.log_batch` (which does MLflow's HTTP retries for a server);
- a batch that fails on a transient error (server down or restarting, 5xx, timeout, a locked
  SQLite store) goes back to the head of the queue and is sent again after a pause (1 s, 2 s,
  4 s, ... at most 30 s): nothing is lost however long the outage, as long as the run lasts;
- `drain()` (a checkpoint is written) waits for the points queued so far to reach the store, unless
  an outage is in progress: a checkpoint is never ahead of the curves in the store, so a kill -9
  after it loses no point the resumed run will not recompute;
- `flush()` (end of run) waits for the queue to drain. During a flush a transient failure ends
  the wait: after one more full attempt the points still queued are returned to the caller
  (which saves them and says so), as are points the store refuses outright (a 4xx answer).

Re-sending is safe: the server's store ignores a point it already holds (same key, step,
timestamp and value), so a request that reached the store before its answer was lost does not
duplicate points.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable

from mlflow.entities import Metric

log = logging.getLogger(__name__)

MAX_POINTS_PER_BATCH = 1000  # MLflow's limit on metrics per log_batch request
DRAIN_TIMEOUT_S = 5.0  # longest a checkpoint waits for queued points (a store that answers takes ms; a
# request to a server that just went away can sit in MLflow's HTTP retries for a minute)
PAUSE_S = (1.0, 30.0)  # pause after a failed attempt: first, longest (doubling in between)


def is_transient(e: BaseException) -> bool:
    """Worth another try later: the store is unreachable or busy, rather than refusing the data."""
    status = getattr(e, "get_http_status_code", None)
    if status is None:  # not an MlflowException: a connection or OS level error
        return True
    code = status()
    return code >= 500 or code in (408, 429)


def reason(e: BaseException) -> str:
    """A short, one-line description of a failed request."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}"


class MetricSender:
    """Sends the metric points of one run from a daemon thread (see the module docstring)."""

    def __init__(self, client, run_id: str, where: str, pause_s: tuple[float, float] = PAUSE_S) -> None:
        self.client, self.run_id, self.where = client, run_id, where
        self.pause_s = pause_s
        self._cv = threading.Condition()
        self._queue: deque[Metric] = deque()
        self._busy = False  # the thread holds a batch it has not settled yet
        self._flushing = 0  # flush() calls waiting: a transient failure then gives up instead of pausing
        self._failed: list[tuple[Metric, str]] = []  # given up on: (point, why), handed out by flush()
        self._outage: str | None = None  # the error of the outage in progress (None: sending works)
        self._thread: threading.Thread | None = None

    def put(self, points: Iterable[Metric]) -> None:
        with self._cv:
            self._queue.extend(points)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="lit_tf-metric-sender", daemon=True)
                self._thread.start()
            self._cv.notify_all()

    def flush(self) -> list[tuple[Metric, str]]:
        """Wait until every queued point is sent or given up on; return those given up on."""
        with self._cv:
            self._flushing += 1
            self._cv.notify_all()  # cut a pause short: one more attempt now
            try:
                while self._queue or self._busy:
                    if self._thread is None or not self._thread.is_alive():  # a bug, never a hang
                        self._failed.extend((m, "lit_tf's metric sender thread stopped") for m in self._queue)
                        self._queue.clear()
                        break
                    self._cv.wait(1.0)
            finally:
                self._flushing -= 1
            failed, self._failed = self._failed, []
        return failed

    def drain(self, timeout_s: float = DRAIN_TIMEOUT_S) -> bool:
        """Wait until the points queued so far are in the store; give nothing up. Returns at once
        during an outage (training never waits for a store that is away) and after `timeout_s`.
        True when the queue is empty."""
        end = time.monotonic() + timeout_s
        with self._cv:
            while (self._queue or self._busy) and self._outage is None:
                if self._thread is None or not self._thread.is_alive() or (left := end - time.monotonic()) <= 0:
                    break
                self._cv.wait(min(left, 1.0))
            return not (self._queue or self._busy)

    @property
    def outage(self) -> str | None:
        return self._outage

    # ------------------------------------------------------------------------------ thread
    def _loop(self) -> None:
        failures = 0
        while True:
            with self._cv:
                while not self._queue:
                    self._cv.wait()
                n = min(len(self._queue), MAX_POINTS_PER_BATCH)
                batch = [self._queue.popleft() for _ in range(n)]
                self._busy = True
            error = None
            try:
                self.client.log_batch(self.run_id, metrics=batch)
            except Exception as e:  # anything: the thread must outlive every failure
                error = e
            with self._cv:
                self._busy = False
                if error is None:
                    if self._outage is not None:
                        log.warning("MLflow at %s takes metrics again; the points held back are being sent",
                                    self.where)
                    self._outage, failures = None, 0
                elif not is_transient(error):
                    why = f"refused by the store ({reason(error)})"
                    log.error("MLflow at %s refused %d metric points (steps %d-%d): %s", self.where, len(batch),
                              batch[0].step, batch[-1].step, reason(error))
                    self._failed.extend((m, why) for m in batch)
                elif self._flushing:  # the end of the run: no more waiting for the store
                    why = f"the store did not answer ({reason(error)})"
                    self._failed.extend((m, why) for m in batch)
                    self._failed.extend((m, why) for m in self._queue)
                    self._queue.clear()
                else:
                    self._queue.extendleft(reversed(batch))  # back at the head: order kept
                    if self._outage is None:
                        log.warning("MLflow at %s is unreachable (%s): metric points are held and sent again "
                                    "once it answers", self.where, reason(error))
                    self._outage = reason(error)
                    deadline = time.monotonic() + min(self.pause_s[0] * 2**failures, self.pause_s[1])
                    failures += 1
                    self._cv.notify_all()
                    while not self._flushing and (left := deadline - time.monotonic()) > 0:
                        self._cv.wait(left)  # new points do not cut the pause short; flush() does
                    continue
                self._cv.notify_all()
