"""The InsightService servicer: decode, call :class:`Insight`, encode."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

import grpc
from neuralops.clients.enums import EnumCodec
from neuralops.insight.v1 import insight_pb2 as pb
from neuralops.insight.v1 import insight_pb2_grpc
from neuralops.servers.convert import from_timestamp, to_timestamp
from neuralops.servers.insight.model import ProbeSpec, Signal
from neuralops.servers.insight.service import Insight
from neuralops.servers.insight.validation import validate


class Method(StrEnum):
    Z_SCORE = "z_score"
    EWMA = "ewma"


METHOD = EnumCodec(
    Method,
    {Method.Z_SCORE: pb.METHOD_Z_SCORE, Method.EWMA: pb.METHOD_EWMA},
    unspecified=pb.METHOD_UNSPECIFIED,
)


def _method(value: pb.Method.ValueType) -> str:
    """The stored method name; unspecified means z-score, an unknown number is refused."""
    return Method.Z_SCORE.value if value == pb.METHOD_UNSPECIFIED else METHOD.text(value)


def signal_message(s: Signal) -> pb.Signal:
    return pb.Signal(
        id=s.id,
        metric=s.metric,
        value=s.value,
        score=s.score,
        hint=s.hint,
        created_at=to_timestamp(s.created_at),
        labels=s.labels,
        method=METHOD.to_proto(s.method),
        sample_time=to_timestamp(s.sample_time),
        query=s.query,
        threshold=s.threshold,
        baseline=s.baseline,
    )


class InsightServicer(insight_pb2_grpc.InsightServiceServicer):
    def __init__(self, insight: Insight) -> None:
        self._insight = insight

    def Probe(self, request: pb.ProbeRequest, context: grpc.ServicerContext) -> pb.ProbeResponse:
        validate(request)
        spec = ProbeSpec(
            query=request.query,
            threshold=request.threshold or 3.0,
            method=_method(request.method),
            points=request.points or 60,
            lookback=request.lookback.ToTimedelta() if request.HasField("lookback") else None,
            step=request.step.ToTimedelta() if request.HasField("step") else timedelta(seconds=15),
            evaluation_time=from_timestamp(request.evaluation_time)
            if request.HasField("evaluation_time")
            else None,
            alpha=request.alpha or 0.3,
            min_points=request.min_points or 5,
        )
        result = self._insight.probe(spec)
        return pb.ProbeResponse(
            series=[
                pb.SeriesScore(
                    labels=s.labels,
                    value=s.value,
                    score=s.score,
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
        )

    def ListSignals(
        self, request: pb.ListSignalsRequest, context: grpc.ServicerContext
    ) -> pb.ListSignalsResponse:
        validate(request)
        page, token = self._insight.list_signals(
            request.page_size,
            request.page_token,
            request.metric,
            from_timestamp(request.start_time) if request.HasField("start_time") else None,
            from_timestamp(request.end_time) if request.HasField("end_time") else None,
        )
        return pb.ListSignalsResponse(
            signals=[signal_message(s) for s in page], next_page_token=token
        )
