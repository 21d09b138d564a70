"""Counters of what happened to submitted runs, per sender.

``RunSender.stats()`` returns them as a dict. When ``prometheus_client`` is importable
(the server install has it; the plain client install does not) the same counts also go
to ``neuralops_client_runs_total{outcome=...}`` in its default registry.
"""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

OUTCOMES = (
    "delivered",  # stored by the server
    "spooled",  # written to the spool for later delivery
    "held",  # kept in memory because the spool could not be written
    "dead_lettered",  # refused for good, kept in the dead-letter store
    "dropped",  # lost: memory bound or spool cap exceeded, or unbuildable
    "replayed",  # delivered from the spool
    "damaged",  # spool records skipped as torn/corrupt
    "batches",  # BatchLogRuns calls that stored their batch
    "deferrals",  # times the worker stepped aside for an application running flat out
)


@cache
def _prometheus_counter() -> Any:
    try:
        from prometheus_client import Counter
    except ImportError:
        return None
    return Counter(
        "neuralops_client_runs",
        "Runs handled by the NeuralOps client sender, by outcome.",
        ["outcome"],
    )


class Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(OUTCOMES, 0)
        # Import prometheus_client (about 60 ms) now, on the thread making the sender,
        # not on its worker at the first count: there it held the GIL in the middle of
        # the application's run.
        _prometheus_counter()

    def add(self, outcome: str, n: int = 1) -> None:
        if n <= 0:
            return
        with self._lock:
            self._values[outcome] += n
        counter = _prometheus_counter()
        if counter is not None:
            counter.labels(outcome).inc(n)

    def get(self, outcome: str) -> int:
        return self._values[outcome]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)

    def after_fork(self) -> None:
        """A forked child counts its own runs from zero."""
        self._lock = threading.Lock()
        self._values = dict.fromkeys(OUTCOMES, 0)
