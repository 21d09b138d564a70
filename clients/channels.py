"""Shared gRPC channels: one per address per process, with retries on UNAVAILABLE.

Retries use gRPC's own retry policy (service config), applied to every method of
the service: our write RPCs are idempotent, so a retry never duplicates a run.
"""

from __future__ import annotations

import json
import os
import threading

import grpc

_lock = threading.Lock()
_channels: dict[tuple[str, str, int], grpc.Channel] = {}


def _forget_after_fork() -> None:
    # A forked child must not use the parent's channels (or a lock held at fork time).
    global _lock
    _lock = threading.Lock()
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


def channel(address: str, service: str, *, attempts: int = 4) -> grpc.Channel:
    """The process-wide channel to ``address`` for ``service`` (created once)."""
    key = (address, service, attempts)
    with _lock:
        ch = _channels.get(key)
        if ch is None:
            ch = grpc.insecure_channel(
                address,
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
