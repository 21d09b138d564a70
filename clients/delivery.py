"""Background delivery of runs: a bounded queue, batches, a spool when the service is away.

The graph's thread only calls :meth:`RunSender.submit`, which never blocks and never
raises: it puts the run on a bounded in-memory queue, or, if that is full, appends it
to the spool. One sender thread per process batches the queue into ``BatchLogRuns``.
When the service cannot be reached, batches go to the spool, and the sender replays
the spool when the service answers again (idempotency makes replays safe). At
interpreter exit whatever is still queued is delivered, or spooled.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from neuralops.clients import channels
from neuralops.clients.runhistory import SERVICE, default_address
from neuralops.clients.spool import Spool
from neuralops.runhistory.v1 import runhistory_pb2 as pb
from neuralops.runhistory.v1 import runhistory_pb2_grpc

log = logging.getLogger(__name__)

# The only answer that means "never send this again": the server validated the run
# and refused it. Anything else (UNAVAILABLE, CANCELLED by a server shutting down,
# DEADLINE_EXCEEDED, INTERNAL, even UNIMPLEMENTED from a wrong server) keeps the run.
_REFUSED = grpc.StatusCode.INVALID_ARGUMENT

Item = pb.Run | Callable[[], pb.Run]


class RunSender:
    """Delivers runs to one RunHistory address in the background."""

    def __init__(
        self,
        address: str | None = None,
        *,
        spool_dir: Path | None = None,
        max_queue: int = 10_000,
        batch_size: int = 200,
        timeout_s: float = 5.0,
        retry_s: float = 1.0,
        max_retry_s: float = 15.0,
    ) -> None:
        self.address = address or default_address()
        self.spool = Spool(spool_dir)
        self._queue: queue.Queue[Item] = queue.Queue(maxsize=max_queue)
        self._batch_size = batch_size
        self._timeout_s = timeout_s
        self._retry_s = retry_s
        self._max_retry_s = max_retry_s
        # One attempt per call here: the sender does its own backoff and spooling.
        self._stub = runhistory_pb2_grpc.RunHistoryServiceStub(
            channels.channel(self.address, SERVICE, attempts=1)
        )
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._inflight = 0
        self._down_until = 0.0
        self._backoff = retry_s
        self._spool_dirty = True  # replay whatever earlier processes left
        self.delivered = 0
        self.spooled = 0
        self._thread = threading.Thread(target=self._run, name="neuralops-sender", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # -------------------------------------------------------------- graph side

    def submit(self, item: Item) -> None:
        """Hand over a run (or a function building it, run on the sender thread).
        Never blocks, never raises."""
        try:
            with self._idle:
                self._inflight += 1
            self._queue.put_nowait(item)
        except queue.Full:
            self._spill([item])
        except Exception:
            log.exception("neuralops: could not queue a run")

    # -------------------------------------------------------------- sender side

    def _build(self, items: list[Item]) -> list[pb.Run]:
        runs = []
        for item in items:
            try:
                runs.append(item() if callable(item) else item)
            except Exception:
                log.exception("neuralops: could not build a run record; it is dropped")
        return runs

    def _spill(self, items: list[Item], runs: list[pb.Run] | None = None) -> None:
        try:
            built = runs if runs is not None else self._build(items)
            self.spool.append(built)
            self.spooled += len(built)
            self._spool_dirty = True
        except Exception:
            log.exception("neuralops: could not spool %d runs", len(items))
        finally:
            self._settle(len(items))

    def _settle(self, n: int) -> None:
        with self._idle:
            self._inflight -= n
            self._idle.notify_all()

    def _send(self, runs: list[pb.Run]) -> bool:
        """True when delivered; False when the service is away (caller spools)."""
        if not runs:
            return True
        try:
            self._stub.BatchLogRuns(pb.BatchLogRunsRequest(runs=runs), timeout=self._timeout_s)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
            if code != _REFUSED:
                self._mark_down(code)
                return False
            if len(runs) > 1:
                # One bad run fails a batch: deliver the others one by one.
                return all(self._send([r]) for r in runs)
            log.error(
                "neuralops: RunHistory refused a run (%s): %s",
                code.name,
                exc.details() if isinstance(exc, grpc.Call) else exc,
            )
            return True
        self.delivered += len(runs)
        self._down_until = 0.0
        self._backoff = self._retry_s
        return True

    def _mark_down(self, code: grpc.StatusCode) -> None:
        if self._down_until == 0.0:
            log.warning(
                "neuralops: RunHistory at %s unavailable (%s); spooling runs",
                self.address,
                code.name,
            )
        self._down_until = time.monotonic() + self._backoff
        self._backoff = min(self._max_retry_s, self._backoff * 2)

    def _replay(self) -> None:
        # Cleared before the claim: a run spooled while this replay runs sets it again,
        # so it is not left waiting for the next process.
        self._spool_dirty = False
        left = self.spool.claim()
        try:
            while left and self._replay_file(left[0]):
                Spool.done(left.pop(0))
        finally:
            # The service went away again (or reading failed): give every file back.
            for path in left:
                self.spool.release(path)
            if left:
                self._spool_dirty = True

    def _replay_file(self, path: Path) -> bool:
        batch: list[pb.Run] = []
        for run in Spool.read(path):
            batch.append(run)
            if len(batch) >= self._batch_size:
                if not self._send(batch):
                    return False
                batch = []
        return self._send(batch)

    def _drain(self, first: Item) -> list[Item]:
        items = [first]
        while len(items) < self._batch_size:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return items

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                first = None
            if first is None:
                if self._stop.is_set():
                    return
                if self._spool_dirty and time.monotonic() >= self._down_until:
                    self._replay_safely()
                continue
            items = self._drain(first)
            runs = self._build(items)
            if time.monotonic() < self._down_until:
                self._spill(items, runs)
                continue
            if self._spool_dirty:
                self._replay_safely()
            if time.monotonic() >= self._down_until and self._send(runs):
                self._settle(len(items))
            else:
                self._spill(items, runs)

    def _replay_safely(self) -> None:
        try:
            self._replay()
        except Exception:
            log.exception("neuralops: spool replay failed")

    # ---------------------------------------------------------------- control

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every submitted run is delivered or spooled."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._inflight > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def keep(self, runs: list[pb.Run]) -> None:
        """Spool runs now (durably) for later delivery by this or a later process."""
        self.spool.append(runs)
        self.spooled += len(runs)
        self._spool_dirty = True

    def replay_now(self) -> None:
        """Replay the spool on the caller's thread (tests, CLI)."""
        self._down_until = 0.0
        self._spool_dirty = True
        self._replay_safely()

    def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued (or spool it) and stop the thread."""
        if self._stop.is_set():
            return
        self.flush(timeout_s)
        self._stop.set()
        self._thread.join(timeout_s)
        if self._spool_dirty and time.monotonic() >= self._down_until:
            self._replay_safely()
        leftovers: list[Item] = []
        while True:
            try:
                leftovers.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if leftovers:
            self._spill(leftovers)


_senders: dict[str, RunSender] = {}
_senders_lock = threading.Lock()


def sender_for(address: str | None = None, **kwargs: Any) -> RunSender:
    """The process-wide sender for an address (started on first use, which also
    replays runs an earlier process left in the spool)."""
    addr = address or default_address()
    with _senders_lock:
        s = _senders.get(addr)
        if s is None or s._stop.is_set():
            s = RunSender(addr, **kwargs)
            _senders[addr] = s
        return s
