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
    :class:`InvalidArgumentError` naming the key. When RunHistory cannot be reached
    the run is written to the local spool (fsynced) and delivered later by this or
    the next process; the call still returns the run id.
    """
    from neuralops.clients.delivery import sender_for

    msg = run_message(run_obj)
    sender = sender_for(address)
    try:
        RunHistoryClient(sender.address, timeout_s=timeout_s).log_run(msg)
    except UnavailableError as exc:
        sender.keep([msg])
        log.warning(
            "RunHistory unavailable (%s): run %s spooled for later delivery",
            exc.message,
            msg.run_id,
        )
    return msg.run_id
