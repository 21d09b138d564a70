"""Registry domain values."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Workflow:
    workflow_id: str
    name: str = ""
    description: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    latest_run_id: str = ""
    latest_run_status: str = ""
    latest_run_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class RunNotice:
    workflow_id: str
    run_id: str
    row_id: str
    status: str
    created_at: datetime


@dataclass(frozen=True)
class NotifyResult:
    updated: bool
    workflow_created: bool
    latest_run_id: str


@dataclass(frozen=True)
class WorkflowRun:
    """A run as RunHistory's ListRuns summarises it."""

    id: str
    run_id: str
    status: str
    duration_ms: int
    created_at: datetime
    thread_id: str = ""
