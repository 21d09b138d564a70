"""The batching queue between the graph's threads and the sender's worker.

Submitting never blocks: the queue is bounded by count, and a full queue hands the
item back to the caller (who spools it). The worker takes up to ``max_items`` at a
time, lingering a little for a batch to fill (like OpenTelemetry's
``BatchSpanProcessor`` and its schedule delay) unless a flush is waiting;
:func:`chunks` then cuts the built runs into batches bounded by count *and* bytes, so
a burst of big runs goes in more calls instead of one refused message. A run bigger
than the byte bound travels alone.

Each built run is serialized once (:class:`Encoded`): its bytes give its size for the
batching and the deadline, and the request is the concatenation of its runs' bytes.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from neuralops.runhistory.v1 import runhistory_pb2 as pb

Item = pb.Run | Callable[[], pb.Run]
T = TypeVar("T")


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# The key of BatchLogRunsRequest.runs on the wire (field number, wire type 2).
_RUNS_KEY = _varint(pb.BatchLogRunsRequest.DESCRIPTOR.fields_by_name["runs"].number << 3 | 2)


@dataclass(frozen=True, slots=True)
class Encoded:
    """A run and its bytes as one entry of ``BatchLogRunsRequest.runs``.

    Protobuf's wire format makes a message the concatenation of its fields, and a
    repeated field appends: ``b"".join(e.payload for e in batch)`` *is* the serialized
    request holding those runs, so a batch is never serialized again (the varint
    framing is protobuf's documented encoding, five lines rather than an internal API).
    """

    run: pb.Run
    payload: bytes

    @classmethod
    def of(cls, run: pb.Run) -> Encoded:
        body = run.SerializeToString()
        return cls(run, _RUNS_KEY + _varint(len(body)) + body)

    @property
    def size(self) -> int:
        return len(self.payload)


class BatchQueue:
    """A bounded FIFO that also counts items not yet settled, for ``flush``.

    ``put`` runs on the graph's thread once per run, so it takes no Python-level lock
    or condition: a C ``SimpleQueue`` holds the items and a plain lock guards the count
    (``queue.Queue.put`` costs about 2 µs; this about a quarter of that). With several
    threads putting at once the bound may be passed by a few items."""

    def __init__(self, max_items: int) -> None:
        self._max = max_items
        # Each item with the monotonic time it was queued.
        self._queue: queue.SimpleQueue[tuple[float, Item]] = queue.SimpleQueue()
        # When the oldest item of the last batch taken was queued.
        self.taken_oldest = 0.0
        self._count = threading.Lock()
        self._puts = 0  # items ever queued (under _count)
        self._idle = threading.Condition()
        self._settled = 0  # items ever taken and settled (under _idle)
        self._flushing = 0
        self._wake = threading.Event()
        self._flush_wanted = threading.Event()
        self._fill_to = 1 << 62

    def put(self, item: Item) -> bool:
        """Queue ``item``; False (and nothing queued) when the queue is full."""
        q = self._queue
        if q.qsize() >= self._max:
            return False
        with self._count:
            self._puts += 1
        q.put((time.monotonic(), item))
        if q.qsize() >= self._fill_to:
            self._wake.set()
        return True

    @property
    def _unsettled(self) -> int:
        return self._puts - self._settled

    def take(self, max_items: int, timeout_s: float, linger_s: float = 0.0) -> list[Item]:
        """Up to ``max_items`` items; waits up to ``timeout_s`` for the first, then up
        to ``linger_s`` more for the batch to fill (cut short by :meth:`hurry`)."""
        try:
            first = self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return []
        self.taken_oldest = first[0]
        items = [first[1]]
        self._drain(items, max_items)
        if len(items) < max_items and linger_s > 0 and not self._flushing:
            self._fill_to = max_items - len(items)
            self._wake.clear()
            # Re-check after clearing: a put between the drain and the clear is not missed.
            if self._queue.qsize() < self._fill_to and not self._flushing:
                self._wake.wait(linger_s)
            self._fill_to = 1 << 62
            self._drain(items, max_items)
        return items

    def _drain(self, items: list[Item], max_items: int) -> None:
        while len(items) < max_items:
            try:
                items.append(self._queue.get_nowait()[1])
            except queue.Empty:
                break

    def take_all(self) -> list[Item]:
        return self.take(1 << 62, 0)

    def qsize(self) -> int:
        return self._queue.qsize()

    def hurry(self) -> None:
        """Stop lingering now (a flush or close is waiting)."""
        self._wake.set()

    def hurried(self) -> bool:
        return self._flushing > 0

    def wait_unless_hurried(self, timeout_s: float) -> None:
        """Sleep ``timeout_s`` (without the GIL), or less if a flush starts."""
        self._flush_wanted.wait(timeout_s)

    def settle(self, n: int) -> None:
        """``n`` taken items are delivered, kept, or accounted as dropped."""
        with self._idle:
            self._settled += n
            self._idle.notify_all()

    def wait_settled(self, timeout_s: float) -> bool:
        with self._idle:
            self._flushing += 1
            self._flush_wanted.set()
        self.hurry()
        try:
            with self._idle:
                return self._idle.wait_for(lambda: self._unsettled <= 0, timeout_s)
        finally:
            with self._idle:
                self._flushing -= 1
                if not self._flushing:
                    self._flush_wanted.clear()


def chunks(
    items: Sequence[T], max_bytes: int, max_items: int, size: Callable[[T], int]
) -> Iterator[list[T]]:
    """Consecutive batches of at most ``max_items`` items and ``max_bytes`` bytes (a
    single item over ``max_bytes`` is a batch of its own)."""
    batch: list[T] = []
    total = 0
    for item in items:
        n = size(item)
        if batch and (total + n > max_bytes or len(batch) >= max_items):
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += n
    if batch:
        yield batch


# The worker gives the GIL back after about this much work, so a graph thread waiting
# for it is held up by at most one short slice, not by a whole batch (nor by the 5 ms
# switch interval). Measured on the 3-node benchmark graph: 0.2 ms slices put the hook's
# p99 at 1.5-2.0 ms, 0.05 ms slices at 1.15-1.4 ms (bare graph: 0.72 ms).
SLICE_S = 0.00005
# When the queue is a quarter full (a loop that never waits keeps the graph's thread on
# the GIL, and the worker gets a turn only every switch interval), turns grow so the
# worker catches up instead of letting the queue overflow: latency is traded for
# throughput only when memory would otherwise run out.
CATCH_UP_SLICE_S = 0.001


def busy_after() -> float:
    """Getting the GIL back after a pause took longer than this: another thread is
    running Python (a loop that never waits holds it until the switch interval, 5 ms
    unless the application changed it, forces it to let go). A false alarm on a loaded
    machine costs a little delivery latency, bounded by the run's MAX_DELAY_S."""
    return 0.2 * sys.getswitchinterval()


def pace(since: float, slice_s: float = SLICE_S) -> tuple[float, bool]:
    """Give the GIL back if this slice of work is over. Returns when the new slice
    began, and whether the application looked busy (the GIL was slow to come back)."""
    now = time.perf_counter()
    if now - since < slice_s:
        return since, False
    time.sleep(0)  # lets a thread waiting for the GIL run
    after = time.perf_counter()
    return after, after - now > busy_after()
