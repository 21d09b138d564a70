"""The batching queue between the graph's threads and the sender's worker.

Submitting never blocks: the queue is bounded by count, and a full queue hands the
item back to the caller (who spools it). The worker takes up to ``max_items`` at a
time; :func:`chunks` then cuts the built runs into batches bounded by count *and*
bytes, so a burst of big runs goes in more calls instead of one refused message. A
run bigger than the byte bound travels alone.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from neuralops.runhistory.v1 import runhistory_pb2 as pb

Item = pb.Run | Callable[[], pb.Run]
T = TypeVar("T")


class BatchQueue:
    """A bounded FIFO that also counts items not yet settled, for ``flush``."""

    def __init__(self, max_items: int) -> None:
        self._queue: queue.Queue[Item] = queue.Queue(maxsize=max_items)
        self._idle = threading.Condition()
        self._unsettled = 0

    def put(self, item: Item) -> bool:
        """Queue ``item``; False (and nothing queued) when the queue is full."""
        with self._idle:
            self._unsettled += 1
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.settle(1)
            return False
        return True

    def take(self, max_items: int, timeout_s: float) -> list[Item]:
        """Up to ``max_items`` items; waits up to ``timeout_s`` for the first."""
        try:
            items = [self._queue.get(timeout=timeout_s)]
        except queue.Empty:
            return []
        while len(items) < max_items:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return items

    def take_all(self) -> list[Item]:
        return self.take(1 << 62, 0)

    def qsize(self) -> int:
        return self._queue.qsize()

    def settle(self, n: int) -> None:
        """``n`` taken items are delivered, kept, or accounted as dropped."""
        with self._idle:
            self._unsettled -= n
            self._idle.notify_all()

    def wait_settled(self, timeout_s: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._unsettled <= 0, timeout_s)


def chunks(
    runs: Sequence[pb.Run], max_bytes: int, max_items: int, size: Callable[[pb.Run], int]
) -> Iterator[list[pb.Run]]:
    """Consecutive batches of at most ``max_items`` runs and ``max_bytes`` bytes (a
    single run over ``max_bytes`` is a batch of its own)."""
    batch: list[pb.Run] = []
    total = 0
    for run in runs:
        n = size(run)
        if batch and (total + n > max_bytes or len(batch) >= max_items):
            yield batch
            batch, total = [], 0
        batch.append(run)
        total += n
    if batch:
        yield batch
