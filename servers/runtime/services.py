"""The one table of services. App (which to start, how to build each), Config (each
service's address: default port and variable), reflection (whose descriptors), the
gateway's targets, process supervision and the CLI all read it, so adding a service is
one new package (with a ``build(ctx)`` factory) plus one line here.

Factories and descriptor modules are named, not imported: the runtime is the bottom
layer and loads a service's package only when that service starts.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from neuralops.servers.runtime.app import ServiceParts
    from neuralops.servers.runtime.config import Config
    from neuralops.servers.runtime.db import Database


@dataclass(frozen=True)
class ServiceSpec:
    """One service: its package is ``neuralops.servers.<name>`` (with ``factory.build``),
    its contract ``neuralops.<name>.v1`` (``<name>_pb2`` declaring ``service``)."""

    name: str
    service: str  # the gRPC service's name in its proto package
    default_port: int

    @property
    def full_name(self) -> str:
        return f"neuralops.{self.name}.v1.{self.service}"

    @property
    def addr_var(self) -> str:
        """The variable holding the address the service listens on and is called at."""
        return f"NEURALOPS_{self.name.upper()}_ADDR"

    @property
    def default_addr(self) -> str:
        return f"localhost:{self.default_port}"

    def load_factory(self) -> Callable[[ServiceContext], ServiceParts]:
        module = importlib.import_module(f"neuralops.servers.{self.name}.factory")
        build: Callable[[ServiceContext], ServiceParts] = module.build
        return build

    def load_proto(self) -> ModuleType:
        return importlib.import_module(f"neuralops.{self.name}.v1.{self.name}_pb2")


# Start order: a service may ask for the address of one listed before it.
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("registry", "RegistryService", 8000),
    ServiceSpec("insight", "InsightService", 8001),
    ServiceSpec("runhistory", "RunHistoryService", 8002),
)
NAMES: tuple[str, ...] = tuple(s.name for s in SERVICES)


def spec(name: str) -> ServiceSpec:
    for s in SERVICES:
        if s.name == name:
            return s
    raise KeyError(f"unknown service {name!r}; choose from {', '.join(NAMES)}")


@dataclass(frozen=True)
class ServiceContext:
    """What a service factory gets: config, the process's database, and where the other
    services answer (``address(name)``: in this process once it listens, else configured)."""

    config: Config
    db: Database
    address: Callable[[str], str]
    relay_backoff_s: float = 30.0
