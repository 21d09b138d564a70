"""Shared gRPC channels: one per address per process, with retries on UNAVAILABLE.

Retries use gRPC's own retry policy (service config), applied to every method of
the service: our write RPCs are idempotent, so a retry never duplicates a run.

Every channel carries the caller's credentials (:class:`Security`): a bearer token
sent as ``authorization: Bearer <token>`` on each call, and TLS when a CA is given.
By default they come from the environment, read once per process:

- ``NEURALOPS_TOKEN``: the token (or ``@/path/to/file`` holding it);
- ``NEURALOPS_TLS_CA``: PEM file of the CA that signed the servers' certificates
  (turns TLS on); ``NEURALOPS_TLS=1`` turns TLS on with the system's CAs instead;
- ``NEURALOPS_TLS_CLIENT_CERT`` / ``NEURALOPS_TLS_CLIENT_KEY``: this client's
  certificate and key, for servers that require mutual TLS.

So the LangGraph hook, :class:`~neuralops.clients.runhistory.RunHistoryClient` and
the servers' own outbox relay all send them without code changes.
"""

from __future__ import annotations

import collections
import functools
import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

_lock = threading.Lock()
_channels: dict[tuple[str, str, int, Security], grpc.Channel] = {}


def _read(path: str, name: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{name}: cannot read {path}: {exc.strerror}") from None


@dataclass(frozen=True)
class Security:
    """What a client presents: a bearer token, TLS roots, and a client certificate."""

    token: str | None = field(default=None, repr=False)
    tls: bool = False
    root_certificates: bytes | None = field(default=None, repr=False)
    client_cert: bytes | None = field(default=None, repr=False)
    client_key: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_files(
        cls,
        token: str | None = None,
        ca: str | os.PathLike[str] | None = None,
        client_cert: str | os.PathLike[str] | None = None,
        client_key: str | os.PathLike[str] | None = None,
        *,
        tls: bool = False,
    ) -> Security:
        """Credentials from PEM files (TLS is on when ``ca`` or ``tls`` is given)."""
        if (client_cert is None) != (client_key is None):
            raise ValueError("a client certificate and its key go together: give both")
        return cls(
            token=token or None,
            tls=tls or ca is not None or client_cert is not None,
            root_certificates=_read(str(ca), "NEURALOPS_TLS_CA") if ca else None,
            client_cert=_read(str(client_cert), "NEURALOPS_TLS_CLIENT_CERT")
            if client_cert
            else None,
            client_key=_read(str(client_key), "NEURALOPS_TLS_CLIENT_KEY") if client_key else None,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Security:
        """Credentials from NEURALOPS_TOKEN, NEURALOPS_TLS_CA, NEURALOPS_TLS and
        NEURALOPS_TLS_CLIENT_CERT/KEY (see the module docstring)."""
        e = os.environ if env is None else env

        def get(name: str) -> str | None:
            return e.get(name, "").strip() or None

        token = get("NEURALOPS_TOKEN")
        if token and token.startswith("@"):
            token = _read(token[1:], "NEURALOPS_TOKEN").decode().strip() or None
        return cls.from_files(
            token,
            get("NEURALOPS_TLS_CA"),
            get("NEURALOPS_TLS_CLIENT_CERT"),
            get("NEURALOPS_TLS_CLIENT_KEY"),
            tls=(get("NEURALOPS_TLS") or "0").lower() in ("1", "true", "yes", "on"),
        )


@functools.cache
def default_security() -> Security:
    """This process's credentials from the environment (read once)."""
    return Security.from_env()


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class _BearerToken(grpc.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """Adds ``authorization: Bearer <token>`` to every call."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        given = list(client_call_details.metadata or ())
        if any(k == "authorization" for k, _ in given):  # an explicit one wins
            return continuation(client_call_details, request)
        metadata = [*given, self._header]
        details = _CallDetails(
            client_call_details.method,
            client_call_details.timeout,
            metadata,
            client_call_details.credentials,
            client_call_details.wait_for_ready,
            client_call_details.compression,
        )
        return continuation(details, request)


def open_channel(
    address: str,
    security: Security | None = None,
    options: list[tuple[str, Any]] | None = None,
) -> grpc.Channel:
    """A new channel to ``address`` with ``security`` (default: from the environment).
    The caller owns it (close it when done); most code wants :func:`channel`."""
    sec = default_security() if security is None else security
    opts = options or []
    if sec.tls:
        creds = grpc.ssl_channel_credentials(
            root_certificates=sec.root_certificates,
            private_key=sec.client_key,
            certificate_chain=sec.client_cert,
        )
        ch = grpc.secure_channel(address, creds, options=opts)
    else:
        ch = grpc.insecure_channel(address, options=opts)
    if sec.token:
        ch = grpc.intercept_channel(ch, _BearerToken(sec.token))
    return ch


# Channels a forked child inherited: never used again, and never freed either (gRPC
# Python crashes now and then when a child closes or collects a channel its parent
# made; see grpc/grpc#41752), so the child keeps a reference to each until it exits.
_inherited: list[Any] = []


def keep_inherited(obj: Any) -> None:
    """Keep ``obj`` (a channel, or something holding one) alive in a forked child."""
    _inherited.append(obj)


def _forget_after_fork() -> None:
    # A forked child must not use the parent's channels (or a lock held at fork time).
    global _lock
    _lock = threading.Lock()
    _inherited.extend(_channels.values())
    _channels.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def _service_config(service: str, attempts: int) -> str:
    if attempts < 2:
        return json.dumps({})
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{"service": service}],
                    "retryPolicy": {
                        "maxAttempts": attempts,
                        "initialBackoff": "0.1s",
                        "maxBackoff": "1s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


def channel(
    address: str, service: str, *, attempts: int = 4, security: Security | None = None
) -> grpc.Channel:
    """The process-wide channel to ``address`` for ``service`` (created once), with
    ``security`` (default: from the environment)."""
    sec = default_security() if security is None else security
    key = (address, service, attempts, sec)
    with _lock:
        ch = _channels.get(key)
        if ch is None:
            ch = open_channel(
                address,
                sec,
                options=[
                    ("grpc.enable_retries", 1),
                    ("grpc.service_config", _service_config(service, attempts)),
                    ("grpc.max_send_message_length", 32 * 1024 * 1024),
                    ("grpc.max_receive_message_length", 32 * 1024 * 1024),
                    # Reconnect quickly after a server restart.
                    ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 2000),
                ],
            )
            _channels[key] = ch
        return ch
