"""Prometheus metrics every server exports on /metrics (prometheus-client)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from prometheus_client import Counter, Gauge, Histogram

RPC_REQUESTS = Counter(
    "neuralops_rpc_requests_total", "gRPC calls handled.", ["service", "method", "code"]
)
RPC_LATENCY = Histogram(
    "neuralops_rpc_duration_seconds",
    "gRPC call latency, server side.",
    ["service", "method", "code"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
WORKFLOW_RUNS = Counter(
    "neuralops_workflow_runs_total", "Runs stored, by workflow and outcome.", ["wpk_id", "status"]
)
RUNS_ALREADY_STORED = Counter(
    "neuralops_runs_already_stored_total",
    "Runs sent again under a (wpk_id, run_id) already stored: retries and spool replays, "
    "or a run id reused for a different run (the first run is kept).",
)
WORKFLOW_RUN_DURATION = Histogram(
    "neuralops_workflow_run_duration_seconds",
    "Wall duration of stored runs, by workflow.",
    ["wpk_id"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
WORKFLOW_LAST_RUN_DURATION = Gauge(
    "neuralops_workflow_last_run_duration_seconds",
    "Wall duration of the most recently stored run, by workflow.",
    ["wpk_id"],
)
OUTBOX_BACKLOG = Gauge("neuralops_outbox_backlog", "Notices waiting in the outbox.")
OUTBOX_DELIVERED = Counter(
    "neuralops_outbox_delivered_total", "Outbox notices delivered.", ["topic"]
)
EMBEDDINGS = Counter("neuralops_embeddings_total", "Embedding attempts by outcome.", ["outcome"])
SIGNALS_CREATED = Counter(
    "neuralops_insight_signals_created_total", "Anomaly signals stored, by metric.", ["metric"]
)

MAX_WORKFLOW_LABELS = 200
OTHER = "_other"


class BoundedLabel:
    """Keeps a label's cardinality bounded: the first ``limit`` values pass, the
    rest are reported as ``_other`` so a flood of workflow ids cannot blow up
    Prometheus."""

    def __init__(self, limit: int = MAX_WORKFLOW_LABELS) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) < self._limit:
                self._seen.add(value)
                return value
        return OTHER


workflow_label = BoundedLabel()
metric_label = BoundedLabel()


def observe_runs(runs: Iterable[tuple[str, str, int]]) -> None:
    """Stored runs' (wpk_id, status, duration_ms), in the order stored: each label is
    looked up once per call, not once per run (a batch is mostly one workflow)."""
    labels: dict[str, str] = {}
    seconds: dict[str, list[float]] = {}
    counts: dict[tuple[str, str], int] = {}
    for wpk_id, status, duration_ms in runs:
        label = labels.get(wpk_id)
        if label is None:
            label = labels[wpk_id] = workflow_label(wpk_id)
        seconds.setdefault(label, []).append(duration_ms / 1000.0)
        counts[label, status] = counts.get((label, status), 0) + 1
    for (label, status), n in counts.items():
        WORKFLOW_RUNS.labels(label, status).inc(n)
    for label, durations in seconds.items():
        histogram = WORKFLOW_RUN_DURATION.labels(label)
        for s in durations:
            histogram.observe(s)
        WORKFLOW_LAST_RUN_DURATION.labels(label).set(durations[-1])


def track_backlog(read: Callable[[], int]) -> None:
    """Read the outbox backlog at scrape time (a failed read reports -1)."""

    def safe() -> float:
        try:
            return float(read())
        except Exception:
            return -1.0

    OUTBOX_BACKLOG.set_function(safe)


ANOMALY_SCORE = Gauge(
    "neuralops_anomaly_score",
    "Latest anomaly score of each watched series (Insight watches).",
    ["watch_id", "series"],
)
ANOMALY_OPEN = Gauge(
    "neuralops_anomaly_open_episodes",
    "1 while the series has an open anomaly episode, by watch and series.",
    ["watch_id", "series"],
)
series_label = BoundedLabel(10_000)


def observe_anomaly(watch_id: str, series: str, score: float | None, is_open: bool) -> None:
    label = series_label(f"{watch_id}/{series}")
    name = series if label != OTHER else OTHER
    if score is not None:
        ANOMALY_SCORE.labels(watch_id, name).set(score)
    ANOMALY_OPEN.labels(watch_id, name).set(1.0 if is_open else 0.0)
