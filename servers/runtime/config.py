"""Configuration, read once from the environment into a frozen value at start-up.

Nothing below this module reads environment variables: servers, workers and the
CLI receive a :class:`Config`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from neuralops.servers.runtime import services

DEFAULT_DATA_DIR = ".neuralops"


class ConfigError(ValueError):
    """A setting that cannot be used (the message names the variable)."""


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def read_secrets(name: str, value: str | None) -> tuple[str, ...]:
    """Secrets from a variable: comma-separated values, or ``@/path/to/file`` holding
    them (comma- or newline-separated; lines starting with # are comments)."""
    if not value:
        return ()
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"{name}: cannot read {path}: {exc.strerror}") from None
        lines = [ln for ln in text.splitlines() if not ln.strip().startswith("#")]
        value = ",".join(lines)
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _port(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


@dataclass(frozen=True)
class Config:
    """Everything the services need to know about their surroundings."""

    postgres_dsn: str | None = None
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    milvus_endpoint: str | None = None
    prom_url: str | None = None
    openai_key: str | None = field(default=None, repr=False)
    openai_base_url: str | None = None
    embedding_model: str = "text-embedding-3-small"
    # Where each service of servers/runtime/services.py listens and is called
    # (NEURALOPS_<NAME>_ADDR); a service missing here is at its default address.
    service_addrs: Mapping[str, str] = field(default_factory=dict)
    bind_host: str = "127.0.0.1"
    metrics_port: int = 9464
    prometheus_port: int = 9090
    # HTTP/JSON gateway + console. Off (0) unless configured: from_env defaults it to
    # 8080, so only code that builds a Config by hand (tests, embedding) starts without it.
    http_port: int = 0
    db_pool_size: int = 10
    db_timeout_s: float = 5.0
    prom_timeout_s: float = 10.0
    # Transport security and auth (README "Security"); all off by default.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    app_tokens: tuple[str, ...] = field(default=(), repr=False)
    service_tokens: tuple[str, ...] = field(default=(), repr=False)
    public_health: bool = True
    # What this process's own outgoing calls (the outbox relay) present.
    client_token: str | None = field(default=None, repr=False)
    tls_ca: Path | None = None
    tls_client_cert: Path | None = None
    tls_client_key: Path | None = None
    # Request bytes all calls of a process may hold at once (servers/runtime/budget.py).
    max_inflight_bytes: int = 128 * 1024 * 1024

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Read the documented variables (README, DESIGN.md); unset means default."""
        e = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = e.get(name, "").strip()
            return value or None

        return cls(
            postgres_dsn=get("POSTGRES_DSN"),
            data_dir=Path(get("NEURALOPS_DATA_DIR") or DEFAULT_DATA_DIR),
            milvus_endpoint=get("MILVUS_ENDPOINT"),
            prom_url=get("PROM_URL"),
            openai_key=get("OPENAI_KEY") or get("OPENAI_API_KEY"),
            openai_base_url=get("OPENAI_BASE_URL"),
            embedding_model=get("NEURALOPS_EMBEDDING_MODEL") or "text-embedding-3-small",
            service_addrs={s.name: get(s.addr_var) or s.default_addr for s in services.SERVICES},
            bind_host=get("NEURALOPS_BIND_HOST") or "127.0.0.1",
            metrics_port=int(get("NEURALOPS_METRICS_PORT") or 9464),
            prometheus_port=int(get("NEURALOPS_PROMETHEUS_PORT") or 9090),
            tls_cert=_path(get("NEURALOPS_TLS_CERT")),
            tls_key=_path(get("NEURALOPS_TLS_KEY")),
            tls_client_ca=_path(get("NEURALOPS_TLS_CLIENT_CA")),
            app_tokens=read_secrets("NEURALOPS_APP_TOKENS", get("NEURALOPS_APP_TOKENS")),
            service_tokens=read_secrets(
                "NEURALOPS_SERVICE_TOKENS", get("NEURALOPS_SERVICE_TOKENS")
            ),
            public_health=(get("NEURALOPS_AUTH_PUBLIC_HEALTH") or "1").lower()
            not in ("0", "false", "no", "off"),
            client_token=(read_secrets("NEURALOPS_TOKEN", get("NEURALOPS_TOKEN")) or (None,))[0],
            tls_ca=_path(get("NEURALOPS_TLS_CA")),
            tls_client_cert=_path(get("NEURALOPS_TLS_CLIENT_CERT")),
            tls_client_key=_path(get("NEURALOPS_TLS_CLIENT_KEY")),
            max_inflight_bytes=int(get("NEURALOPS_MAX_INFLIGHT_BYTES") or 128 * 1024 * 1024),
            http_port=int(get("NEURALOPS_HTTP_PORT") or 8080),
        )

    def with_(self, **changes: object) -> Config:
        """A copy with some fields changed (tests, CLI flags); ``<service>_addr=`` sets
        that service's address."""
        addrs = dict(self.service_addrs)
        for name in services.NAMES:
            if f"{name}_addr" in changes:
                addrs[name] = str(changes.pop(f"{name}_addr"))
        return replace(self, service_addrs=addrs, **changes)  # type: ignore[arg-type]

    def address(self, service: str) -> str:
        """Where ``service`` listens and is called (its NEURALOPS_<NAME>_ADDR)."""
        return self.service_addrs.get(service) or services.spec(service).default_addr

    @property
    def registry_addr(self) -> str:
        return self.address("registry")

    @property
    def insight_addr(self) -> str:
        return self.address("insight")

    @property
    def runhistory_addr(self) -> str:
        return self.address("runhistory")

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "neuralops.sqlite3"

    @property
    def milvus_uri(self) -> str:
        return self.milvus_endpoint or str(self.data_dir / "milvus.db")

    @property
    def embeddings_enabled(self) -> bool:
        return self.openai_key is not None

    @property
    def auth_enabled(self) -> bool:
        return bool(self.app_tokens or self.service_tokens)

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert is not None

    @property
    def outgoing_token(self) -> str | None:
        """The token this process sends to the other services: NEURALOPS_TOKEN, else
        the first service token (the services call each other with the service role)."""
        return self.client_token or (self.service_tokens[0] if self.service_tokens else None)

    def listen_port(self, service: str) -> int:
        """The port a service listens on, taken from its client address."""
        return _port(self.address(service))
