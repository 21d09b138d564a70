"""Wires the Insight service."""

from __future__ import annotations

import logging

import grpc
from neuralops.insight.v1 import insight_pb2, insight_pb2_grpc
from neuralops.servers.app import ServiceParts
from neuralops.servers.config import Config
from neuralops.servers.db import Database
from neuralops.servers.insight.prometheus import PrometheusClient
from neuralops.servers.insight.service import Insight
from neuralops.servers.insight.servicer import InsightServicer
from neuralops.servers.insight.storage import SignalStore

log = logging.getLogger(__name__)


def build_insight(config: Config, db: Database) -> ServiceParts:
    prom = PrometheusClient(config.prom_url, config.prom_timeout_s) if config.prom_url else None
    if prom is None:
        log.warning("PROM_URL is not set: Probe answers FAILED_PRECONDITION until it is")
    servicer = InsightServicer(Insight(SignalStore(db), prom))

    def register(server: grpc.Server) -> None:
        insight_pb2_grpc.add_InsightServiceServicer_to_server(servicer, server)

    full_name = insight_pb2.DESCRIPTOR.services_by_name["InsightService"].full_name
    return ServiceParts("insight", full_name, register, closers=[prom.close] if prom else [])
