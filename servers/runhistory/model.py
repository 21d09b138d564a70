"""RunHistory's domain values and their validation (no gRPC, no SQL here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from neuralops.clients.enums import EMBEDDING_STATUS, RUN_STATUS
from neuralops.servers.runtime.errors import FieldViolation, InvalidArgument

RUN_STATUSES = RUN_STATUS.names
EMBEDDING_STATUSES = EMBEDDING_STATUS.names
MAX_ID_LENGTH = 200
MAX_NODE_LOGS = 10_000
MAX_BATCH = 500


MAX_TAGS = 64


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


def _check_id(value: str, name: str, out: list[FieldViolation]) -> None:
    if not value.strip():
        out.append(FieldViolation(name, "is required"))
    elif len(value) > MAX_ID_LENGTH:
        out.append(FieldViolation(name, f"is {len(value)} characters; at most {MAX_ID_LENGTH}"))


def run_violations(run: NewRun, prefix: str) -> list[FieldViolation]:
    """Everything wrong with one run, each naming its field under ``prefix``."""
    out: list[FieldViolation] = []
    _check_id(run.wpk_id, f"{prefix}.wpk_id", out)
    _check_id(run.run_id, f"{prefix}.run_id", out)
    if run.status not in RUN_STATUSES:
        names = ", ".join(RUN_STATUS.proto_names)
        out.append(FieldViolation(f"{prefix}.status", f"must be one of {names}"))
    if run.duration_ms < 0:
        out.append(FieldViolation(f"{prefix}.duration_ms", "must be >= 0"))
    if len(run.node_logs) > MAX_NODE_LOGS:
        out.append(FieldViolation(f"{prefix}.node_logs", f"has more than {MAX_NODE_LOGS} entries"))
    ctx = run.context
    if ctx is not None:
        for name in ("thread_id", "checkpoint_id", "user_id", "session_id"):
            value = getattr(ctx, name)
            if len(value) > MAX_ID_LENGTH:
                out.append(
                    FieldViolation(
                        f"{prefix}.{name}", f"is {len(value)} characters; at most {MAX_ID_LENGTH}"
                    )
                )
        if len(ctx.tags) > MAX_TAGS:
            out.append(FieldViolation(f"{prefix}.tags", f"has more than {MAX_TAGS} tags"))
        for i, tag in enumerate(ctx.tags[:MAX_TAGS]):
            if len(tag) > MAX_ID_LENGTH:
                out.append(FieldViolation(f"{prefix}.tags[{i}]", f"is longer than {MAX_ID_LENGTH}"))
        if ctx.omitted_node_logs < 0:
            out.append(FieldViolation(f"{prefix}.omitted_node_logs", "must be >= 0"))
    for i, node in enumerate(run.node_logs[:MAX_NODE_LOGS]):
        if not str(node.get("name", "")).strip():
            out.append(FieldViolation(f"{prefix}.node_logs[{i}].name", "is required"))
        if int(node.get("duration_ms", 0)) < 0:
            out.append(FieldViolation(f"{prefix}.node_logs[{i}].duration_ms", "must be >= 0"))
    return out


def validate_runs(runs: list[NewRun], field_name: str) -> None:
    """Raise InvalidArgument naming every bad field; ``field_name`` is ``run`` or ``runs``."""
    if field_name == "runs":
        if not runs:
            raise InvalidArgument.one("runs", "must hold at least one run")
        if len(runs) > MAX_BATCH:
            raise InvalidArgument.one("runs", f"holds {len(runs)} runs; at most {MAX_BATCH}")
        violations = [v for i, r in enumerate(runs) for v in run_violations(r, f"runs[{i}]")]
    else:
        violations = run_violations(runs[0], "run")
    if violations:
        raise InvalidArgument(violations)
