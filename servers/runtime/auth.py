"""Bearer-token auth and TLS credentials for the servers.

One server interceptor checks every call: ``authorization: Bearer <token>`` must hold
a configured token whose role may call the method. Two roles:

- ``app``: what applications do — log, read, search and list runs, probe, manage
  workflows (``NEURALOPS_APP_TOKENS``).
- ``service``: what the services call on each other, e.g. ``NotifyRun`` from the
  outbox relay (``NEURALOPS_SERVICE_TOKENS``). A service token may also do everything
  an app token may.

The role of each method is in :data:`METHOD_ROLES`. Methods of a ``neuralops.*``
service that are not listed there need the ``app`` role (so RPCs added later work
for applications without a change here); methods of any other service need the
``service`` role, except health and reflection, which are public unless
``NEURALOPS_AUTH_PUBLIC_HEALTH=0``. No token (or an unknown one) answers
UNAUTHENTICATED; a known token of a role that may not call the method answers
PERMISSION_DENIED. Auth is off when no token is configured.
"""

from __future__ import annotations

import enum
import hmac
import ipaddress
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
from neuralops.clients.channels import Security
from neuralops.servers.runtime.config import Config, ConfigError

log = logging.getLogger(__name__)


class Role(enum.IntEnum):
    """Roles in increasing power: a role may call what it or a weaker role may."""

    PUBLIC = 0
    APP = 1
    SERVICE = 2


# The one table of method → role. Not listed: see the module docstring.
METHOD_ROLES: dict[str, Role] = {
    "/neuralops.registry.v1.RegistryService/NotifyRun": Role.SERVICE,
}
PUBLIC_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
)


def required_role(method: str, *, public_health: bool = True) -> Role:
    """The role ``method`` ("/package.Service/Method") needs."""
    if method in METHOD_ROLES:
        return METHOD_ROLES[method]
    service = method.lstrip("/").partition("/")[0]
    if service in PUBLIC_SERVICES:
        return Role.PUBLIC if public_health else Role.APP
    if service.startswith("neuralops."):
        return Role.APP
    return Role.SERVICE


class AuthInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Checks the bearer token of every call against the roles (see module docstring)."""

    def __init__(
        self,
        app_tokens: Sequence[str],
        service_tokens: Sequence[str],
        *,
        public_health: bool = True,
    ) -> None:
        self._tokens = [(t.encode(), Role.APP) for t in app_tokens] + [
            (t.encode(), Role.SERVICE) for t in service_tokens
        ]
        self._public_health = public_health

    def _role_of(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> Role | None:
        header = next((v for k, v in metadata or () if k == "authorization"), None)
        if header is None:
            return None
        text = header.decode(errors="replace") if isinstance(header, bytes) else header
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        given = token.strip().encode()
        found: Role | None = None
        for known, role in self._tokens:  # every comparison runs: no early exit
            if hmac.compare_digest(known, given) and (found is None or role > found):
                found = role
        return found

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        needed = required_role(method, public_health=self._public_health)
        if needed == Role.PUBLIC:
            return continuation(handler_call_details)
        role = self._role_of(handler_call_details.invocation_metadata)
        if role is not None and role >= needed:
            return continuation(handler_call_details)
        if role is None:
            code, message = (
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or unknown bearer token (send 'authorization: Bearer <token>')",
            )
        else:
            code, message = (
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method} needs a {needed.name.lower()} token; this is an {role.name.lower()} "
                "token",
            )
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        return _denying(handler, code, message)


def _denying(
    handler: grpc.RpcMethodHandler[Any, Any], code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same shape as ``handler`` that aborts with ``code``."""

    def deny(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, message)

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(deny, **kwargs)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(deny, **kwargs)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(deny, **kwargs)
    return grpc.stream_stream_rpc_method_handler(deny, **kwargs)


def server_interceptors(config: Config) -> list[grpc.ServerInterceptor]:  # type: ignore[type-arg]
    """The auth interceptor when tokens are configured, else nothing."""
    if not config.auth_enabled:
        return []
    return [
        AuthInterceptor(
            config.app_tokens, config.service_tokens, public_health=config.public_health
        )
    ]


def _read(path: Path, name: str) -> bytes:
    try:
        return bytes(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror}") from None


def server_credentials(config: Config) -> grpc.ServerCredentials | None:
    """TLS credentials from NEURALOPS_TLS_CERT/KEY (mTLS with NEURALOPS_TLS_CLIENT_CA),
    or None for plaintext."""
    if config.tls_cert is None and config.tls_key is None:
        if config.tls_client_ca is not None:
            raise ConfigError("NEURALOPS_TLS_CLIENT_CA needs NEURALOPS_TLS_CERT and _KEY too")
        return None
    if config.tls_cert is None or config.tls_key is None:
        raise ConfigError("NEURALOPS_TLS_CERT and NEURALOPS_TLS_KEY go together: set both")
    pair = (
        _read(config.tls_key, "NEURALOPS_TLS_KEY"),
        _read(config.tls_cert, "NEURALOPS_TLS_CERT"),
    )
    if config.tls_client_ca is None:
        return grpc.ssl_server_credentials([pair])
    ca = _read(config.tls_client_ca, "NEURALOPS_TLS_CLIENT_CA")
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=True)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def warn_if_exposed(config: Config) -> None:
    """A loud warning when a non-loopback address is served without auth or TLS."""
    if is_loopback(config.bind_host):
        return
    if not config.auth_enabled:
        log.warning(
            "!!! SECURITY: listening on %s with authentication OFF: anyone who can reach "
            "this address can read and write every run. Set NEURALOPS_APP_TOKENS and "
            "NEURALOPS_SERVICE_TOKENS (and NEURALOPS_TLS_CERT/KEY), or bind 127.0.0.1. !!!",
            config.bind_host,
        )
    elif not config.tls_enabled:
        log.warning(
            "SECURITY: listening on %s with tokens but without TLS: tokens cross the network "
            "in clear text. Set NEURALOPS_TLS_CERT and NEURALOPS_TLS_KEY.",
            config.bind_host,
        )


def client_security(config: Config) -> Security:
    """What this process presents when it calls the other services (the outbox relay):
    NEURALOPS_TOKEN or the first service token; TLS when this server uses TLS or
    NEURALOPS_TLS_CA is set; for mTLS, NEURALOPS_TLS_CLIENT_CERT/KEY, else the
    server's own certificate and key."""
    tls = config.tls_enabled or config.tls_ca is not None
    cert, key = config.tls_client_cert, config.tls_client_key
    if cert is None and key is None and config.tls_client_ca is not None:
        cert, key = config.tls_cert, config.tls_key
    try:
        return Security.from_files(config.outgoing_token, config.tls_ca, cert, key, tls=tls)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def forwarding_security(config: Config) -> Security:
    """For calls made on a caller's behalf (the HTTP gateway): this process's TLS
    settings, but no token of its own, so a caller without a token stays without one."""
    return replace(client_security(config), token=None)
