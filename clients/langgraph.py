"""The LangGraph hook: a LangChain callback handler that records every run.

    graph.invoke(x, config={"callbacks": [RunHistoryCallback()]})
    graph = instrument(graph)          # or bind it once

It works with ``invoke``/``ainvoke``/``stream``/``astream``, subgraphs, parallel
branches, retries and interrupts. The callbacks only take timestamps and keep
references; building the record and sending it happen on the sender's thread
(:mod:`neuralops.clients.delivery`, :mod:`neuralops.clients.capture`), so the graph
never waits on the network, and a failure inside the hook is logged, never raised
into the graph.

What one run holds:

- **One invoke is one run.** A graph invoked on its own starts a run; everything
  started under it (nodes, subgraphs, and chains or graphs run inside a tool or a
  model call, such as a sub-agent used as a tool) is recorded inside it.
- **Nodes** as LangGraph's debug stream shows them: internal tasks LangGraph hides
  (``__start__``, tagged ``langsmith:hidden``) are never recorded, whatever the edge
  kind. A retried node has one entry per attempt (``attempt`` 1, 2, ...).
- **Calls** made inside a node: model (name, provider, parameters, messages,
  generation, token usage, time to first token when streamed), tool and retriever
  calls, nested when one runs inside another (a model call inside a tool's chain).
- **Control flow is not failure**: ``GraphBubbleUp`` and its subclasses (a handoff
  with ``Command(graph=Command.PARENT)``, ``interrupt()``) never mark a node or run
  failed. A handoff's node is completed with the Command as its output; ``interrupt()``
  and static breakpoints (``interrupt_before``/``interrupt_after``) give status
  interrupted, with the interrupt values and ids in ``Run.interrupts``.
- **Context**: ``thread_id`` (``config["configurable"]["thread_id"]``), the checkpoint
  the run paused on or resumed from, the config's ``tags`` and ``metadata``, and the
  user and session from ``metadata["user_id"]`` / ``metadata["session_id"]``.
  A resume (``Command(resume=...)``) is its own run on the same thread; its input is
  stored as ``{"resume": ...}``.
- **Reused run ids**: the server keeps the first run stored under a run id. When a
  caller passes a ``config["run_id"]`` this hook already recorded (typically reused for
  a resume), the new run is stored as ``"<run_id>~2"`` (``~3``, ...), a warning is
  logged and :attr:`RunHistoryCallback.reused_run_ids` counts it. (Across processes
  the hook cannot know: the server keeps the first run and answers ``created=false``.)
- **Budgets**: captured inputs/outputs are cut to ``node_budget_bytes`` per node or
  call and ``run_budget_bytes`` per run (marked ``truncated``); a run with more than
  ``max_node_logs`` node executions keeps the first ones and counts the rest in
  ``omitted_node_logs``.
- **Exit**: runs still open when the interpreter exits (a stream never closed) are
  recorded as cancelled before the sender closes.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import Runnable
from neuralops.clients import capture as cap
from neuralops.clients.batching import pause
from neuralops.clients.delivery import RunSender, sender_for
from neuralops.runhistory.v1 import runhistory_pb2 as pb

try:  # LangGraph >= 1.1 reports interrupts and resumes to GraphCallbackHandler subclasses
    from langgraph.callbacks import GraphCallbackHandler as _Base
except ImportError:  # pragma: no cover - older LangGraph: interrupts from __interrupt__ only
    _Base = BaseCallbackHandler  # type: ignore[misc,assignment]

log = logging.getLogger(__name__)

_HIDDEN = "langsmith:hidden"  # LangGraph's TAG_HIDDEN: tasks its debug stream leaves out
# The caller stopped the run: a `stream` loop left early, a cancelled task, Ctrl-C.
_CANCELLED = ("GeneratorExit", "CancelledError", "KeyboardInterrupt")
# Metadata LangGraph/LangChain add themselves; the rest is the caller's.
_INTERNAL_META = ("langgraph_", "checkpoint_", "ls_", "__")
_SEEN_RUN_IDS = 10_000
# Wall time from the monotonic clock: one clock read per callback instead of two.
_WALL_OFFSET = time.time() - time.perf_counter()


def _status_of(error: BaseException | None) -> str:
    """completed / interrupted / cancelled / failed; LangGraph control flow never fails."""
    if error is None:
        return "completed"
    names = {c.__name__ for c in type(error).__mro__}
    if "GraphInterrupt" in names:
        return "interrupted"
    if "GraphBubbleUp" in names:  # ParentCommand (handoff), GraphDrained: control flow
        return "completed"
    return "cancelled" if type(error).__name__ in _CANCELLED else "failed"


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:4000]


@dataclass(eq=False, slots=True)
class _Call:
    kind: str
    id: uuid.UUID
    name: str
    start: float
    started_at: float
    input: Any = None
    meta: dict[str, Any] | None = None
    params: dict[str, Any] | None = None
    end: float | None = None
    status: str = "running"
    error: str = ""
    output: Any = None
    first_token: float | None = None
    calls: list[_Call] = field(default_factory=list)


@dataclass(eq=False, slots=True)
class _Node:
    name: str
    ns: str
    step: int
    attempt: int
    start: float  # perf_counter, for the duration
    started_at: float  # epoch seconds, for the timestamps (converted on the sender)
    input: Any = None
    end: float | None = None
    status: str = "running"
    error: str = ""
    output: Any = None
    calls: list[_Call] = field(default_factory=list)


@dataclass(eq=False, slots=True)
class _Run:
    wpk_id: str
    run_id: str
    inputs: Any
    start: float
    tags: list[str]
    metadata: dict[str, Any]
    nodes: list[_Node] = field(default_factory=list)
    loose_calls: list[_Call] = field(default_factory=list)  # calls outside any node
    attempts: dict[str, int] = field(default_factory=dict)
    omitted: int = 0
    interrupted: bool = False
    interrupts: list[Any] = field(default_factory=list)
    breakpoint: str = ""
    checkpoint_id: str = ""


Container = _Node | _Call | None


def _key(run_id: Any) -> Any:
    """A run id as a dict key: its 128-bit int (cheap to hash; a UUID's __hash__ is
    Python code). A run id given as text (``config["run_id"]`` may be a str) maps to
    the same key as its UUID; text that is not a UUID is its own key."""
    if type(run_id) is uuid.UUID:
        return run_id.int
    try:
        return uuid.UUID(str(run_id)).int
    except ValueError:
        return str(run_id)


def _path(ns: str) -> str:
    """``"sub:1f..|inner:2a.."`` -> ``"sub"`` (parent namespaces, task ids dropped)."""
    parts = [p.split(":", 1)[0] for p in ns.split("|") if p]
    return "/".join(parts[:-1])


class RunHistoryCallback(_Base):
    """Records each graph run (its nodes and the calls inside them) and hands it to
    the background sender.

    ``wpk_id`` is taken from ``config["metadata"]["wpk_id"]``, else this handler's
    ``wpk_id`` argument, else the graph's name. The run id is ``config["run_id"]``
    when given, else LangGraph's own run id. Node inputs/outputs are kept when
    ``capture_node_io`` is set, call inputs/outputs when ``capture_calls`` is set,
    each string cut to ``max_io_chars`` and everything within the byte budgets.
    """

    run_inline = True  # cheap and thread-safe: no hop to an executor in async graphs
    raise_error = False

    def __init__(
        self,
        address: str | None = None,
        *,
        wpk_id: str | None = None,
        capture_node_io: bool = True,
        capture_calls: bool = True,
        max_io_chars: int = 2000,
        node_budget_bytes: int = 64_000,
        run_budget_bytes: int = 1_000_000,
        max_node_logs: int = 10_000,
        sender: RunSender | None = None,
    ) -> None:
        super().__init__()
        self._sender = sender or sender_for(address)
        self._wpk_id = wpk_id
        self._capture = capture_node_io
        self._capture_calls = capture_calls
        self._max = max_io_chars
        self._node_budget = node_budget_bytes
        self._run_budget = run_budget_bytes
        self._max_nodes = max_node_logs
        self._lock = threading.Lock()
        # Keyed by ``_key(run_id)`` (the id as an int): a UUID's own __hash__ is Python code, an int's is not.
        self._runs: dict[int, _Run] = {}
        # Every open run under a recorded graph run: (its root's key, where its children
        # go, the node or call record it is itself, if any).
        self._track: dict[int, tuple[int, Container, _Node | _Call | None]] = {}
        self._seen: OrderedDict[str, int] = OrderedDict()
        self.reused_run_ids = 0
        _close_open_runs_at_exit(self)

    @property
    def sender(self) -> RunSender:
        return self._sender

    # ------------------------------------------------------------- chains

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
                parent = self._track.get(_key(parent_run_id)) if parent_run_id is not None else None
                if parent is None:
                    self._start_run(
                        run_id, serialized, inputs, tags=tags, meta=meta, kwargs=kwargs, now=now
                    )
                    return
                root, where, _ = parent
                key = _key(run_id)
                node_name = meta.get("langgraph_node")
                if (
                    node_name is not None
                    and kwargs.get("name") == node_name
                    and not (tags and _HIDDEN in tags)
                ):
                    ns = str(meta.get("langgraph_checkpoint_ns", ""))
                    if not (isinstance(where, _Node) and where.ns == ns):
                        node = self._start_node(
                            root, node_name, ns=ns, meta=meta, inputs=inputs, now=now
                        )
                        self._track[key] = (root, node, node)
                        return
                if isinstance(where, _Call) and where.kind != "chain":
                    # A chain or graph run inside a tool or model call: a nested CHAIN call.
                    name = kwargs.get("name") or (serialized or {}).get("name") or "chain"
                    call = _Call("chain", run_id, str(name), now, now + _WALL_OFFSET)
                    call.input = inputs if self._capture_calls else None
                    where.calls.append(call)
                    self._track[key] = (root, call, call)
                    return
                self._track[key] = (root, where, None)  # a runnable inside a node: transparent
        except Exception:
            log.exception("neuralops hook: on_chain_start failed")

    def _start_run(
        self,
        run_id: uuid.UUID,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        tags: list[str] | None,
        meta: dict[str, Any],
        kwargs: dict[str, Any],
        now: float,
    ) -> None:
        name = kwargs.get("name") or (serialized or {}).get("name") or "LangGraph"
        wpk = meta.get("wpk_id") or self._wpk_id or name
        rid = str(run_id)
        n = self._seen.get(rid, 0) + 1
        self._seen[rid] = n
        if len(self._seen) > _SEEN_RUN_IDS:
            self._seen.popitem(last=False)
        if n > 1:
            self.reused_run_ids += 1
            log.warning(
                "neuralops hook: run id %s was already recorded by this process (reused for a "
                "resume?); this run is stored as %s~%d",
                rid,
                rid,
                n,
            )
            rid = f"{rid}~{n}"
        run = _Run(str(wpk), rid, inputs, now, list(tags or ()), meta)
        run.checkpoint_id = str(meta.get("checkpoint_id") or "")
        key = _key(run_id)
        self._runs[key] = run
        self._track[key] = (key, None, None)

    def _start_node(
        self,
        root: int,
        name: str,
        *,
        ns: str,
        meta: dict[str, Any],
        inputs: Any,
        now: float,
    ) -> _Node | None:
        run = self._runs[root]
        attempt = run.attempts.get(ns, 0) + 1
        run.attempts[ns] = attempt
        if len(run.nodes) >= self._max_nodes:
            run.omitted += 1
            return None
        node = _Node(
            name=str(name),
            ns=ns,
            step=int(meta.get("langgraph_step", 0)),
            attempt=attempt,
            start=now,
            started_at=now + _WALL_OFFSET,
            input=inputs if self._capture else None,
        )
        run.nodes.append(node)
        return node

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

    # ------------------------------------------------------------- calls

    def _call_start(
        self,
        kind: str,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None,
        *,
        name: str,
        inputs: Any,
        meta: dict[str, Any] | None,
        params: dict[str, Any] | None = None,
    ) -> None:
        now = time.perf_counter()
        with self._lock:
            parent = self._track.get(_key(parent_run_id)) if parent_run_id is not None else None
            if parent is None:
                return  # a model or tool used outside any recorded graph run
            root, where, _ = parent
            call = _Call(kind, run_id, name, now, now + _WALL_OFFSET, meta=meta, params=params)
            if self._capture_calls:
                call.input = inputs
            if where is None:
                self._runs[root].loose_calls.append(call)
            else:
                where.calls.append(call)
            self._track[_key(run_id)] = (root, call, call)

    def _call_end(self, run_id: uuid.UUID, output: Any, error: BaseException | None) -> None:
        now = time.perf_counter()
        with self._lock:
            entry = self._track.pop(_key(run_id), None)
        call = entry[2] if entry is not None else None
        if not isinstance(call, _Call):
            return
        call.end = now
        call.status = _status_of(error)
        if error is not None and call.status == "failed":
            call.error = _error_text(error)
        call.output = output

    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[Any]],
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            name = kwargs.get("name") or (serialized or {}).get("name") or "chat_model"
            self._call_start(
                "model",
                run_id,
                parent_run_id,
                name=str(name),
                inputs={"messages": messages},
                meta=metadata,
                params=kwargs.get("invocation_params"),
            )
        except Exception:
            log.exception("neuralops hook: on_chat_model_start failed")

    def on_llm_start(
        self,
        serialized: dict[str, Any] | None,
        prompts: list[str],
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            name = kwargs.get("name") or (serialized or {}).get("name") or "llm"
            self._call_start(
                "model",
                run_id,
                parent_run_id,
                name=str(name),
                inputs={"prompts": prompts},
                meta=metadata,
                params=kwargs.get("invocation_params"),
            )
        except Exception:
            log.exception("neuralops hook: on_llm_start failed")

    def on_llm_new_token(
        self, token: str | list[str | dict[str, Any]], *, run_id: uuid.UUID, **kwargs: Any
    ) -> None:
        entry = self._track.get(_key(run_id))
        call = entry[2] if entry is not None else None
        if isinstance(call, _Call) and call.first_token is None:
            call.first_token = time.perf_counter()

    def on_llm_end(self, response: Any, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        try:
            self._call_end(run_id, response, None)
        except Exception:
            log.exception("neuralops hook: on_llm_end failed")

    def on_llm_error(self, error: BaseException, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        try:
            self._call_end(run_id, None, error)
        except Exception:
            log.exception("neuralops hook: on_llm_error failed")

    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            name = kwargs.get("name") or (serialized or {}).get("name") or "tool"
            given = inputs if inputs is not None else {"input": input_str}
            self._call_start("tool", run_id, parent_run_id, name=str(name), inputs=given, meta=None)
        except Exception:
            log.exception("neuralops hook: on_tool_start failed")

    def on_tool_end(self, output: Any, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        try:
            self._call_end(run_id, {"output": output}, None)
        except Exception:
            log.exception("neuralops hook: on_tool_end failed")

    def on_tool_error(self, error: BaseException, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        try:
            self._call_end(run_id, None, error)
        except Exception:
            log.exception("neuralops hook: on_tool_error failed")

    def on_retriever_start(
        self,
        serialized: dict[str, Any] | None,
        query: str,
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            name = kwargs.get("name") or (serialized or {}).get("name") or "retriever"
            self._call_start(
                "retriever",
                run_id,
                parent_run_id,
                name=str(name),
                inputs={"query": query},
                meta=None,
            )
        except Exception:
            log.exception("neuralops hook: on_retriever_start failed")

    def on_retriever_end(self, documents: Any, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        try:
            self._call_end(run_id, {"documents": documents}, None)
        except Exception:
            log.exception("neuralops hook: on_retriever_end failed")

    def on_retriever_error(self, error: BaseException, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        try:
            self._call_end(run_id, None, error)
        except Exception:
            log.exception("neuralops hook: on_retriever_error failed")

    # ------------------------------------------------- LangGraph lifecycle

    def on_interrupt(self, event: Any) -> None:
        """LangGraph paused: interrupt() values, or a static breakpoint (no values)."""
        try:
            with self._lock:
                run = self._root_of(event.run_id)
                if run is None:
                    return
                run.interrupted = True
                run.interrupts.extend(event.interrupts)
                if not event.interrupts and event.status in ("interrupt_before", "interrupt_after"):
                    run.breakpoint = str(event.status)
                if not event.checkpoint_ns or not run.checkpoint_id:
                    run.checkpoint_id = str(event.checkpoint_id)
        except Exception:
            log.exception("neuralops hook: on_interrupt failed")

    def _root_of(self, run_id: uuid.UUID | None) -> _Run | None:
        entry = self._track.get(_key(run_id)) if run_id is not None else None
        return self._runs.get(entry[0]) if entry is not None else None

    def on_resume(self, event: Any) -> None:
        try:
            with self._lock:
                run = self._root_of(event.run_id)
                if run is not None and not run.checkpoint_id:
                    run.checkpoint_id = str(event.checkpoint_id)
        except Exception:
            log.exception("neuralops hook: on_resume failed")

    # ------------------------------------------------------------- internals

    def _finish(self, run_id: uuid.UUID, outputs: Any, error: BaseException | None) -> None:
        now = time.perf_counter()
        outcome = _status_of(error)
        with self._lock:
            key = _key(run_id)
            entry = self._track.pop(key, None)
            if entry is None:
                return
            root, _, own = entry
            if outcome == "interrupted" and root in self._runs:
                self._runs[root].interrupted = True
            run = self._runs.pop(key, None) if root == key else None
        node = own if isinstance(own, _Node) else None
        call = own if isinstance(own, _Call) else None
        if node is not None:
            node.end = now
            node.status = outcome
            if outcome == "failed" and error is not None:
                node.error = _error_text(error)
            elif self._capture:
                # A handoff (ParentCommand) ends its node: the Command is what it returned.
                node.output = error.args[0] if error is not None and error.args else outputs
        if call is not None:
            call.end, call.status, call.output = now, outcome, outputs
            if outcome == "failed" and error is not None:
                call.error = _error_text(error)
        if run is None:
            return
        if isinstance(outputs, dict) and "__interrupt__" in outputs:
            run.interrupted = True
            # Also what LangGraph returned (older LangGraph has no on_interrupt); ids dedupe.
            found = outputs["__interrupt__"]
            if isinstance(found, list | tuple):
                run.interrupts.extend(found)
        status = "interrupted" if run.interrupted else outcome
        error_text = _error_text(error) if error is not None and status == "failed" else ""
        self._submit(run, outputs, status, now, error_text)

    def _submit(self, run: _Run, outputs: Any, status: str, now: float, error: str) -> None:
        duration_ms = round((now - run.start) * 1000)
        # Snapshot the top-level containers now; deep conversion happens on the sender.
        out = dict(outputs) if isinstance(outputs, dict) else outputs
        self._sender.submit(lambda: self._record(run, out, status, duration_ms, error))

    def close_open_runs(self) -> int:
        """Record every run still open as cancelled (used at interpreter exit)."""
        now = time.perf_counter()
        with self._lock:
            runs = list(self._runs.values())
            self._runs.clear()
            self._track.clear()
        for run in runs:
            for n in run.nodes:
                if n.end is None:
                    n.end, n.status = now, "cancelled"
            self._submit(run, None, "cancelled", now, "")
        return len(runs)

    # ------------------------------------------------ sender thread (build)

    def _record(self, run: _Run, outputs: Any, status: str, duration_ms: int, error: str) -> pb.Run:
        budget = cap.Budget(self._run_budget, self._max)
        msg = pb.Run(
            wpk_id=run.wpk_id,
            run_id=run.run_id,
            status=cap.status(status),
            duration_ms=duration_ms,
            error=error,
            omitted_node_logs=run.omitted,
        )
        truncated = False
        for target, value in ((msg.inputs, run.inputs), (msg.outputs, outputs)):
            truncated |= cap.fill(target, value, budget, self._node_budget)
        self._context(msg, run)
        usage = _Totals()
        for i, n in enumerate(run.nodes):
            if i and i % 16 == 0:
                pause()
            node, cut = self._node_message(n, status, budget, usage)
            truncated |= cut
            msg.node_logs.append(node)
        for c in run.loose_calls:
            _, cut = self._call_message(c, budget, usage)
            truncated |= cut
        msg.truncated = truncated
        usage.fill(msg.usage)
        self._interrupts(msg, run, budget)
        return msg

    def _context(self, msg: pb.Run, run: _Run) -> None:
        meta = run.metadata
        msg.thread_id = str(meta.get("thread_id") or "")[:200]
        msg.checkpoint_id = run.checkpoint_id[:200]
        msg.user_id = str(meta.get("user_id") or "")[:200]
        msg.session_id = str(meta.get("session_id") or "")[:200]
        msg.tags.extend(str(t)[:200] for t in run.tags[:64])
        given = {
            k: v
            for k, v in meta.items()
            if not k.startswith(_INTERNAL_META) and k not in ("thread_id", "checkpoint_id")
        }
        if given:
            cap.fill(
                msg.metadata, given, cap.Budget(self._node_budget, self._max), self._node_budget
            )

    def _interrupts(self, msg: pb.Run, run: _Run, budget: cap.Budget) -> None:
        seen: set[str] = set()
        found = list(run.interrupts)
        for i in found:
            iid = str(getattr(i, "id", ""))
            if iid in seen:
                continue
            seen.add(iid)
            item = pb.Interrupt(id=iid)
            d, _ = cap.capture({"v": getattr(i, "value", None)}, budget, self._node_budget)
            if d is not None:
                item.value.CopyFrom(cap.struct(d).fields["v"])
            msg.interrupts.append(item)
        if not found and run.breakpoint:
            item = pb.Interrupt()
            item.value.struct_value.update({"breakpoint": run.breakpoint})
            msg.interrupts.append(item)

    def _node_message(
        self, n: _Node, run_status: str, budget: cap.Budget, usage: _Totals
    ) -> tuple[pb.NodeLog, bool]:
        end = n.end if n.end is not None else n.start
        node = pb.NodeLog(
            name=n.name,
            path=_path(n.ns),
            step=n.step,
            attempt=n.attempt,
            duration_ms=round((end - n.start) * 1000),
            status=cap.status(
                "completed" if n.status == "running" and run_status == "completed" else n.status
            ),
            error=n.error,
        )
        cap.stamp(n.started_at, node.start_time)
        cap.stamp(n.started_at + (end - n.start), node.end_time)
        truncated = False
        if self._capture:
            # The update first: it is what the node did; the input is often the whole state.
            for target, value in ((node.output, n.output), (node.input, n.input)):
                truncated |= cap.fill(target, value, budget, self._node_budget)
        for c in n.calls:
            call, cut = self._call_message(c, budget, usage)
            truncated |= cut
            node.calls.append(call)
        node.truncated = truncated
        return node, truncated

    def _call_message(self, c: _Call, budget: cap.Budget, usage: _Totals) -> tuple[pb.Call, bool]:
        end = c.end if c.end is not None else c.start
        call = pb.Call(
            id=str(c.id),
            kind=cap.kind(c.kind),
            name=c.name,
            duration_ms=round((end - c.start) * 1000),
            status=cap.status("cancelled" if c.status == "running" else c.status),
            error=c.error,
        )
        cap.stamp(c.started_at, call.start_time)
        cap.stamp(c.started_at + (end - c.start), call.end_time)
        output = c.output
        if c.kind == "model":
            meta = c.meta or {}
            params = c.params or {}
            tokens, model = cap.usage_of(output) if output is not None else ({}, "")
            call.model = str(
                meta.get("ls_model_name")
                or params.get("model")
                or params.get("model_name")
                or model
            )
            call.provider = str(meta.get("ls_provider") or "")
            if tokens:
                for k, v in tokens.items():
                    setattr(call.usage, k, v)
            if c.first_token is not None:
                call.time_to_first_token_ms = round((c.first_token - c.start) * 1000)
            if params and self._capture_calls:
                cap.fill(call.parameters, params, budget, self._node_budget)
            output = cap.generation_output(output) if output is not None else None
        usage.add(c.kind, call)
        truncated = False
        if self._capture_calls:
            for target, value in ((call.output, output), (call.input, c.input)):
                truncated |= cap.fill(target, value, budget, self._node_budget)
        for inner in c.calls:
            sub, cut = self._call_message(inner, budget, usage)
            truncated |= cut
            call.calls.append(sub)
        call.truncated = truncated
        return call, truncated


class _Totals:
    """Run-level usage, summed over every call (nested ones included)."""

    def __init__(self) -> None:
        self.counts = {"model": 0, "tool": 0, "retriever": 0}
        self.failed = 0
        self.tokens = pb.Usage()

    def add(self, kind: str, call: pb.Call) -> None:
        if kind in self.counts:
            self.counts[kind] += 1
        if call.status == pb.RUN_STATUS_FAILED and kind == "model":
            self.failed += 1
        u, t = call.usage, self.tokens
        t.input_tokens += u.input_tokens
        t.output_tokens += u.output_tokens
        t.total_tokens += u.total_tokens
        t.cached_input_tokens += u.cached_input_tokens
        t.reasoning_tokens += u.reasoning_tokens

    def fill(self, usage: pb.RunUsage) -> None:
        usage.model_calls = self.counts["model"]
        usage.tool_calls = self.counts["tool"]
        usage.retriever_calls = self.counts["retriever"]
        usage.failed_calls = self.failed
        usage.tokens.CopyFrom(self.tokens)


# ------------------------------------------------------------------ exit

_open_hooks: weakref.WeakSet[RunHistoryCallback] = weakref.WeakSet()
_exit_registered: set[int] = set()
_exit_lock = threading.Lock()


def _close_open_runs_at_exit(hook: RunHistoryCallback) -> None:
    """Registered after the hook's sender registered its own exit close, so (atexit
    runs last-in first-out) open runs are handed over before the sender closes."""
    _open_hooks.add(hook)
    with _exit_lock:
        key = id(hook.sender)
        if key not in _exit_registered:
            _exit_registered.add(key)
            atexit.register(_exit, hook.sender)


def _exit(sender: RunSender) -> None:
    closed = 0
    for hook in list(_open_hooks):
        if hook.sender is sender:
            try:
                closed += hook.close_open_runs()
            except Exception:
                log.exception("neuralops hook: could not record open runs at exit")
    if closed:
        log.info("neuralops hook: %d run(s) still open at exit recorded as cancelled", closed)


def instrument(
    graph: Runnable[Any, Any], callback: RunHistoryCallback | None = None, **kwargs: Any
) -> Runnable[Any, Any]:
    """Bind a RunHistoryCallback to a compiled graph once: every invoke/stream of the
    returned runnable is recorded (its other methods pass through to the graph).
    ``kwargs`` go to RunHistoryCallback."""
    handler = callback or RunHistoryCallback(**kwargs)
    return graph.with_config(callbacks=[handler])
