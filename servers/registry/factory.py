"""Wires the Registry service."""

from __future__ import annotations

import grpc
from neuralops.registry.v1 import registry_pb2, registry_pb2_grpc
from neuralops.servers.app import ServiceParts
from neuralops.servers.config import Config
from neuralops.servers.db import Database
from neuralops.servers.registry.service import Registry
from neuralops.servers.registry.servicer import RegistryServicer
from neuralops.servers.registry.storage import RegistryStore


def build_registry(config: Config, db: Database) -> ServiceParts:
    servicer = RegistryServicer(Registry(RegistryStore(db)))

    def register(server: grpc.Server) -> None:
        registry_pb2_grpc.add_RegistryServiceServicer_to_server(servicer, server)

    full_name = registry_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name
    return ServiceParts("registry", full_name, register)
