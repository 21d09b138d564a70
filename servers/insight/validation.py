"""Insight request validation: the one place its servicer checks a request, plus the
check of what Prometheus answers (a PromQL-compatible store may answer anything).

Generic checks come from :mod:`neuralops.servers.runtime.validation`; here are Insight's own:
a query and a metric filter without NUL and of bounded length, page tokens with a
valid time and UUID, and a Probe range (``evaluation_time`` back by ``lookback``, or
by ``step`` times the points) that stays within 1970 to 9999, so no date overflows.
"""

from __future__ import annotations

import time
from typing import Any

from google.protobuf.message import Message
from neuralops.servers.runtime import validation as v
from neuralops.servers.runtime.errors import FieldViolation

MAX_QUERY_LENGTH = 10_000
MAX_RANGE_POINTS = 11_000  # Prometheus' own per-series limit for query_range
_EPOCH = 0
_LAST_SECOND = v.MAX_TIMESTAMP_SECONDS


def _seconds(duration: Any) -> float:
    return float(duration.seconds) + float(duration.nanos) / 1e9


def _probe_range(request: Any) -> list[FieldViolation]:
    """The earliest time the probe would ask Prometheus for must not precede 1970."""
    names = v.field_names(request.DESCRIPTOR)
    if not {"step", "evaluation_time"} <= names:
        return []
    end = (
        float(request.evaluation_time.seconds)
        if request.HasField("evaluation_time")
        else time.time()
    )
    if "lookback" in names and request.HasField("lookback"):
        span, field = _seconds(request.lookback), "lookback"
    elif request.HasField("step"):
        points = getattr(request, "points", 0)
        points = min(points, MAX_RANGE_POINTS) if points > 0 else MAX_RANGE_POINTS
        span, field = _seconds(request.step) * (points - 1), "step"
    else:
        return []
    if request.HasField("step") and _seconds(request.step) > _LAST_SECOND:
        return [FieldViolation("step", "is longer than the whole time range Prometheus serves")]
    if end - span < _EPOCH:
        return [FieldViolation(field, "reaches back before 1970-01-01 from the evaluation time")]
    return []


def validate(request: Message) -> None:
    """Raise InvalidArgument naming every field of ``request`` the service cannot take."""
    extra: list[FieldViolation] = []
    for field in request.DESCRIPTOR.fields:
        if field.type != field.TYPE_STRING or field.is_repeated:
            continue
        value = getattr(request, field.name)
        if field.name == "page_token":
            extra += v.page_token_violations(value)
        elif field.name == "query":
            extra += v.text_violations(value, "query", limit=MAX_QUERY_LENGTH)
        elif field.name == "id" or field.name.endswith("_id"):
            extra += v.id_violations(value, field.name, required=False)
        else:
            extra += v.text_violations(value, field.name, limit=v.MAX_FILTER_LENGTH)
    generic = v.message_violations(request)
    if not generic:  # the range check reads the (now known valid) times
        extra += _probe_range(request)
    v.raise_if(extra + generic)
