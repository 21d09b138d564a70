"""The InsightService servicer: decode, call :class:`Insight`, encode."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import grpc
import numpy as np
from google.protobuf import duration_pb2, timestamp_pb2
from neuralops.clients.enums import EnumCodec
from neuralops.insight.v1 import insight_pb2 as pb
from neuralops.insight.v1 import insight_pb2_grpc
from neuralops.servers.insight.detector import DetectorSettings
from neuralops.servers.insight.model import Episode, ProbeSpec, Watch
from neuralops.servers.insight.service import (
    DEFAULT_WATCH_INTERVAL_S,
    BacktestSeries,
    Insight,
    settings_from,
    watch_key,
)
from neuralops.servers.insight.validation import validate
from neuralops.servers.runtime.convert import to_timestamp
from neuralops.servers.runtime.errors import InvalidArgument


class MethodName(StrEnum):
    """Scoring rules as stored (watch settings, episodes) and named in hints."""

    Z_SCORE = "z_score"
    EWMA = "ewma"
    ROBUST = "robust"


METHOD = EnumCodec(
    MethodName,
    {
        MethodName.Z_SCORE: pb.METHOD_Z_SCORE,
        MethodName.EWMA: pb.METHOD_EWMA,
        MethodName.ROBUST: pb.METHOD_ROBUST,
    },
    unspecified=pb.METHOD_UNSPECIFIED,
    proto=pb.Method,
)
_MIN_TS, _MAX_TS = -62_135_596_800, 253_402_300_799  # 0001-01-01 .. 9999-12-31
_MAX_DURATION_S = 10 * 366 * 86400


def _method(value: int) -> str:
    if value == pb.METHOD_UNSPECIFIED:
        return MethodName.ROBUST.value
    member = METHOD.from_proto(value)
    return member.value if member is not None else f"unknown({value})"


def _time(field: str, ts: timestamp_pb2.Timestamp) -> datetime:
    if not (_MIN_TS <= ts.seconds <= _MAX_TS) or not 0 <= ts.nanos < 1_000_000_000:
        raise InvalidArgument.one(field, "is not a valid timestamp (years 1 to 9999)")
    return datetime.fromtimestamp(ts.seconds, UTC) + timedelta(microseconds=ts.nanos // 1000)


def _duration(field: str, d: duration_pb2.Duration) -> timedelta:
    if not abs(d.seconds) <= _MAX_DURATION_S or abs(d.nanos) >= 1_000_000_000:
        raise InvalidArgument.one(field, "is out of range (at most 10 years)")
    return timedelta(seconds=d.seconds, microseconds=d.nanos // 1000)


def detector_settings(msg: pb.DetectorSettings) -> dict[str, object]:
    return {
        "method": _method(msg.method),
        "threshold": msg.threshold,
        "window": msg.window,
        "min_points": msg.min_points,
        "close_after": msg.close_after,
        "alpha": msg.alpha,
        "no_seasonal": msg.no_seasonal,
    }


def detector_message(s: DetectorSettings) -> pb.DetectorSettings:
    return pb.DetectorSettings(
        method=METHOD.to_proto(s.method),
        threshold=s.threshold,
        window=s.window,
        min_points=s.min_points,
        close_after=s.close_after,
        alpha=s.alpha,
        no_seasonal=not s.seasonal,
    )


def signal_message(e: Episode) -> pb.Signal:
    return pb.Signal(
        id=e.id,
        metric=e.metric,
        value=e.peak_value,
        score=e.peak_score if math.isfinite(e.peak_score) else 0.0,
        hint=e.hint,
        created_at=to_timestamp(e.created_at),
        labels=e.labels,
        method=METHOD.to_proto(e.method),
        sample_time=to_timestamp(e.start_time),
        query=e.query,
        threshold=e.threshold,
        baseline=e.baseline,
        start_time=to_timestamp(e.start_time),
        end_time=to_timestamp(e.end_time),
        open=e.open,
        last_seen_time=to_timestamp(e.last_seen_time),
        watch_id=e.watch_id,
    )


def watch_message(w: Watch) -> pb.Watch:
    return pb.Watch(
        id=w.id,
        name=w.name,
        query=w.query,
        detector=detector_message(settings_from(w.detector)),
        interval=duration_pb2.Duration(
            seconds=int(w.interval_s), nanos=int(w.interval_s % 1 * 1e9)
        ),
        create_time=to_timestamp(w.created_at),
        update_time=to_timestamp(w.updated_at),
        last_evaluated_time=to_timestamp(w.evaluated_time),
        last_error=w.last_error,
    )


def _ts(t: float) -> timestamp_pb2.Timestamp:
    sec = math.floor(t)
    return timestamp_pb2.Timestamp(seconds=sec, nanos=round((t - sec) * 1e9) % 1_000_000_000)


def backtest_message(r: BacktestSeries, include_scores: bool) -> pb.SeriesBacktest:
    eps = []
    for sp in r.spans:
        eps.append(
            pb.Episode(
                labels=r.labels,
                start_time=_ts(r.times[sp.start]),
                end_time=_ts(r.times[sp.end]) if sp.end >= 0 else None,
                peak_time=_ts(r.times[sp.peak]),
                peak_score=float(r.score[sp.peak]),
                peak_value=float(r.values[sp.peak]),
                last_seen_time=_ts(r.times[sp.last]),
                open=sp.end < 0,
            )
        )
    out = pb.SeriesBacktest(labels=r.labels, episodes=eps, points=int(np.sum(~np.isnan(r.score))))
    if include_scores:
        out.scores.extend(r.score.tolist())
    return out


class InsightServicer(insight_pb2_grpc.InsightServiceServicer):
    def __init__(self, insight: Insight) -> None:
        self._insight = insight

    def Probe(self, request: pb.ProbeRequest, context: grpc.ServicerContext) -> pb.ProbeResponse:
        validate(request)
        spec = ProbeSpec(
            query=request.query,
            threshold=request.threshold,
            method=_method(request.method),
            points=request.points or 60,
            lookback=_duration("lookback", request.lookback)
            if request.HasField("lookback")
            else None,
            step=_duration("step", request.step)
            if request.HasField("step")
            else timedelta(seconds=15),
            evaluation_time=_time("evaluation_time", request.evaluation_time)
            if request.HasField("evaluation_time")
            else None,
            alpha=request.alpha or 0.3,
            min_points=request.min_points or 5,
            close_after=request.close_after or DetectorSettings().close_after,
        )
        if request.threshold < 0 or math.isnan(request.threshold):
            raise InvalidArgument.one(
                "threshold", "must be a positive number (0 means the default)"
            )
        result = self._insight.probe(spec)
        return pb.ProbeResponse(
            series=[
                pb.SeriesScore(
                    labels=s.labels,
                    value=s.value,
                    score=s.score if math.isfinite(s.score) else 0.0,
                    sample_time=to_timestamp(s.sample_time),
                    outcome=pb.SeriesOutcome.Value("SERIES_OUTCOME_" + s.outcome.upper()),
                    anomalous=s.anomalous,
                    signal_id=s.signal_id,
                    hint=s.hint,
                    baseline=s.baseline,
                )
                for s in result.series
            ],
            anomalies=result.anomalies,
            start_time=to_timestamp(result.start),
            end_time=to_timestamp(result.end),
            hint=result.hint,
        )

    def ListSignals(
        self, request: pb.ListSignalsRequest, context: grpc.ServicerContext
    ) -> pb.ListSignalsResponse:
        validate(request)
        state = {
            pb.EPISODE_STATE_UNSPECIFIED: "",
            pb.EPISODE_STATE_OPEN: "open",
            pb.EPISODE_STATE_CLOSED: "closed",
        }.get(request.state)
        if state is None:
            raise InvalidArgument.one("state", "must be OPEN, CLOSED or UNSPECIFIED")
        page, token = self._insight.list_signals(
            request.page_size,
            request.page_token,
            request.metric,
            _time("start_time", request.start_time) if request.HasField("start_time") else None,
            _time("end_time", request.end_time) if request.HasField("end_time") else None,
            state=state,
            watch_id=watch_key(request.watch_id) or request.watch_id,
        )
        return pb.ListSignalsResponse(
            signals=[signal_message(s) for s in page], next_page_token=token
        )

    def Backtest(
        self, request: pb.BacktestRequest, context: grpc.ServicerContext
    ) -> pb.BacktestResponse:
        validate(request)
        settings = settings_from(detector_settings(request.detector))
        if request.series and request.query:
            raise InvalidArgument.one("query", "give either series or query, not both")
        if request.series:
            inline = []
            for i, s in enumerate(request.series):
                n = len(s.points)
                times = np.fromiter(
                    (p.time.seconds + p.time.nanos * 1e-9 for p in s.points), np.float64, n
                )
                values = np.fromiter((p.value for p in s.points), np.float64, n)
                if n and not np.all(np.isfinite(times)):
                    raise InvalidArgument.one(f"series[{i}].points", "have invalid times")
                inline.append((dict(s.labels), times, values))
            results = self._insight.backtest_inline(inline, settings)
            hint = "" if any(len(r.times) for r in results) else "the series have no points"
        else:
            end = (
                _time("end_time", request.end_time)
                if request.HasField("end_time")
                else datetime.now(UTC)
            )
            if not request.HasField("start_time"):
                raise InvalidArgument.one("start_time", "is required with query")
            start = _time("start_time", request.start_time)
            step = _duration("step", request.step) if request.HasField("step") else timedelta(0)
            step_s = step.total_seconds() or 300.0
            results, hint = self._insight.backtest_query(
                request.query, start, end, step_s, settings, keep_going=context.is_active
            )
        return pb.BacktestResponse(
            results=[backtest_message(r, request.include_scores) for r in results],
            detector=detector_message(settings),
            hint=hint,
        )

    def _watch(self, msg: pb.Watch, wid: str = "") -> Watch:
        interval = (
            _duration("watch.interval", msg.interval).total_seconds()
            if msg.HasField("interval")
            else 0.0
        )
        return Watch(
            id=wid,
            name=msg.name,
            query=msg.query,
            detector=detector_settings(msg.detector),
            interval_s=interval or DEFAULT_WATCH_INTERVAL_S,
        )

    def CreateWatch(
        self, request: pb.CreateWatchRequest, context: grpc.ServicerContext
    ) -> pb.CreateWatchResponse:
        validate(request)
        made = self._insight.create_watch(self._watch(request.watch))
        return pb.CreateWatchResponse(watch=watch_message(made))

    def GetWatch(
        self, request: pb.GetWatchRequest, context: grpc.ServicerContext
    ) -> pb.GetWatchResponse:
        validate(request)
        return pb.GetWatchResponse(watch=watch_message(self._insight.get_watch(request.id)))

    def ListWatches(
        self, request: pb.ListWatchesRequest, context: grpc.ServicerContext
    ) -> pb.ListWatchesResponse:
        validate(request)
        page, token = self._insight.list_watches(request.page_size, request.page_token)
        return pb.ListWatchesResponse(
            watches=[watch_message(w) for w in page], next_page_token=token
        )

    def UpdateWatch(
        self, request: pb.UpdateWatchRequest, context: grpc.ServicerContext
    ) -> pb.UpdateWatchResponse:
        validate(request)
        current = self._insight.get_watch(request.watch.id)
        paths = set(request.update_mask.paths)
        allowed = {"name", "query", "detector", "interval"}
        for p in paths:
            if p.split(".")[0] not in allowed:
                raise InvalidArgument.one(
                    "update_mask", f"cannot update {p!r}; only {sorted(allowed)}"
                )
            if not _is_field_path(pb.Watch.DESCRIPTOR, p):
                raise InvalidArgument.one("update_mask", f"{p!r} is not a field of Watch")
        given = self._watch(request.watch, current.id)
        top = {p.split(".")[0] for p in paths} or allowed
        detector = given.detector if "detector" in top else current.detector
        settings = [p.split(".", 1)[1] for p in paths if p.startswith("detector.")]
        if settings and "detector" not in paths:  # only the settings named change
            detector = {**current.detector, **{k: given.detector[k] for k in settings}}
        merged = Watch(
            id=current.id,
            name=given.name if "name" in top else current.name,
            query=given.query if "query" in top else current.query,
            detector=detector,
            interval_s=given.interval_s if "interval" in top else current.interval_s,
        )
        return pb.UpdateWatchResponse(watch=watch_message(self._insight.update_watch(merged)))

    def DeleteWatch(
        self, request: pb.DeleteWatchRequest, context: grpc.ServicerContext
    ) -> pb.DeleteWatchResponse:
        validate(request)
        self._insight.delete_watch(request.id)
        return pb.DeleteWatchResponse()


def _is_field_path(desc: Any, path: str) -> bool:
    """Whether ``path`` (``detector.threshold``) names a field, through message fields."""
    for name in path.split("."):
        if desc is None:  # a scalar field has no fields under it
            return False
        field = desc.fields_by_name.get(name)
        if field is None:
            return False
        desc = field.message_type
    return True
