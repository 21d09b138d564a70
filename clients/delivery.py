"""Background delivery of runs: a run is delivered, or kept aside with its reason.

The parts, split like OpenTelemetry's ``BatchSpanProcessor``:

- :class:`~neuralops.clients.batching.BatchQueue`: the graph's thread only calls
  :meth:`RunSender.submit`, which never blocks and never raises;
- one worker thread per sender (here) waits up to ``linger_s`` (0.2 s) for a batch
  to fill, builds and serializes each run once (pausing between runs so the graph's
  threads are not kept waiting for the GIL), and sends them in batches bounded by
  count and bytes, through an :class:`~neuralops.clients.exporter.Exporter`
  (``BatchLogRuns`` over gRPC by default), with a short deadline (1 s + 1 s per
  2 MiB by default); :meth:`RunSender.flush` and ``close`` cut the wait short;
- :class:`~neuralops.clients.spool.Spool`: runs the service cannot take *now*
  (transient failure) are fsynced there and replayed when it answers again;
- :class:`~neuralops.clients.deadletter.DeadLetters`: a batch the server refuses for
  good is split in halves until the refused runs are alone; each such run is kept
  there with the status and message, counted, logged once, and never retried
  automatically (``neuralops spool retry`` does it on demand).

When the spool cannot be written (full, read-only, no permission) runs are held in
memory, bounded by ``max_memory_bytes``, and both the service and the disk are
retried; past the bound the **oldest** held runs are dropped, each one counted
(``stats()["dropped"]``) and logged. A sender is safe across ``os.fork()``: the child
starts its own worker and connection on first use.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
from neuralops.clients.batching import (
    CATCH_UP_SLICE_S,
    SLICE_S,
    BatchQueue,
    Encoded,
    Item,
    busy_after,
    chunks,
    pace,
)
from neuralops.clients.deadletter import DeadLetters
from neuralops.clients.exporter import Exporter, ExportError, GrpcExporter
from neuralops.clients.runhistory import default_address
from neuralops.clients.spool import DEFAULT_MAX_BYTES, Spool
from neuralops.clients.stats import Counters
from neuralops.runhistory.v1 import runhistory_pb2 as pb

__all__ = ["Item", "RunSender", "Senders", "sender_for"]

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# How long the worker steps aside at a time for an application running Python flat out,
# how often it looks whether it still is, and how long a run may wait in all (like
# OpenTelemetry's batch schedule delay: a run reaches the server within about 5 s
# even when the application never lets go of the GIL). Each look takes the GIL from
# the application once (a forced switch): 5 a second, not 20, moved the 3-node
# benchmark graph's p99 from 1.14 to 1.01 ms (bare 0.84 ms); resuming after the
# application goes idle takes up to that much longer.
MAX_DEFER_S = 1.0
DEFER_POLL_S = 0.2
MAX_DELAY_S = 5.0
# How often the worker looks at the spool when nothing told it to (see _start).
SPOOL_LOOK_S = 30.0


# How many times this process was forked off (counted in the child): a sender made
# before a fork starts its own worker in the child on first use. A module count read
# on every submit, instead of os.getpid(), a system call on the graph's thread.
_forks = 0


def _count_fork() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_count_fork)


# SIGTERM (how Kubernetes, Docker and systemd stop a process) ends a Python process
# without running its exit handlers, so runs still queued would be lost. Unless the
# application handles SIGTERM itself, the first sender made on the main thread installs
# a handler that closes every sender (deliver or spool, about this long and at most
# twice that) and then lets SIGTERM end the process as it would have.
# NEURALOPS_FLUSH_ON_SIGTERM=0 turns it off.
SIGTERM_FLUSH_S = 5.0
_live: weakref.WeakSet[RunSender] = weakref.WeakSet()
_sigterm_installed = False


def _flush_on_sigterm() -> None:
    global _sigterm_installed
    if _sigterm_installed or os.environ.get("NEURALOPS_FLUSH_ON_SIGTERM", "1").strip() == "0":
        return
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers are set on the main thread only; a later sender may
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return  # the application handles SIGTERM (it should close the sender)
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # pragma: no cover - no signals here
        return
    _sigterm_installed = True


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Close the senders on a thread of their own and return at once (the interrupted
    main thread may hold a lock the close needs: waiting for it here could hang); that
    thread ends the process with SIGTERM, as the default action would have, when the
    senders are closed or after ``2 * SIGTERM_FLUSH_S`` at most. A second SIGTERM ends
    it at once."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    senders = [s for s in list(_live) if s._forks == _forks]

    def die() -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    def close_all() -> None:
        log.info(
            "neuralops: SIGTERM: delivering or spooling the runs of %d sender(s)", len(senders)
        )
        for sender in senders:
            try:
                # (one the main thread is closing already, a multiprocessing child's
                # finalizer say, is waited for: its close holds the lock)
                sender.close(SIGTERM_FLUSH_S)
            except Exception:
                log.exception("neuralops: sender close on SIGTERM failed")
        die()

    backstop = threading.Timer(SIGTERM_FLUSH_S * 2, die)
    backstop.daemon = True
    backstop.start()
    threading.Thread(target=close_all, name="neuralops-sigterm", daemon=True).start()


def _wait_for_closing() -> None:
    """At exit, after every sender's own close: wait for a close another thread is still
    doing (the SIGTERM handler's), or the interpreter would end it half way."""
    for sender in list(_live):
        if sender._forks == _forks:
            with sender._close_lock:
                pass


atexit.register(_wait_for_closing)  # first registered, so run last


def _close_at_multiprocessing_exit(sender: RunSender) -> None:
    """A multiprocessing child (fork, forkserver, spawn) ends with ``os._exit``: no
    atexit. Its exit finalizers run (a Process, Pool workers on close() + join()), so a
    sender used in one closes there, whether it was made before the fork or in the
    child."""
    mp = sys.modules.get("multiprocessing")
    if mp is None or mp.parent_process() is None:
        return
    import multiprocessing.util

    multiprocessing.util.Finalize(sender, sender.close, exitpriority=10)


def _size(run: pb.Run) -> int:
    return run.ByteSize()


def _encoded_size(e: Encoded) -> int:
    return e.size


class RunSender:
    """Delivers runs to one RunHistory address in the background."""

    def __init__(
        self,
        address: str | None = None,
        *,
        spool_dir: Path | None = None,
        dead_letter_dir: Path | None = None,
        exporter: Exporter | None = None,
        max_queue: int = 10_000,
        batch_size: int = 200,
        batch_bytes: int = 4 * MIB,
        linger_s: float = 0.2,
        timeout_s: float = 1.0,
        bytes_per_s: float = 2 * MIB,  # the server converts a big run at a few MiB/s
        retry_s: float = 1.0,
        max_retry_s: float = 15.0,
        max_memory_bytes: int = 64 * MIB,
        max_spool_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.address = address or default_address()
        self.spool = Spool(spool_dir, max_bytes=max_spool_bytes)
        self.dead_letters = DeadLetters(
            dead_letter_dir or self.spool.directory.parent / "deadletter"
        )
        self.exporter: Exporter = exporter or GrpcExporter(self.address)
        self.counters = Counters()
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._batch_bytes = batch_bytes
        self._linger_s = linger_s
        self._timeout_s = timeout_s
        self._bytes_per_s = bytes_per_s
        self._retry_s = retry_s
        self._max_retry_s = max_retry_s
        self._max_memory_bytes = max_memory_bytes
        self._before_close: list[Any] = []
        self._start()
        atexit.register(self.close)
        _live.add(self)
        _flush_on_sigterm()
        _close_at_multiprocessing_exit(self)

    def _start(self) -> None:
        self._forks = _forks
        self._queue = BatchQueue(self._max_queue)
        self._lock = threading.Lock()
        self._held: deque[pb.Run] = deque()
        self._held_bytes = 0
        self._held_retrying = 0
        self._next_held_try = 0.0
        self._disk_error: str | None = None
        self._down_until = 0.0
        self._down_since = 0.0
        self._backoff = self._retry_s
        self._spool_dirty = True  # replay whatever earlier processes left
        # When to look at the spool again though nothing was spooled here: a file a
        # sibling process left when it died, or one the disk would not let us claim.
        self._next_spool_look = time.monotonic() + SPOOL_LOOK_S
        self._closed = False
        self._close_lock = threading.RLock()
        self._late_warned = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="neuralops-sender", daemon=True)
        self._thread.start()

    def _ensure_process(self) -> None:
        """In a forked child the parent's worker does not exist: start a fresh one
        (its own lock, queue, channel and spool file) on first use."""
        if self._forks != _forks:
            self.spool.after_fork()
            self.dead_letters.after_fork()
            self.exporter.reset()
            self.counters.after_fork()
            self._start()
            _close_at_multiprocessing_exit(self)

    # ---------------------------------------------------------------- counters

    @property
    def delivered(self) -> int:
        return self.counters.get("delivered")

    @property
    def spooled(self) -> int:
        return self.counters.get("spooled")

    def stats(self) -> dict[str, int]:
        """Counts by outcome (see :mod:`neuralops.clients.stats`) plus the runs now
        queued and now held in memory."""
        out = self.counters.snapshot()
        out["queued_now"] = self._queue.qsize()
        out["held_now"] = len(self._held) + self._held_retrying
        return out

    # -------------------------------------------------------------- graph side

    def submit(self, item: Item) -> None:
        """Hand over a run (or a function building it, run on the sender thread).
        Never blocks on the network, never raises."""
        try:
            if self._forks != _forks:  # inline: submit runs on the graph's thread
                self._ensure_process()
            if self._closed:
                if not self._late_warned:
                    self._late_warned = True
                    log.warning(
                        "neuralops: runs submitted after close() are delivered on the "
                        "caller's thread (or spooled if the service is down)"
                    )
                self._handle([item])
            elif not self._queue.put(item):
                self._keep(self._build([item]))  # queue full: straight to the spool
        except Exception:
            log.exception("neuralops: could not take a run")

    # ------------------------------------------------------------ worker side

    def _run(self) -> None:
        while True:
            items = self._queue.take(self._batch_size, 0.1, self._linger_s)
            if items:
                try:
                    self._handle(items)
                except Exception:  # the worker must survive anything
                    log.exception("neuralops: sender failed on %d run(s)", len(items))
                finally:
                    self._queue.settle(len(items))
            elif self._stop.is_set():
                return
            self._housekeeping()

    def _housekeeping(self) -> None:
        try:
            now = time.monotonic()
            if self._held and now >= self._next_held_try:
                self._next_held_try = now + self._retry_s
                self._retry_held()
            if now >= self._next_spool_look:
                self._next_spool_look = now + SPOOL_LOOK_S
                self._spool_dirty = True
            if self._spool_dirty and not self._down():
                self._replay()
        except Exception:
            log.exception("neuralops: sender housekeeping failed")

    def _build(self, items: Iterable[Item]) -> list[pb.Run]:
        runs = []
        for item in items:
            try:
                run = item() if callable(item) else item
            except Exception:
                self.counters.add("dropped")
                log.exception("neuralops: could not build a run record; it is dropped")
                continue
            if isinstance(run, pb.Run):
                runs.append(run)
            else:  # a builder's bug must not take the runs batched with it down too
                self.counters.add("dropped")
                log.error("neuralops: a run builder returned %s, not a Run; dropped", type(run))
        return runs

    def _encode(self, items: Iterable[Item]) -> list[Encoded]:
        """Build and serialize each run once, pausing between runs for the graph."""
        out = []
        since = time.perf_counter()
        behind = self._behind()
        slice_s = CATCH_UP_SLICE_S if behind else SLICE_S
        # Step aside only on the worker (a caller's thread: submit after close, close,
        # never waits for the application) and only until the batch's oldest run has
        # waited MAX_DELAY_S.
        may_defer = not behind and threading.current_thread() is self._thread
        defer_until = self._queue.taken_oldest + MAX_DELAY_S
        for item in items:
            for run in self._build((item,)):
                try:
                    out.append(Encoded.of(run))
                except Exception:  # e.g. a field protobuf cannot serialize
                    self.counters.add("dropped")
                    log.exception(
                        "neuralops: run %s/%s cannot be serialized; it is dropped",
                        run.wpk_id,
                        run.run_id,
                    )
            since, busy = pace(since, slice_s)
            if busy and may_defer and not self._closed and time.monotonic() < defer_until:
                self._yield_to_busy_app(defer_until)
                since = time.perf_counter()
        return out

    def _behind(self) -> bool:
        return self._queue.qsize() > self._max_queue // 4

    def _yield_to_busy_app(self, until: float) -> None:
        """The application is running Python flat out (a loop of invokes that never
        waits): step aside for up to ``MAX_DEFER_S`` at a time rather than take the GIL
        from it every switch interval. Work resumes as soon as the GIL comes back quickly
        (the application waits on I/O, as agents do), a flush or close asks, the queue is
        a quarter full (then the worker catches up with longer turns), or ``until`` (a
        run queued ``MAX_DELAY_S`` ago must go)."""
        deadline = min(time.monotonic() + MAX_DEFER_S, until)
        self.counters.add("deferrals")
        while (
            time.monotonic() < deadline
            and not self._behind()
            and not self._queue.hurried()
            and not self._stop.is_set()
        ):
            started = time.perf_counter()
            self._queue.wait_unless_hurried(DEFER_POLL_S)
            if time.perf_counter() - started - DEFER_POLL_S < busy_after():
                return  # the GIL came straight back: the application is idle now

    def _handle(self, items: Sequence[Item]) -> None:
        if self._down():
            self._keep(self._build(items))
            return
        self._keep(self._send_runs(items))

    def _deadline(self, batch: Sequence[Encoded]) -> float:
        return self._timeout_s + sum(map(_encoded_size, batch)) / self._bytes_per_s

    def _send_runs(self, items: Sequence[Item]) -> list[pb.Run]:
        """Build, serialize and send; the runs a transient failure left undelivered."""
        return [e.run for e in self._send(self._encode(items))]

    def _send(self, encoded: Sequence[Encoded]) -> list[Encoded]:
        """Send in bounded batches; returns the runs left undelivered by a transient
        failure (the caller keeps them). Refused runs are dead-lettered."""
        batches = list(chunks(encoded, self._batch_bytes, self._batch_size, _encoded_size))
        for i, batch in enumerate(batches):
            left = batch if self._down() else self._send_isolating(batch)
            if left:
                return left + [r for b in batches[i + 1 :] for r in b]
        return []

    def _send_isolating(self, batch: list[Encoded]) -> list[Encoded]:
        try:
            self.exporter.export(batch, self._deadline(batch))
        except ExportError as err:
            if err.transient:
                self._mark_down(err)
                return batch
            if len(batch) == 1:
                self._dead_letter(batch[0].run, err)
                return []
            # Refused for good: halve until the refused runs are alone.
            mid = len(batch) // 2
            left = self._send_isolating(batch[:mid])
            if left:
                return left + batch[mid:]
            return self._send_isolating(batch[mid:])
        except Exception as exc:  # an exporter bug must not block delivery
            log.exception("neuralops: exporter failed")
            if len(batch) == 1:
                self._dead_letter(
                    batch[0].run, ExportError(grpc.StatusCode.UNKNOWN, repr(exc), transient=False)
                )
                return []
            return self._send_isolating(batch[: len(batch) // 2]) + self._send_isolating(
                batch[len(batch) // 2 :]
            )
        self.counters.add("delivered", len(batch))
        self.counters.add("batches")
        self._mark_up()
        return []

    def _dead_letter(self, run: pb.Run, err: ExportError) -> None:
        try:
            self.dead_letters.add(run, err.code.name, err.message)
        except OSError as exc:
            self.counters.add("dropped")
            log.error(
                "neuralops: run %s/%s refused (%s) and the dead-letter store cannot be "
                "written (%s): the run is dropped",
                run.wpk_id,
                run.run_id,
                err,
                exc,
            )
            return
        self.counters.add("dead_lettered")
        log.error(
            "neuralops: RunHistory refused run %s/%s for good (%s: %.300s); kept in %s "
            "(`neuralops spool status`), not retried automatically",
            run.wpk_id,
            run.run_id,
            err.code.name,
            err.message,
            self.dead_letters.directory,
        )

    def _down(self) -> bool:
        return time.monotonic() < self._down_until

    def _mark_down(self, err: ExportError) -> None:
        if self._down_since == 0.0:
            self._down_since = time.monotonic()
            log.warning(
                "neuralops: RunHistory at %s cannot take runs now (%s); spooling them",
                self.address,
                err,
            )
        wait = max(self._backoff, err.retry_after_s or 0.0)
        self._down_until = time.monotonic() + wait
        self._backoff = min(self._max_retry_s, self._backoff * 2)

    def _mark_up(self) -> None:
        if self._down_since:
            log.info(
                "neuralops: RunHistory at %s answers again after %.1f s",
                self.address,
                time.monotonic() - self._down_since,
            )
        self._down_since = 0.0
        self._down_until = 0.0
        self._backoff = self._retry_s

    # ------------------------------------------------------ spool and memory

    def _keep(self, runs: list[pb.Run]) -> bool:
        """Spool runs, or hold them in memory if the disk refuses. False when one of
        *these* runs had to be dropped (memory bound)."""
        if not runs:
            return True
        if not self._held:  # while runs are held the disk is retried on a timer
            try:
                dropped = self.spool.append(runs)
            except OSError as exc:
                self._disk_failed(exc)
            else:
                self._disk_ok()
                self.counters.add("spooled", len(runs))
                self.counters.add("dropped", dropped)
                self._spool_dirty = True
                return True
        return self._hold(runs)

    def _disk_failed(self, exc: OSError) -> None:
        text = f"{type(exc).__name__}: {exc}"
        if self._disk_error is None:
            log.error(
                "neuralops: spool %s cannot be written (%s); holding runs in memory "
                "(up to %d bytes, then dropping the oldest) and retrying",
                self.spool.directory,
                text,
                self._max_memory_bytes,
            )
        self._disk_error = text

    def _disk_ok(self) -> None:
        if self._disk_error is not None:
            log.info("neuralops: spool %s writable again", self.spool.directory)
        self._disk_error = None

    def _hold(self, runs: list[pb.Run], front: bool = False) -> bool:
        ids = {id(r) for r in runs}
        lost_mine = False
        dropped = 0
        with self._lock:
            if front:
                self._held.extendleft(reversed(runs))
            else:
                self._held.extend(runs)
            self._held_bytes += sum(map(_size, runs))
            while self._held and self._held_bytes > self._max_memory_bytes:
                old = self._held.popleft()
                self._held_bytes -= _size(old)
                dropped += 1
                lost_mine = lost_mine or id(old) in ids
        if not front:
            self.counters.add("held", len(runs))
        if dropped:
            self.counters.add("dropped", dropped)
            log.error(
                "neuralops: %d run(s) dropped: the spool cannot be written and the memory "
                "bound (%d bytes) is full (policy: drop oldest)",
                dropped,
                self._max_memory_bytes,
            )
        return not lost_mine

    def _retry_held(self) -> None:
        with self._lock:
            runs = list(self._held)
            self._held.clear()
            self._held_bytes = 0
            self._held_retrying = len(runs)
        try:
            left = runs if self._down() else self._send_runs(runs)
            if not left:
                return
            try:
                dropped = self.spool.append(left)
            except OSError as exc:
                self._disk_failed(exc)
                self._hold(left, front=True)
            else:
                self._disk_ok()
                self.counters.add("spooled", len(left))
                self.counters.add("dropped", dropped)
                self._spool_dirty = True
        finally:
            self._held_retrying = 0

    def _replay(self) -> None:
        # Cleared before the claim: a run spooled while this replay runs sets it again.
        self._spool_dirty = False
        files = self.spool.claim()
        if self.spool.unclaimable:  # the disk refused a rename: look again later
            self._next_spool_look = min(self._next_spool_look, time.monotonic() + self._retry_s)
        for i, path in enumerate(files):
            if self._down():
                for rest in files[i:]:
                    self.spool.release(rest)
                self._spool_dirty = True
                return
            try:
                finished = self._replay_file(path)
            except OSError as exc:  # unreadable file: the next ones still go
                log.error("neuralops: cannot read spool file %s: %s", path, exc)
                self.spool.release(path)
                continue
            if finished:
                self.spool.done(path)
            else:
                self.spool.release(path)
                self._spool_dirty = True

    def _replay_file(self, path: Path) -> bool:
        """Send one spooled file; True when it may go. When a transient failure stops
        it part way, what is left is spooled anew (fsynced before the file goes), so the
        next replay starts where this one stopped: a server that keeps failing part way
        through a big spool is not sent its first half again and again. False (the file
        kept whole) only if the disk refuses that."""
        from neuralops.clients.framing import ReadStats

        stats = ReadStats()
        runs = list(Spool.read(path, stats))
        self.counters.add("damaged", stats.skipped)
        step = max(1, self._batch_size)
        for start in range(0, len(runs), step):
            self._pump()  # fresh runs are not kept waiting behind a long replay
            part = runs[start : start + step]
            before = self.delivered
            left = self._send_runs(part)
            self.counters.add("replayed", self.delivered - before)
            if left:
                try:
                    dropped = self.spool.append(left + runs[start + step :])
                except OSError:
                    return False
                self.counters.add("dropped", dropped)
                self._spool_dirty = True
                return True
        return True

    def _pump(self) -> None:
        if threading.current_thread() is not self._thread:
            return
        items = self._queue.take(self._batch_size, 0)
        if items:
            try:
                self._handle(items)
            finally:
                self._queue.settle(len(items))

    # ---------------------------------------------------------------- control

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every submitted run is delivered, spooled, held or dead-lettered."""
        self._ensure_process()
        return self._queue.wait_settled(timeout_s)

    def keep(self, runs: list[pb.Run]) -> bool:
        """Keep runs now (spool, or memory if the disk refuses) for later delivery by
        this or a later process. False when one of them had to be dropped."""
        self._ensure_process()
        return self._keep(list(runs))

    def replay_now(self) -> None:
        """Replay the spool on the caller's thread (tests, CLI)."""
        self._ensure_process()
        self._down_until = 0.0
        try:
            self._replay()
        except Exception:
            log.exception("neuralops: spool replay failed")

    def before_close(self, callback: Any) -> None:
        """Call ``callback()`` when this sender closes, before it delivers what is
        queued (the LangGraph hook hands over runs still open)."""
        self._before_close.append(callback)

    def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued (or spool it) and stop the worker. Runs submitted
        later are delivered synchronously (or spooled)."""
        if self._forks != _forks:
            return
        with self._close_lock:  # a second close (at exit, on SIGTERM) waits for the first
            if not self._closed:
                self._close(timeout_s)

    def _close(self, timeout_s: float) -> None:
        for callback in self._before_close:
            try:
                callback()
            except Exception:
                log.exception("neuralops: a close callback failed")
        self._closed = True
        atexit.unregister(self.close)
        self.flush(timeout_s)
        self._stop.set()
        self._thread.join(timeout_s)
        leftovers = self._queue.take_all()
        if leftovers:
            self._handle(leftovers)
            self._queue.settle(len(leftovers))
        if self._held:
            self._next_held_try = 0.0
            self._retry_held()
        if self._spool_dirty and not self._down():
            self.replay_now()
        if self._held:
            log.error(
                "neuralops: %d run(s) still in memory at close (spool not writable, "
                "service not reachable): they are lost",
                len(self._held),
            )


class Senders:
    """Senders by address. The module holds one explicit default instance; a forked
    child starts with none (it must not use the parent's threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_address: dict[str, RunSender] = {}

    def get(self, address: str | None = None, **kwargs: Any) -> RunSender:
        addr = address or default_address()
        with self._lock:
            s = self._by_address.get(addr)
            if s is None or s._closed:
                s = RunSender(addr, **kwargs)
                self._by_address[addr] = s
            return s

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._by_address = {}


DEFAULT = Senders()
os.register_at_fork(after_in_child=DEFAULT.after_fork_in_child)


def sender_for(address: str | None = None, **kwargs: Any) -> RunSender:
    """The process-wide sender for an address (started on first use, which also
    replays runs an earlier process left in the spool)."""
    return DEFAULT.get(address, **kwargs)
