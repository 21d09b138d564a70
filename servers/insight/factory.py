"""Wires the Insight service: the servicer and the watch scheduler (a worker thread)."""

from __future__ import annotations

import logging

import grpc
from neuralops.insight.v1 import insight_pb2, insight_pb2_grpc
from neuralops.servers.insight.prometheus import PrometheusClient
from neuralops.servers.insight.service import Insight, Scheduler
from neuralops.servers.insight.servicer import InsightServicer
from neuralops.servers.insight.storage import SignalStore
from neuralops.servers.runtime.app import ServiceParts
from neuralops.servers.runtime.config import Config
from neuralops.servers.runtime.db import Database
from neuralops.servers.runtime.services import ServiceContext
from neuralops.servers.runtime.worker import Worker

log = logging.getLogger(__name__)


def build_insight(config: Config, db: Database) -> ServiceParts:
    prom = PrometheusClient(config.prom_url, config.prom_timeout_s) if config.prom_url else None
    if prom is None:
        log.warning("PROM_URL is not set: Probe answers FAILED_PRECONDITION until it is")
    store = SignalStore(db)
    insight = Insight(store, prom)
    servicer = InsightServicer(insight)
    scheduler = Scheduler(insight, store)

    def register(server: grpc.Server) -> None:
        insight_pb2_grpc.add_InsightServiceServicer_to_server(servicer, server)

    full_name = insight_pb2.DESCRIPTOR.services_by_name["InsightService"].full_name
    workers = [Worker("insight-watches", lambda: scheduler.run_once() > 0, idle_s=1.0)]
    if prom is None:
        workers = []
    return ServiceParts(
        "insight", full_name, register, workers=workers, closers=[prom.close] if prom else []
    )


def build(ctx: ServiceContext) -> ServiceParts:
    """Insight as servers/runtime/services.py starts it."""
    return build_insight(ctx.config, ctx.db)
