"""The outbox relay: delivers stored-run notices to RegistryService.NotifyRun.

It runs beside RunHistory (also when all services share one process, it still goes
through gRPC) and never touches the request path. A registry that is down leaves
the rows waiting; each is retried with exponential backoff until it is delivered.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import grpc
from neuralops.clients.channels import Security, open_channel
from neuralops.clients.enums import RUN_STATUS
from neuralops.registry.v1 import registry_pb2, registry_pb2_grpc
from neuralops.servers import metrics, outbox
from neuralops.servers.convert import to_timestamp
from neuralops.servers.db import Database
from neuralops.servers.runhistory.storage import NOTIFY_TOPIC

log = logging.getLogger(__name__)


class OutboxRelay:
    """One step claims a batch of due notices and delivers them in order."""

    def __init__(
        self,
        db: Database,
        registry_addr: str,
        *,
        batch: int = 200,
        timeout_s: float = 5.0,
        max_backoff_s: float = 30.0,
        security: Security | None = None,
    ) -> None:
        self._db = db
        # Token and TLS from the server's config (servers.auth.client_security).
        self._channel = open_channel(registry_addr, security or Security())
        self._stub = registry_pb2_grpc.RegistryServiceStub(self._channel)
        self._batch = batch
        self._timeout_s = timeout_s
        self._max_backoff_s = max_backoff_s

    def step(self) -> bool:
        items = outbox.claim(self._db, NOTIFY_TOPIC, self._batch, timedelta(seconds=60))
        if not items:
            return False
        # NotifyRun is monotonic and idempotent: of a workflow's notices only the newest
        # can change anything, so each workflow gets one call per batch, and the calls
        # go out concurrently (arrival order does not matter).
        groups: dict[str, list[outbox.OutboxItem]] = {}
        for item in items:
            groups.setdefault(str(item.payload["workflow_id"]), []).append(item)
        calls = []
        for group in groups.values():
            newest = max(group, key=lambda i: (str(i.payload["created_at"]), str(i.payload["id"])))
            call = self._stub.NotifyRun.future(_request(newest.payload), timeout=self._timeout_s)
            calls.append((group, newest, call))
        done: list[str] = []
        waiting: list[outbox.OutboxItem] = []
        error = ""
        for group, newest, call in calls:
            try:
                call.result()
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else None
                details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
                if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
                    # A notice the registry will never accept (NOT_FOUND: it found no
                    # such stored run when it asked RunHistory): drop it, loudly.
                    log.error("registry refused notice %s: %s", newest.payload, details)
                    done.extend(i.id for i in group)
                else:
                    waiting.extend(group)
                    error = f"{code}: {details}"
                continue
            done.extend(i.id for i in group)
        if done:
            outbox.delivered(self._db, done)
            metrics.OUTBOX_DELIVERED.labels(NOTIFY_TOPIC).inc(len(done))
        outbox.retry_later(
            self._db,
            [
                (item, timedelta(seconds=min(self._max_backoff_s, 0.5 * 2.0**item.attempts)))
                for item in waiting
            ],
            error,
        )
        if waiting:
            log.warning("registry unreachable, %d notices wait: %s", len(waiting), error)
            return False
        return True

    def close(self) -> None:
        self._channel.close()


def _request(payload: dict[str, object]) -> registry_pb2.NotifyRunRequest:
    created = datetime.fromisoformat(str(payload["created_at"])).astimezone(UTC)
    return registry_pb2.NotifyRunRequest(
        workflow_id=str(payload["workflow_id"]),
        run_id=str(payload["run_id"]),
        id=str(payload["id"]),
        status=RUN_STATUS.to_proto(str(payload["status"])),
        created_at=to_timestamp(created),
    )
