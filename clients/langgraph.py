"""The LangGraph hook: a LangChain callback handler that records every run.

    graph.invoke(x, config={"callbacks": [RunHistoryCallback()]})
    graph = instrument(graph)          # or bind it once

It works with ``invoke``/``ainvoke``/``stream``/``astream``, subgraphs, parallel
branches, retries and interrupts. The callbacks only take timestamps and keep
references; building the record and sending it happen on the sender's thread
(:mod:`neuralops.clients.delivery`), so the graph never waits on the network,
and a failure inside the hook is logged, never raised into the graph.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import Runnable
from neuralops.clients.delivery import RunSender, sender_for
from neuralops.clients.runs import jsonable, run_message
from neuralops.runhistory.v1 import runhistory_pb2 as pb

log = logging.getLogger(__name__)

_INTERRUPTS = ("GraphInterrupt", "NodeInterrupt", "Interrupt")
# The caller stopped the run: a `stream` loop left early, a cancelled task, Ctrl-C.
_CANCELLED = ("GeneratorExit", "CancelledError", "KeyboardInterrupt")


def _status_of(error: BaseException | None) -> str:
    if error is None:
        return "completed"
    name = type(error).__name__
    if name in _INTERRUPTS:
        return "interrupted"
    return "cancelled" if name in _CANCELLED else "failed"


@dataclass
class _Node:
    name: str
    ns: str
    step: int
    start: float  # perf_counter, for the duration
    started_at: float  # epoch seconds, for the timestamps (converted on the sender)
    input: Any = None
    end: float | None = None
    status: str = "running"
    error: str = ""
    output: Any = None


@dataclass
class _Run:
    wpk_id: str
    run_id: str
    inputs: Any
    start: float
    nodes: list[_Node] = field(default_factory=list)
    interrupted: bool = False


def _path(ns: str) -> str:
    """``"sub:1f..|inner:2a.."`` -> ``"sub"`` (parent namespaces, task ids dropped)."""
    parts = [p.split(":", 1)[0] for p in ns.split("|") if p]
    return "/".join(parts[:-1])


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:4000]


class RunHistoryCallback(BaseCallbackHandler):
    """Records each graph run (and its nodes) and hands it to the background sender.

    ``wpk_id`` is taken from ``config["metadata"]["wpk_id"]``, else this handler's
    ``wpk_id`` argument, else the graph's name. The run id is ``config["run_id"]``
    when given, else LangGraph's own run id. Node inputs/outputs are kept, cut to
    ``max_io_chars`` per string, when ``capture_node_io`` is set.
    """

    run_inline = True  # cheap and thread-safe: no hop to an executor in async graphs
    raise_error = False

    def __init__(
        self,
        address: str | None = None,
        *,
        wpk_id: str | None = None,
        capture_node_io: bool = True,
        max_io_chars: int = 2000,
        sender: RunSender | None = None,
    ) -> None:
        super().__init__()
        self._sender = sender or sender_for(address)
        self._wpk_id = wpk_id
        self._capture = capture_node_io
        self._max = max_io_chars
        self._lock = threading.Lock()
        self._runs: dict[uuid.UUID, _Run] = {}
        self._owner: dict[uuid.UUID, uuid.UUID] = {}  # any chain run -> its root run
        self._nodes: dict[uuid.UUID, _Node] = {}

    @property
    def sender(self) -> RunSender:
        return self._sender

    # ------------------------------------------------------------- callbacks

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            now = time.perf_counter()
            meta = metadata or {}
            with self._lock:
                root = self._owner.get(parent_run_id) if parent_run_id is not None else None
                if root is None:
                    name = kwargs.get("name") or (serialized or {}).get("name") or "LangGraph"
                    wpk = meta.get("wpk_id") or self._wpk_id or name
                    self._runs[run_id] = _Run(str(wpk), str(run_id), inputs, now)
                    self._owner[run_id] = run_id
                    return
                self._owner[run_id] = root
                node_name = meta.get("langgraph_node")
                if node_name is None or kwargs.get("name") != node_name:
                    return  # a runnable inside a node
                ns = str(meta.get("langgraph_checkpoint_ns", ""))
                parent = self._nodes.get(parent_run_id) if parent_run_id is not None else None
                if parent is not None and parent.ns == ns:
                    return  # a compiled subgraph named like the node that runs it
                node = _Node(
                    name=str(node_name),
                    ns=ns,
                    step=int(meta.get("langgraph_step", 0)),
                    start=now,
                    started_at=time.time(),
                    input=inputs if self._capture else None,
                )
                self._nodes[run_id] = node
                self._runs[root].nodes.append(node)
        except Exception:
            log.exception("neuralops hook: on_chain_start failed")

    def on_chain_end(
        self,
        outputs: Any,
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            self._finish(run_id, outputs, None)
        except Exception:
            log.exception("neuralops hook: on_chain_end failed")

    def on_chain_error(
        self,
        error: BaseException,
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            self._finish(run_id, None, error)
        except Exception:
            log.exception("neuralops hook: on_chain_error failed")

    # ------------------------------------------------------------- internals

    def _finish(self, run_id: uuid.UUID, outputs: Any, error: BaseException | None) -> None:
        now = time.perf_counter()
        with self._lock:
            root = self._owner.pop(run_id, None)
            node = self._nodes.pop(run_id, None)
            outcome = _status_of(error)
            if node is not None:
                node.end = now
                node.status = outcome
                if outcome == "failed" and error is not None:
                    node.error = _error_text(error)
                elif outcome == "completed" and self._capture:
                    node.output = outputs
            if root is not None and outcome == "interrupted":
                self._runs[root].interrupted = True
            if root != run_id:
                return
            run = self._runs.pop(run_id)
        if isinstance(outputs, dict) and "__interrupt__" in outputs:
            run.interrupted = True
        status = "interrupted" if run.interrupted else outcome
        duration_ms = round((now - run.start) * 1000)
        error_text = _error_text(error) if error is not None and status == "failed" else ""
        # Snapshot the top-level containers now; deep conversion happens on the sender.
        out = dict(outputs) if isinstance(outputs, dict) else outputs
        self._sender.submit(lambda: self._record(run, out, status, duration_ms, error_text))

    def _record(self, run: _Run, outputs: Any, status: str, duration_ms: int, error: str) -> pb.Run:
        def as_dict(value: Any) -> dict[str, Any]:
            v = jsonable(value, self._max)
            return v if isinstance(v, dict) else {"value": v}

        nodes = []
        for n in run.nodes:
            end = n.end if n.end is not None else n.start
            d: dict[str, Any] = {
                "name": n.name,
                "path": _path(n.ns),
                "step": n.step,
                "start_time": datetime.fromtimestamp(n.started_at, UTC),
                "end_time": datetime.fromtimestamp(n.started_at + (end - n.start), UTC),
                "duration_ms": round((end - n.start) * 1000),
                "status": "completed"
                if n.status == "running" and status == "completed"
                else n.status,
                "error": n.error,
            }
            if self._capture:
                d["input"] = as_dict(n.input) if n.input is not None else None
                d["output"] = as_dict(n.output) if n.output is not None else None
            nodes.append(d)
        return run_message(
            {
                "wpk_id": run.wpk_id,
                "run_id": run.run_id,
                "inputs": as_dict(run.inputs) if run.inputs is not None else {},
                "outputs": as_dict(outputs) if outputs is not None else {},
                "status": status,
                "duration_ms": duration_ms,
                "node_logs": nodes,
                "error": error,
            }
        )


def instrument(
    graph: Runnable[Any, Any], callback: RunHistoryCallback | None = None, **kwargs: Any
) -> Runnable[Any, Any]:
    """Bind a RunHistoryCallback to a compiled graph once: every invoke/stream of the
    returned runnable is recorded (its other methods pass through to the graph).
    ``kwargs`` go to RunHistoryCallback."""
    handler = callback or RunHistoryCallback(**kwargs)
    return graph.with_config(callbacks=[handler])
