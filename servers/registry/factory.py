"""Wires the Registry service."""

from __future__ import annotations

from collections.abc import Callable

import grpc
from neuralops.registry.v1 import registry_pb2, registry_pb2_grpc
from neuralops.servers import auth
from neuralops.servers.app import ServiceParts
from neuralops.servers.config import Config
from neuralops.servers.db import Database
from neuralops.servers.registry.runs import RunHistoryRuns
from neuralops.servers.registry.service import Registry
from neuralops.servers.registry.servicer import RegistryServicer
from neuralops.servers.registry.storage import RegistryStore


def build_registry(
    config: Config, db: Database, runhistory_addr: str | Callable[[], str] | None = None
) -> ServiceParts:
    """``runhistory_addr``: where RunHistory answers (default ``config.runhistory_addr``);
    a callable when it is started in the same process and its port is known later."""
    # The Registry's own calls carry this server's service credentials (as the relay's do).
    runs = RunHistoryRuns(
        runhistory_addr or config.runhistory_addr, security=auth.client_security(config)
    )
    servicer = RegistryServicer(Registry(RegistryStore(db), runs))

    def register(server: grpc.Server) -> None:
        registry_pb2_grpc.add_RegistryServiceServicer_to_server(servicer, server)

    full_name = registry_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name
    return ServiceParts("registry", full_name, register)
