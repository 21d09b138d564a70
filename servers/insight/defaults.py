"""The watch `neuralops up` creates so a fresh stack (and the demo) shows episodes."""

from __future__ import annotations

from neuralops.servers.insight.model import Watch
from neuralops.servers.insight.storage import SignalStore
from neuralops.servers.runtime.db import Database

DEFAULT_WATCH_NAME = "run-durations"
DEFAULT_WATCH_QUERY = "neuralops_workflow_last_run_duration_seconds"


def ensure_default_watch(db: Database) -> Watch:
    """Create the run-duration watch unless a watch of that name exists: every second
    (the local Prometheus scrapes every second), a 5-minute baseline, scored after 10
    points, closed after 30 normal seconds."""
    store = SignalStore(db)
    after = None
    while True:
        page = store.list_watches(200, after)
        for w in page:
            if w.name == DEFAULT_WATCH_NAME:
                return w
        if len(page) < 200 or page[-1].created_at is None:
            break
        after = (page[-1].created_at, page[-1].id)
    detector: dict[str, object] = {"window": 300, "min_points": 10, "close_after": 30}
    return store.create_watch(Watch("", DEFAULT_WATCH_NAME, DEFAULT_WATCH_QUERY, detector, 1.0))
