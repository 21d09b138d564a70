"""RunHistory's domain values (no gRPC, no SQL, no request checks here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class RunContext:
    """Where and for whom a run ran, and its totals (issue 10): thread, checkpoint,
    config tags/metadata, user/session ids, usage totals, interrupts, truncation.
    ``usage`` and ``interrupts`` are JSON-ready (the RunUsage / Interrupt shape)."""

    thread_id: str = ""
    checkpoint_id: str = ""
    user_id: str = ""
    session_id: str = ""
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)
    interrupts: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)  # outside any node
    omitted_node_logs: int = 0
    truncated: bool = False


EMPTY_CONTEXT = RunContext()


@dataclass(frozen=True)
class RunFilter:
    """ListRuns' optional filters; empty means any."""

    thread_id: str = ""
    status: str = ""
    user_id: str = ""
    session_id: str = ""
    tag: str = ""


@dataclass(frozen=True)
class RunSummary:
    id: str
    wpk_id: str
    run_id: str
    status: str
    duration_ms: int
    created_at: datetime
    error: str
    context: RunContext


@dataclass(frozen=True)
class NewRun:
    """A run as a caller sends it. ``node_logs`` are JSON-ready dicts."""

    wpk_id: str
    run_id: str
    status: str
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    duration_ms: int = 0
    node_logs: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    context: RunContext | None = None

    @property
    def output_text(self) -> str | None:
        text = self.outputs.get("text")
        return text if isinstance(text, str) and text.strip() else None


@dataclass(frozen=True)
class StoredRun(NewRun):
    id: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    embedding_status: str = "skipped"


@dataclass(frozen=True)
class LogResult:
    id: str
    run_id: str
    created: bool
    created_at: datetime


@dataclass(frozen=True)
class SearchHit:
    id: str
    wpk_id: str
    run_id: str
    score: float
    text: str
