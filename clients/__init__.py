"""NeuralOps clients: typed gRPC clients and the LangGraph hook.

from neuralops.clients import log_run, RunHistoryClient
from neuralops.clients.langgraph import RunHistoryCallback
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from neuralops.clients.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NeuralOpsError,
    NotFoundError,
    RunDroppedError,
    UnavailableError,
)
from neuralops.clients.runhistory import LogResult, RunHistoryClient
from neuralops.clients.runs import run_message

__all__ = [
    "AlreadyExistsError",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "LogResult",
    "NeuralOpsError",
    "NotFoundError",
    "RunDroppedError",
    "RunHistoryClient",
    "UnavailableError",
    "log_run",
]

log = logging.getLogger(__name__)


def log_run(
    run_obj: Mapping[str, Any], *, address: str | None = None, timeout_s: float = 5.0
) -> str:
    """Store one run and return its ``run_id`` (generated when the dict has none).

    ``run_obj`` is the seed's dict: ``{'wpk_id', 'run_id', 'inputs', 'outputs',
    'status', 'node_logs', 'duration_ms'}``; a malformed one raises
    :class:`InvalidArgumentError` naming the key. When RunHistory cannot take it now
    (unreachable, deadline, overloaded) the run is kept for later delivery by this or
    the next process: in the local spool (fsynced), or in the sender's bounded memory
    buffer if the spool's disk refuses; the call still returns the run id. It raises
    :class:`RunDroppedError` only when the run could not be kept either, and the
    server's own refusal (e.g. :class:`InvalidArgumentError`) otherwise.
    """
    from neuralops.clients.delivery import sender_for
    from neuralops.clients.exporter import is_transient

    msg = run_message(run_obj)
    sender = sender_for(address)
    try:
        RunHistoryClient(sender.address, timeout_s=timeout_s).log_run(msg)
    except NeuralOpsError as exc:
        if not is_transient(exc.code, exc.message):
            raise
        if not sender.keep([msg]):
            raise RunDroppedError(
                exc.code,
                f"run {msg.run_id} could not be delivered ({exc.message}) nor kept "
                "(spool not writable, memory bound full)",
                reason="RUN_DROPPED",
            ) from exc
        log.warning(
            "RunHistory cannot take runs now (%s): run %s kept for later delivery",
            exc.message,
            msg.run_id,
        )
    return msg.run_id
