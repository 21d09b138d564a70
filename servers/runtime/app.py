"""Builds and runs the gRPC servers: one port per service, one process for any subset.

``create_server(parts, address)`` is the factory ``main`` and the tests both use:
it adds the servicer, health (SERVING per service) and reflection, binds, and
returns ``(server, port)`` (port 0 picks a free one). :class:`App` wires storage,
background workers (embeddings, outbox relay) and the servers for ``neuralops serve``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from neuralops.servers.runtime import auth, metrics, outbox, reflection, services
from neuralops.servers.runtime.budget import BudgetInterceptor, InflightBudget
from neuralops.servers.runtime.config import Config
from neuralops.servers.runtime.db import Database, open_database
from neuralops.servers.runtime.interceptors import ServiceInterceptor
from neuralops.servers.runtime.migrate import migrate
from neuralops.servers.runtime.worker import Worker

if TYPE_CHECKING:
    from neuralops.servers.gateway.server import HttpServer

log = logging.getLogger(__name__)

SERVICES = services.NAMES
MAX_MESSAGE_BYTES = 32 * 1024 * 1024


class PortUnavailable(OSError):
    """A server could not listen where it was told to."""

    def __init__(self, address: str, service: str, var: str | None = None) -> None:
        var = var or f"NEURALOPS_{service.upper()}_ADDR"
        super().__init__(
            f"{service} cannot listen on {address}: the port is taken or not ours (set {var})"
        )


@dataclass
class ServiceParts:
    """What one service contributes to its server."""

    name: str
    full_name: str
    register: Callable[[grpc.Server], None]
    workers: list[Worker] = field(default_factory=list)
    closers: list[Callable[[], None]] = field(default_factory=list)


@dataclass
class RunningService:
    parts: ServiceParts
    server: grpc.Server
    port: int
    health: health.HealthServicer
    host: str = "localhost"

    @property
    def address(self) -> str:
        """Where a client on this machine reaches it: the host it is bound to (no name
        to resolve: "localhost" may resolve to ::1 first, where nothing listens), or
        localhost for a wildcard bind."""
        return f"{self.host}:{self.port}"


def client_host(bind_host: str) -> str:
    """The host a local client dials for a server bound to ``bind_host``."""
    if bind_host in ("", "0.0.0.0", "::", "[::]"):
        return "localhost"
    if ":" in bind_host and not bind_host.startswith("["):
        return f"[{bind_host}]"  # an IPv6 literal
    return bind_host


def create_server(
    parts: ServiceParts,
    address: str,
    *,
    max_workers: int = 16,
    config: Config | None = None,
    budget: InflightBudget | None = None,
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """A server for one service with health and reflection, bound but not started.
    ``config`` brings TLS (NEURALOPS_TLS_*) and tokens (NEURALOPS_*_TOKENS); ``budget``
    bounds the request bytes all calls may hold at once (servers/runtime/budget.py)."""
    cfg = config or Config()
    credentials = auth.server_credentials(cfg)
    # The budget runs first, so calls it turns away are never read or authenticated.
    budget_first = [BudgetInterceptor(budget)] if budget is not None else []
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=parts.name),
        interceptors=[*budget_first, *auth.server_interceptors(cfg), ServiceInterceptor()],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # One server per port: a second one must fail to bind, not share the traffic.
            ("grpc.so_reuseport", 0),
            # No BDP window growth: a call's message is then pulled only once its handler
            # asks for it, so calls the byte budget turns away are not read into memory.
            ("grpc.http2.bdp_probe", 0),
        ],
    )
    parts.register(server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", parts.full_name):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable(server, (parts.full_name, health.SERVICE_NAME))
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:  # grpcio's "Failed to bind to address ..."
        raise PortUnavailable(address, parts.name) from exc
    return server, port, health_servicer


class App:
    """All requested services of one process, sharing one database."""

    def __init__(
        self,
        config: Config,
        services: tuple[str, ...] = SERVICES,
        *,
        ports: dict[str, int] | None = None,
        run_migrations: bool = True,
        relay_backoff_s: float = 30.0,
    ) -> None:
        unknown = set(services) - set(SERVICES)
        if unknown:
            raise ValueError(f"unknown services: {', '.join(sorted(unknown))}")
        self.config = config
        self.services = tuple(s for s in SERVICES if s in services)
        self._ports = ports or {}
        self._run_migrations = run_migrations
        self._relay_backoff_s = relay_backoff_s
        self.db: Database | None = None
        self.running: dict[str, RunningService] = {}
        # One budget for every call of the process, whichever service it is for.
        self.budget = InflightBudget(config.max_inflight_bytes, max_message_bytes=MAX_MESSAGE_BYTES)
        self.http: HttpServer | None = None

    def port(self, service: str) -> int:
        return self.running[service].port

    def address(self, service: str) -> str:
        return self.running[service].address

    def start(self) -> App:
        cfg = self.config
        auth.warn_if_exposed(cfg)
        self.db = open_database(
            cfg.postgres_dsn,
            cfg.sqlite_path,
            pool_size=cfg.db_pool_size,
            timeout_s=cfg.db_timeout_s,
        )
        log.info("storage: %s", self.db.describe())
        if self._run_migrations:
            applied = migrate(self.db)
            log.info("migrations applied now: %s", ", ".join(applied) or "none (up to date)")
        ctx = services.ServiceContext(cfg, self.db, self._address_of, self._relay_backoff_s)
        for name in self.services:
            parts = services.spec(name).load_factory()(ctx)
            port = self._ports.get(name, cfg.listen_port(name))
            server, bound, health_servicer = create_server(
                parts, f"{cfg.bind_host}:{port}", config=cfg, budget=self.budget
            )
            server.start()
            for worker in parts.workers:
                worker.start()
            self.running[name] = RunningService(
                parts, server, bound, health_servicer, client_host(cfg.bind_host)
            )
            log.info("%s listening on %s:%d", parts.full_name, cfg.bind_host, bound)
        metrics.track_backlog(self._backlog)
        self._start_http()
        return self

    def _address_of(self, service: str) -> str:
        """A service in this process once it listens, else its configured address."""
        running = self.running.get(service)
        return running.address if running is not None else self.config.address(service)

    def _start_http(self) -> None:
        """The HTTP/JSON gateway and console (NEURALOPS_HTTP_PORT; 0 turns it off), calling
        this process's servers, and the configured addresses for the other services."""
        from neuralops.servers.gateway.app import Gateway
        from neuralops.servers.gateway.server import HttpServer

        port = self._ports.get("http", self.config.http_port)
        if not port:
            return
        cfg = self.config
        targets = {s.full_name: cfg.address(s.name) for s in services.SERVICES}
        for svc in self.running.values():
            targets[svc.parts.full_name] = svc.address
        gateway = Gateway(
            targets,
            prom_url=cfg.prom_url,
            prom_timeout_s=cfg.prom_timeout_s,
            security=auth.forwarding_security(cfg),
        )
        self.http = HttpServer(gateway, cfg.bind_host, port).start()

    def _backlog(self) -> int:
        assert self.db is not None
        return outbox.backlog(self.db)

    def stop(self, grace: float = 10.0) -> None:
        """Stop taking calls, let in-flight calls finish (up to ``grace`` s), then stop
        workers and close storage."""
        if self.http is not None:
            self.http.stop()
            self.http = None
        for svc in self.running.values():
            svc.health.enter_graceful_shutdown()
        events = [svc.server.stop(grace) for svc in reversed(list(self.running.values()))]
        for event in events:
            event.wait(grace + 1)
        for svc in self.running.values():
            for worker in svc.parts.workers:
                worker.stop()
            for close in svc.parts.closers:
                close()
        self.running.clear()
        if self.db is not None:
            self.db.close()
            self.db = None
