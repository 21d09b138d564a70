"""Domain exceptions. Domain code raises these; one interceptor maps them to gRPC
status codes (:mod:`neuralops.servers.runtime.interceptors`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One invalid request field, named by its path (``run.wpk_id``, ``runs[3].status``)."""

    field: str
    description: str


class DomainError(Exception):
    """Base of every error the API reports with a specific status code."""

    reason: str = "UNKNOWN"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class InvalidArgument(DomainError):
    """The request is malformed; ``violations`` name the fields."""

    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation], *, reason: str | None = None) -> None:
        self.violations = violations
        message = "; ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(message, reason=reason)

    @classmethod
    def one(cls, field: str, description: str, *, reason: str | None = None) -> InvalidArgument:
        return cls([FieldViolation(field, description)], reason=reason)


class NotFound(DomainError):
    reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    reason = "FAILED_PRECONDITION"


class Unavailable(DomainError):
    """A dependency (database, Prometheus, embeddings) cannot be reached."""

    reason = "DEPENDENCY_UNAVAILABLE"


class Cancelled(DomainError):
    """The caller went away (its deadline passed, it cancelled): the work stops."""

    reason = "CANCELLED"


class StorageUnavailable(Unavailable):
    reason = "DATABASE_UNAVAILABLE"


class ResourceExhausted(InvalidArgument):
    """A request within the rules asks for more work than one call may do: answered
    INVALID_ARGUMENT (retrying it unchanged cannot help), naming the field to narrow."""

    reason = "LIMIT_EXCEEDED"

    def __init__(self, field: str, description: str) -> None:
        super().__init__([FieldViolation(field, description)])
