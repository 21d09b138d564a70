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

- **One invoke is one run.** A graph invoked on its own starts a run (a chain invoked
  with the hook records nothing unless a graph runs under it: then the chain is the run,
  holding the graph's nodes); everything
  started under it (nodes, subgraphs, and chains or graphs run inside a tool or a
  model call, such as a sub-agent used as a tool) is recorded inside it. So is a graph
  instrumented with a hook of its own when it runs inside a run another hook records (a
  sub-agent and its supervisor each instrumented): one run, not two.
- **Nodes** as LangGraph's debug stream shows them: internal tasks LangGraph hides
  (``__start__``, tagged ``langsmith:hidden``) are never recorded, whatever the edge
  kind. A retried node has one entry per attempt (``attempt`` 1, 2, ...).
- **Calls** made inside a node: model (name, provider, parameters, messages,
  generation, token usage, time to first token when streamed), tool and retriever
  calls, nested when one runs inside another (a model call inside a tool's chain).
  Token usage is read when the call ends (what the provider billed, whatever a later
  node does to the message), once per response (several choices carry the same usage);
  time to first token is the first streamed chunk with text or a tool call (not a
  role-only chunk).
- **Control flow is not failure**: ``GraphBubbleUp`` and its subclasses (a handoff
  with ``Command(graph=Command.PARENT)``, ``interrupt()``) never mark a node or run
  failed. A handoff's node is completed with the Command as its output; ``interrupt()``
  and static breakpoints (``interrupt_before``/``interrupt_after``) give status
  interrupted, with the interrupt values and ids in ``Run.interrupts``; so does a drain
  (``GraphDrained``: ``{"drained": reason}``). The run's own graph decides: a
  subgraph's interrupt that a node or tool catches pauses nothing, and an error LangGraph
  raises to the caller fails the run even if a parallel branch paused. A node timeout or a ``CancelledError`` the
  node raised (``NodeTimeoutError``/``NodeCancelledError``) fails the node's attempts,
  though the node itself only sees its task cancelled.
- **Paths**: ``NodeLog.path`` is the namespace LangGraph's debug stream gives the node
  (the graph that ran it): ``""`` for the top graph and for functional API tasks.
- **Not seen**: a node served from LangGraph's cache runs no callbacks, so it is not
  recorded. Node inputs are held as given (not copied): a node that changes its input in
  place changes its record.
- **Context**: ``thread_id`` (``config["configurable"]["thread_id"]``, as LangGraph puts it
  in the metadata: a ``metadata["thread_id"]`` the caller sets wins), the checkpoint
  the run paused on or resumed from, the config's ``tags`` and ``metadata``, and the
  user and session from ``metadata["user_id"]`` / ``metadata["session_id"]``.
  A resume (``Command(resume=...)``) is its own run on the same thread; its input is
  stored as ``{"resume": ...}``.
- **Reused run ids**: the server keeps the first run stored under a run id. When a
  caller passes a ``config["run_id"]`` this hook already recorded (typically reused for
  a resume), the new run is stored as ``"<run_id>~2"`` (``~3``, ...), a warning is
  logged and :attr:`RunHistoryCallback.reused_run_ids` counts it, as the run is
  recorded on the sender's thread. (Across processes the hook cannot know: the server
  keeps the first run and answers ``created=false``.)
- **Budgets**: captured inputs/outputs are cut to ``node_budget_bytes`` per node or
  call and ``run_budget_bytes`` per run (marked ``truncated``); a run with more than
  ``max_node_logs`` node executions keeps the first ones and counts the rest in
  ``omitted_node_logs``.
- **Exit**: runs still open when the interpreter exits (a stream never closed) are
  recorded as cancelled before the sender closes.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import Runnable
from neuralops.clients import capture as cap
from neuralops.clients.batching import pace
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
    if "GraphInterrupt" in names or "GraphDrained" in names:
        # interrupt(), or a drain (RunControl.request_drain): paused at a checkpoint
        # the run can be resumed from
        return "interrupted"
    if "GraphBubbleUp" in names:  # ParentCommand (a handoff): control flow
        return "completed"
    return "cancelled" if type(error).__name__ in _CANCELLED else "failed"


def _error_text(error: BaseException) -> str:
    try:
        text = f"{type(error).__name__}: {error}"
    except Exception:  # an exception whose __str__ raises still fails its run
        text = type(error).__name__
    return cap.valid_text(text[:4000])


def _outcome(error: BaseException | None) -> tuple[str, str]:
    """Status and error text, read when the run ends (the exception may change later)."""
    if error is None:
        return "completed", ""
    status = _status_of(error)
    return status, _error_text(error) if status == "failed" else ""


@dataclass(eq=False, slots=True)
class _Call:
    kind: str
    id: str
    name: str
    start: float
    started_at: float
    input: Any = None
    model: str = ""
    provider: str = ""
    params: dict[str, Any] | None = None
    end: float | None = None
    status: str = "running"
    error: str = ""
    output: Any = None
    first_token: float | None = None
    calls: list[_Call] = field(default_factory=list)
    tool_call_id: str = ""


@dataclass(eq=False, slots=True)
class _Node:
    name: str
    ns: str  # langgraph_checkpoint_ns: the task's own namespace
    path: str  # the namespace of the graph that ran it, task ids dropped
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
    pause: dict[str, str] | None = None  # why it paused with no interrupt value
    checkpoint_id: str = ""


Container = _Node | _Call | None
# Open run ids -> (where their children go, the node or call they are).
_Track = dict[Any, tuple[Container, _Node | _Call | None]]


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


_NO_META: Mapping[str, Any] = MappingProxyType({})
_now = time.perf_counter
_snapshot = cap.snapshot


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _id_text(key: Any) -> str:
    """A run id back from its key (``_key``)."""
    return str(uuid.UUID(int=key)) if isinstance(key, int) else str(key)


# LangGraph marks the runs of its graphs (unless the caller set this key first).
_GRAPH = "ls_integration"


def _is_graph_run(rec: _Open) -> bool:
    """Whether a root run is a graph's: only those are recorded. A chain invoked on its
    own with the hook (no graph) is not; a graph on a LangGraph too old to mark its runs
    is known by its nodes. (on_chain_end, once per invoke, tests this inline.)"""
    return bool(rec.nodes) or _GRAPH in rec[3]


def _carries_output(chunk: Any) -> bool:
    """A streamed chunk with no text that still carries output: a tool call's first
    fragment (or a provider's function call)."""
    message = getattr(chunk, "message", None)
    if message is None:
        return False
    return bool(
        getattr(message, "tool_call_chunks", None)
        or (getattr(message, "additional_kwargs", None) or {}).get("function_call")
    )


def _cancelled_attempts(run: _Run, timed_out: str | None, error_text: str) -> None:
    """Node attempts that saw only their task cancelled but failed, as LangGraph tells:
    one it retried (it retries failures only: a node timeout, a CancelledError the node
    raised), and the one it names in the run's NodeTimeoutError/NodeCancelledError."""
    last = {n.ns: n for n in run.nodes}
    for n in run.nodes:
        if n.status != "cancelled":
            continue
        if timed_out and n.name == timed_out:
            n.status, n.error = "failed", error_text
        elif n is not last[n.ns]:
            n.status = "failed"
            n.error = n.error or "CancelledError: the attempt was cancelled, and retried"


def _short(value: Any, limit: int = 200) -> str:
    """A context value (thread, user, tag, ...) as text for the record; never raises."""
    if value is None:
        return ""
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return cap.valid_text(text[:limit])


def _graph_path(ns: str) -> str:
    """A task's namespace -> the graph that ran it: ``"sub:1f..|inner:2a.."`` -> ``"sub"``
    (parent namespaces, task ids dropped)."""
    parts = [p.split(":", 1)[0] for p in ns.split("|") if p]
    return "/".join(parts[:-1])


def _called_from_a_task(lg_path: Any) -> bool:
    """``langgraph_path`` of a functional API task called from a running task:
    ``("__pregel_push", <the caller's path>, index, True)``."""
    return (
        isinstance(lg_path, tuple)
        and len(lg_path) >= 4
        and lg_path[0] == "__pregel_push"
        and isinstance(lg_path[1], tuple)
    )


class _Open(list[Any]):
    """A graph run being recorded, as the callbacks saw it: an append-only event log.

    The object *is* the log: its first ``_ROOT`` entries are the run's own start
    (serialized, inputs, tags, metadata, name, start, run id), then the callbacks only
    extend it with an event's fields (``list.extend`` of a tuple is atomic, so parallel
    branches on other threads need no lock; and no tuple per event stays alive for the
    garbage collector to scan while the run waits to be built) and map each open run id
    to it; the tree of nodes and calls is rebuilt from the log on the sender's thread
    (:meth:`RunHistoryCallback._assemble`). It is also what the sender's queue holds:
    calling it builds the record. The graph's thread makes one per invoke, so it has
    no Python ``__init__`` and sets only what every run needs; the rest is set when it
    happens and read with a default.
    """

    __slots__ = (
        "calls",
        "cancelled_at",
        "ended",
        "failed_node",
        "first_tokens",
        "hook",
        "key",
        "nodes",
        "stored",
    )

    hook: RunHistoryCallback
    key: Any
    nodes: int  # node starts seen, and calls: past a bound their I/O is not kept
    calls: int
    # Set when they happen (read with getattr and a default):
    first_tokens: dict[Any, float]  # by the first streamed token
    ended: bool  # by the run's end
    cancelled_at: float  # by the exit handler, for a run still open
    stored: str  # the id it is stored under, by its first build
    failed_node: str  # by the run's end, when LangGraph names the node that timed out

    def __call__(self) -> pb.Run:
        return self.hook._build(self)


@dataclass(frozen=True, slots=True)
class _Drained:
    """The run stopped at a step boundary on a drain request (``GraphDrained``)."""

    reason: str


# Entries at the head of an _Open log: the run's own start.
_ROOT = 7

# A model call's output is its first reply (cap.generation_output, on the sender's thread).
_FIRST_REPLY = object()

# Event kinds in an _Open log, and how many fields each event has (its kind included).
_START, _END, _CALL, _CALL_END, _INTERRUPT, _RESUME = range(6)
_SIZE = {_START: 9, _END: 6, _CALL: 11, _CALL_END: 6, _INTERRUPT: 2, _RESUME: 2}


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
    # LangChain reads one of these for every event it dispatches: plain class values,
    # not the base class's properties (a Python call each).
    ignore_llm = ignore_retry = ignore_chain = ignore_agent = False
    ignore_retriever = ignore_chat_model = ignore_custom_event = False

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
        # Past these counts a run keeps no more node or call inputs/outputs (marked
        # truncated; nodes past max_node_logs are omitted anyway): memory stays bounded on
        # a run with a huge fan-out.
        self._node_io = 2 * max_node_logs + 16 if capture_node_io else 0
        self._call_io = 8 * max_node_logs + 64 if capture_calls else 0
        self._lock = threading.Lock()
        # Every open run id (the id as an int: a UUID's own __hash__ is Python code)
        # -> the log of the recorded graph run it belongs to: in _open when the output
        # of that run (a node, a call) is captured, else in _quiet.
        self._open: dict[Any, _Open] = {}
        self._quiet: dict[Any, _Open] = {}
        # Open tool, model and retriever calls: their kind.
        self._calls: dict[Any, str] = {}
        # Root run ids recorded lately (the last _SEEN_RUN_IDS, oldest first) and how
        # often each was used; kept on the sender's thread, under _lock.
        self._uses: dict[Any, int] = {}
        self._uses_order: collections.deque[Any] = collections.deque()
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
        # The graph's own thread runs this for every node: every line counts (the ids'
        # keys are read inline, the run's stored id is made on the sender's thread).
        try:
            now = _now()
            try:  # a UUID's 128-bit int (uuid_utils' UUIDs have it too)
                key = run_id.int
            except AttributeError:  # config["run_id"] given as text
                key = _key(run_id)
            name = kwargs.get("name")
            pkey = rec = None
            if parent_run_id is not None:
                try:
                    pkey = parent_run_id.int
                except AttributeError:
                    pkey = _key(parent_run_id)
                rec = self._open.get(pkey)
                if rec is None:
                    rec = self._quiet.get(pkey)
            if rec is None:
                if pkey is not None and _recorded_elsewhere(self, pkey):
                    # Another hook records the run this one runs in (a sub-agent and its
                    # supervisor each instrumented): it is recorded there, once.
                    return
                # A new run; its inputs are copied (the caller may change them later).
                meta = metadata or _NO_META
                rec = _Open((serialized, _snapshot(inputs), tags, meta, name, now, run_id))
                rec.hook = self
                rec.key = key
                rec.nodes = rec.calls = 0
                self._open[key] = rec
                return
            # Only atomic values and the captured input are kept (not the task's
            # metadata, tags or ids): what a run holds until it is built stays small
            # and mostly invisible to the garbage collector.
            meta = metadata or _NO_META
            node = meta.get("langgraph_node")
            ns: str | None = None
            step = 0
            lg_path = None
            if pkey in self._calls:  # a chain or graph run inside a tool or model call
                # (even one named like the node the tool runs in: it inherits the node's
                # metadata, but LangGraph runs no task for it)
                name = name or (serialized or {}).get("name") or "chain"
                rec.calls = seen = rec.calls + 1
                bound, capture = self._call_io, self._capture_calls
            elif node is not None and name == node and not (tags and _HIDDEN in tags):
                # A node (unless it is its own node's inner runnable).
                ns = meta.get("langgraph_checkpoint_ns", "")
                step = meta.get("langgraph_step", 0)
                # How LangGraph scheduled it: a functional API task called from a task
                # runs in its caller's graph (the debug stream puts it there).
                lg_path = meta.get("langgraph_path")
                rec.nodes = seen = rec.nodes + 1
                bound, capture = self._node_io, self._capture
            else:  # a runnable inside a node: transparent, nothing of it kept
                seen, bound, capture = 1, 0, False
            # Captured up to the bound (0 when capture is off), then marked dropped (the
            # record says truncated).
            if seen <= bound:
                self._open[key] = rec
            else:
                inputs = cap.DROPPED if capture else None
                self._quiet[key] = rec
            rec.extend((_START, key, pkey, name, ns, step, lg_path, inputs, now))
        except Exception:
            log.exception("neuralops hook: on_chain_start failed")

    def _find(self, key: Any) -> _Open | None:
        """The run an open run id belongs to (an _Open is a list: never test it for truth)."""
        rec = self._open.get(key)
        return self._quiet.get(key) if rec is None else rec

    def _pop(self, key: Any) -> tuple[_Open | None, bool]:
        """An open run id ended: the run it belongs to, and whether its output is kept.
        (on_chain_end, called for every node, does the same inline.)"""
        rec = self._open.pop(key, None)
        if rec is not None:
            return rec, True
        return self._quiet.pop(key, None), False

    def _stored_run_id(self, rec: _Open) -> str:
        """The id a run is stored under (on the sender's thread, in the order runs ended).
        A run id this process already recorded (a resume reusing ``config["run_id"]``)
        is counted, logged and stored as ``~2``, ``~3``, ... Building the same run again
        gives the same id."""
        stored: str | None = getattr(rec, "stored", None)
        if stored is not None:
            return stored
        rec.stored = rid = str(rec[6])
        key = rec.key
        with self._lock:
            use = self._uses[key] = self._uses.get(key, 0) + 1
            if use == 1:
                order = self._uses_order
                order.append(key)
                if len(order) > _SEEN_RUN_IDS:
                    self._uses.pop(order.popleft(), None)
                return rid
            self.reused_run_ids += 1
            rec.stored = f"{rid}~{use}"
        log.warning(
            "neuralops hook: run id %s was already recorded by this process (reused for a "
            "resume?); this run is stored as %s~%d",
            rid,
            rid,
            use,
        )
        return rec.stored

    def on_chain_end(
        self,
        outputs: Any,
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            now = _now()
            try:
                key = run_id.int
            except AttributeError:
                key = _key(run_id)
            rec = self._open.pop(key, None)
            if rec is None:
                rec = self._quiet.pop(key, None)
                if rec is None:
                    return
                outputs = None
            if rec.key != key:
                rec.extend((_END, key, outputs, "completed", "", now))
            else:  # the run itself ended (as _end_run, inline: once per invoke)
                rec.ended = True
                rec.extend((_END, key, _snapshot(outputs), "completed", "", now))
                if rec.nodes or _GRAPH in rec[3]:
                    self._sender.submit(rec)
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
            now = _now()
            key = _key(run_id)
            rec, io = self._pop(key)
            if rec is None:
                return
            status, error_text = _outcome(error)
            if rec.key != key:
                outputs = None
                if io and status == "completed" and error.args:
                    # A handoff (ParentCommand) ends its node: the Command is what it
                    # returned (read now: LangGraph rewrites the exception's args later).
                    # An interrupted node returned nothing (its debug task_result is {}).
                    outputs = error.args[0]
                rec.extend((_END, key, outputs, status, error_text, now))
            else:
                kind = type(error).__name__
                if status == "interrupted" and kind == "GraphDrained":
                    rec.extend((_INTERRUPT, _Drained(str(getattr(error, "reason", "")))))
                elif kind in ("NodeTimeoutError", "NodeCancelledError"):
                    # The node itself only saw its task cancelled.
                    rec.failed_node = str(getattr(error, "node", ""))
                self._end_run(rec, key, None, status=status, error_text=error_text, now=now)
        except Exception:
            log.exception("neuralops hook: on_chain_error failed")

    def _end_run(
        self, rec: _Open, key: Any, outputs: Any, *, status: str, error_text: str, now: float
    ) -> None:
        """The graph run itself ended: copy what the caller may change next; the rest is
        built on the sender's thread."""
        rec.ended = True
        rec.extend((_END, key, _snapshot(outputs), status, error_text, now))
        if _is_graph_run(rec):
            self._sender.submit(rec)

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
        tool_call_id: Any = None,
    ) -> None:
        now = time.perf_counter()
        pkey = _key(parent_run_id) if parent_run_id is not None else None
        rec = self._find(pkey) if pkey is not None else None
        if rec is None:
            return  # a model or tool used outside any recorded graph run
        key = _key(run_id)
        rec.calls = seen = rec.calls + 1
        keep = seen <= self._call_io
        (self._open if keep else self._quiet)[key] = rec
        self._calls[key] = kind
        model = provider = ""
        if kind == "model":
            m = meta or _NO_META
            given = params or _NO_META
            model = str(
                m.get("ls_model_name") or given.get("model") or given.get("model_name") or ""
            )
            provider = str(m.get("ls_provider") or "")
        if not keep:
            inputs = params = cap.DROPPED if self._capture_calls else None
        rec.extend(
            (_CALL, key, pkey, kind, name, inputs, model, provider, params, tool_call_id, now)
        )

    def _call_end(self, run_id: uuid.UUID, output: Any, error: BaseException | None) -> None:
        now = time.perf_counter()
        key = _key(run_id)
        rec, keep = self._pop(key)
        kind = self._calls.pop(key, "")
        if rec is not None:
            if not keep:
                dropped = cap.DROPPED if self._capture_calls else None
                if kind != "model":
                    output = dropped
                elif output is not None:  # (replies, usage, generation): keep the usage
                    output = ((), output[1], dropped)
            status, error_text = _outcome(error)
            rec.extend((_CALL_END, key, output, status, error_text, now))

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
        try:
            now = _now()
            if not token and not _carries_output(kwargs.get("chunk")):
                return  # a chunk with only a role or metadata is not a token yet
            key = _key(run_id)
            rec = self._find(key)
            if rec is None:
                return
            seen: dict[Any, float] | None = getattr(rec, "first_tokens", None)
            if seen is None:  # once per run; parallel branches may stream at once
                with self._lock:
                    seen = getattr(rec, "first_tokens", None)
                    if seen is None:
                        seen = rec.first_tokens = {}
            seen.setdefault(key, now)
        except Exception:
            log.exception("neuralops hook: on_llm_new_token failed")

    def on_llm_end(self, response: Any, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        try:
            # Only the replies (messages the graph's state holds anyway) and llm_output
            # are kept: the LLMResult itself is a dozen objects (generations, their
            # dicts and field sets) that would otherwise wait for the record, each one
            # more for the garbage collector to scan until then. Usage is read now: it
            # is what the provider bills, whatever a later node does to the messages.
            replies, llm_output = cap.model_replies(response)
            usage = cap.usage_of(replies, llm_output)
            self._call_end(run_id, (replies, usage, _FIRST_REPLY), None)
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
            self._call_start(
                "tool",
                run_id,
                parent_run_id,
                name=str(name),
                inputs=given,
                meta=None,
                tool_call_id=kwargs.get("tool_call_id"),
            )
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
            rec = self._find(_key(event.run_id)) if event.run_id is not None else None
            if rec is not None:
                rec.extend((_INTERRUPT, event))
        except Exception:
            log.exception("neuralops hook: on_interrupt failed")

    def on_resume(self, event: Any) -> None:
        try:
            rec = self._find(_key(event.run_id)) if event.run_id is not None else None
            if rec is not None:
                rec.extend((_RESUME, event))
        except Exception:
            log.exception("neuralops hook: on_resume failed")

    # ------------------------------------------------------------- internals

    def _submit(self, rec: _Open, cancelled_at: float) -> None:
        rec.cancelled_at = cancelled_at
        self._sender.submit(rec)

    def _build(self, rec: _Open) -> pb.Run:
        run, outputs, status, duration_ms, error = self._assemble(
            rec, getattr(rec, "cancelled_at", None)
        )
        try:
            return self._record(run, outputs, status, duration_ms, error)
        except Exception:
            # Something the run held could not be captured (a value whose repr or
            # properties raise, say): the run is still recorded, without what it held.
            log.exception(
                "neuralops hook: could not capture the inputs/outputs of run %s; it is "
                "recorded without them",
                run.run_id,
            )
            return self._record(run, outputs, status, duration_ms, error, io=False)

    def close_open_runs(self) -> int:
        """Record every run still open as cancelled (used at interpreter exit)."""
        now = time.perf_counter()
        with self._lock:
            recs = {id(r): r for r in [*self._open.values(), *self._quiet.values()]}
            self._open.clear()
            self._quiet.clear()
            self._calls.clear()
        roots = [r for r in recs.values() if not getattr(r, "ended", False) and _is_graph_run(r)]
        for rec in roots:
            self._submit(rec, now)
        return len(roots)

    # ---------------------------------------------- sender thread (assemble)

    def _assemble(self, rec: _Open, cancelled_at: float | None) -> tuple[_Run, Any, str, int, str]:
        """The run's tree from its log (on the sender's thread)."""
        log_ = list(rec)  # a snapshot: a late callback on another thread may append
        key = rec.key
        serialized, inputs, tags, meta, name, start, _ = log_[:_ROOT]
        meta = meta or {}
        name = name or (serialized or {}).get("name") or "LangGraph"
        wpk = meta.get("wpk_id") or self._wpk_id or name
        run = _Run(str(wpk), self._stored_run_id(rec), inputs, start, list(tags or ()), meta)
        run.checkpoint_id = str(meta.get("checkpoint_id") or "")
        track: _Track = {key: (None, None)}
        calls: dict[Any, _Call] = {}
        outputs: Any = None
        outcome, error_text = "cancelled", ""
        end = cancelled_at
        ended = False
        i, n = _ROOT, len(log_)
        while i < n:
            kind = log_[i]
            size = _SIZE[kind]
            ev = tuple(log_[i : i + size])
            i += size
            if kind == _START:
                self._replay_start(run, track, ev)
            elif kind == _END:
                if ev[1] == key:
                    _, _, outputs, outcome, error_text, end = ev
                    ended = True
                    break
                self._replay_end(run, track, ev)
            elif kind == _CALL:
                call = self._replay_call(run, track, ev)
                if call is not None:
                    calls[ev[1]] = call
            elif kind == _CALL_END:
                self._replay_call_end(track, ev)
            elif kind == _INTERRUPT:
                self._replay_interrupt(run, ev[1], key)
            elif kind == _RESUME and not run.checkpoint_id:
                run.checkpoint_id = str(ev[1].checkpoint_id)
        for k, t in list(getattr(rec, "first_tokens", {}).items()):
            if k in calls:
                calls[k].first_token = t
        # Runs that never reported their end (a stream left early) are not kept open.
        for k in track:
            for open_ in (self._open, self._quiet):
                if open_.get(k) is rec:
                    open_.pop(k, None)
                    self._calls.pop(k, None)
        if end is None:  # pragma: no cover - a root always ends with _END or at exit
            end = time.perf_counter()
        duration_ms = round((end - run.start) * 1000)
        if not ended:  # still open at exit
            for node in run.nodes:
                if node.end is None:
                    node.end, node.status = end, "cancelled"
            return run, None, "cancelled", duration_ms, ""
        _cancelled_attempts(run, getattr(rec, "failed_node", None), error_text)
        if isinstance(outputs, dict) and "__interrupt__" in outputs:
            run.interrupted = True
            # Also what LangGraph returned (older LangGraph has no on_interrupt); ids dedupe.
            found = outputs["__interrupt__"]
            if isinstance(found, list | tuple):
                run.interrupts.extend(found)
        # An error LangGraph raised to the caller fails the run whatever else paused;
        # a subgraph's interrupt its caller caught pauses nothing.
        status = "interrupted" if outcome == "completed" and run.interrupted else outcome
        if status != "interrupted":
            run.interrupts.clear()
            run.pause = None
        return run, outputs, status, duration_ms, error_text if status == "failed" else ""

    def _replay_start(
        self,
        run: _Run,
        track: _Track,
        ev: tuple[Any, ...],
    ) -> None:
        _, key, pkey, name, ns, step, lg_path, inputs, now = ev
        parent = track.get(pkey)
        if parent is None:
            return
        where = parent[0]
        if ns is not None:  # as LangGraph's metadata gave them
            ns = str(ns)
            step = step if type(step) is int else _as_int(step)
        if ns is not None and not (isinstance(where, _Node) and where.ns == ns):
            path = _graph_path(ns)
            if _called_from_a_task(lg_path) and isinstance(where, _Node):
                path = where.path  # (its namespace nests under its caller's task)
            node = self._start_node(run, name, ns=ns, path=path, step=step, inputs=inputs, now=now)
            track[key] = (node, node)
            return
        if isinstance(where, _Call) and where.kind != "chain":
            # A chain or graph run inside a tool or model call: a nested CHAIN call.
            call = _Call("chain", _id_text(key), str(name), now, now + _WALL_OFFSET)
            call.input = inputs
            where.calls.append(call)
            track[key] = (call, call)
            return
        track[key] = (where, None)  # a runnable inside a node: transparent

    def _start_node(
        self, run: _Run, name: str, *, ns: str, path: str, step: int, inputs: Any, now: float
    ) -> _Node | None:
        attempt = run.attempts.get(ns, 0) + 1
        run.attempts[ns] = attempt
        if len(run.nodes) >= self._max_nodes:
            run.omitted += 1
            return None
        node = _Node(
            name=str(name),
            ns=ns,
            path=path,
            step=step,
            attempt=attempt,
            start=now,
            started_at=now + _WALL_OFFSET,
            input=inputs,  # None unless capture_node_io (decided on the graph's thread)
        )
        run.nodes.append(node)
        return node

    def _replay_end(
        self,
        run: _Run,
        track: _Track,
        ev: tuple[Any, ...],
    ) -> None:
        _, key, outputs, status, error_text, now = ev
        entry = track.pop(key, None)
        if entry is None:
            return
        own = entry[1]
        if isinstance(own, _Node | _Call):
            own.end, own.status, own.error = now, status, error_text
            if status != "failed":
                own.output = outputs

    def _replay_call(
        self,
        run: _Run,
        track: _Track,
        ev: tuple[Any, ...],
    ) -> _Call | None:
        _, key, pkey, kind, name, inputs, model, provider, params, tool_call_id, now = ev
        parent = track.get(pkey)
        if parent is None:
            return None
        where = parent[0]
        call = _Call(kind, _id_text(key), name, now, now + _WALL_OFFSET, params=params)
        call.model, call.provider = model, provider
        call.tool_call_id = _short(tool_call_id)
        call.input = inputs
        if where is None:
            run.loose_calls.append(call)
        else:
            where.calls.append(call)
        track[key] = (call, call)
        return call

    def _replay_call_end(self, track: _Track, ev: tuple[Any, ...]) -> None:
        _, key, output, status, error_text, now = ev
        entry = track.pop(key, None)
        call = entry[1] if entry is not None else None
        if not isinstance(call, _Call):
            return
        call.end, call.status, call.error, call.output = now, status, error_text, output

    @staticmethod
    def _replay_interrupt(run: _Run, event: Any, root: Any) -> None:
        """The run's own graph paused (the run is interrupted), or a graph inside it did
        (its values are kept: they are what the run paused on if it did; a caller may
        also catch a subgraph's interrupt and go on)."""
        if isinstance(event, _Drained):  # no interrupt value, no checkpoint id given
            run.interrupted = True
            run.pause = {"drained": event.reason}
            return
        if not event.checkpoint_ns or event.run_id is None or _key(event.run_id) == root:
            run.interrupted = True  # the top graph (perhaps inside a chain that is the run)
        run.interrupts.extend(event.interrupts)
        if not event.interrupts and run.pause is None:  # a static breakpoint
            # (one inside a subgraph reaches the top graph as status "pending", unnamed)
            kind = event.status
            run.pause = {
                "breakpoint": kind
                if kind in ("interrupt_before", "interrupt_after")
                else "in a subgraph"
            }
        if not event.checkpoint_ns or not run.checkpoint_id:
            run.checkpoint_id = str(event.checkpoint_id)

    # ------------------------------------------------ sender thread (build)

    def _record(
        self,
        run: _Run,
        outputs: Any,
        status: str,
        duration_ms: int,
        error: str,
        *,
        io: bool = True,
    ) -> pb.Run:
        """The record of an assembled run; with ``io`` off, without anything it captured
        (inputs, outputs, parameters, metadata, interrupt values), marked truncated."""
        budget = cap.Budget(self._run_budget, self._max)
        msg = pb.Run(
            wpk_id=run.wpk_id,
            run_id=run.run_id,
            status=cap.status(status),
            duration_ms=duration_ms,
            error=error,
            omitted_node_logs=run.omitted,
        )
        truncated = not io
        if io:
            per = self._node_budget
            msg.inputs_json, cut_in = cap.json_capture(run.inputs, budget, per)
            msg.outputs_json, cut_out = cap.json_capture(outputs, budget, per)
            truncated = cut_in or cut_out
        self._context(msg, run, io)
        usage = _Totals()
        since = time.perf_counter()
        for n in run.nodes:
            since, _ = pace(since)
            node, cut = self._node_message(n, status, budget, usage, io)
            truncated |= cut
            msg.node_logs.append(node)
        for c in run.loose_calls:
            call, cut = self._call_message(c, budget, usage, io)
            truncated |= cut
            msg.calls.append(call)
        msg.truncated = truncated
        usage.fill(msg.usage)
        self._interrupts(msg, run, budget, io)
        return msg

    def _context(self, msg: pb.Run, run: _Run, io: bool = True) -> None:
        meta = run.metadata
        msg.thread_id = _short(meta.get("thread_id"))
        msg.checkpoint_id = _short(run.checkpoint_id)
        msg.user_id = _short(meta.get("user_id"))
        msg.session_id = _short(meta.get("session_id"))
        msg.tags.extend(_short(t) for t in run.tags[:64])
        given = {
            k: v
            for k, v in meta.items()
            if not (isinstance(k, str) and k.startswith(_INTERNAL_META))
            and k not in ("thread_id", "checkpoint_id")
        }
        if given and io:
            budget = cap.Budget(self._node_budget, self._max)
            msg.metadata_json, _ = cap.json_capture(given, budget, self._node_budget)

    def _interrupts(self, msg: pb.Run, run: _Run, budget: cap.Budget, io: bool = True) -> None:
        seen: set[str] = set()
        found = list(run.interrupts)
        for i in found:
            iid = str(getattr(i, "id", ""))
            if iid in seen:
                continue
            seen.add(iid)
            item = pb.Interrupt(id=cap.valid_text(iid))
            d = None
            if io:
                d, _ = cap.capture({"v": getattr(i, "value", None)}, budget, self._node_budget)
            if d is not None:
                item.value.CopyFrom(cap.struct(d).fields["v"])
            msg.interrupts.append(item)
        if not found and run.pause:
            item = pb.Interrupt()
            item.value.struct_value.update(run.pause)
            msg.interrupts.append(item)

    def _node_message(
        self, n: _Node, run_status: str, budget: cap.Budget, usage: _Totals, io: bool = True
    ) -> tuple[pb.NodeLog, bool]:
        end = n.end if n.end is not None else n.start
        node = pb.NodeLog(
            name=cap.valid_text(n.name),
            path=cap.valid_text(n.path),
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
        if self._capture and io:
            # The update first: it is what the node did; the input is often the whole state.
            per = self._node_budget
            node.output_json, cut_out = cap.json_capture(n.output, budget, per)
            node.input_json, cut_in = cap.json_capture(n.input, budget, per)
            truncated = cut_out or cut_in
        for c in n.calls:
            call, cut = self._call_message(c, budget, usage, io)
            truncated |= cut
            node.calls.append(call)
        node.truncated = truncated
        return node, truncated

    def _call_message(
        self, c: _Call, budget: cap.Budget, usage: _Totals, io: bool = True
    ) -> tuple[pb.Call, bool]:
        end = c.end if c.end is not None else c.start
        call = pb.Call(
            id=c.id,
            kind=cap.kind(c.kind),
            name=cap.valid_text(c.name),
            tool_call_id=c.tool_call_id,
            duration_ms=round((end - c.start) * 1000),
            status=cap.status("cancelled" if c.status == "running" else c.status),
            error=c.error,
        )
        cap.stamp(c.started_at, call.start_time)
        cap.stamp(c.started_at + (end - c.start), call.end_time)
        output = c.output
        if c.kind == "model":
            params = c.params or {}
            tokens: dict[str, int] = {}
            model = ""
            if output is not None:  # (replies, usage, generation) from on_llm_end
                replies, (tokens, model), output = output
                if output is _FIRST_REPLY:
                    output = cap.generation_output(replies)
            call.model = cap.valid_text(c.model or model)
            call.provider = cap.valid_text(c.provider)
            if tokens:
                for k, v in tokens.items():
                    setattr(call.usage, k, v)
            if c.first_token is not None:
                call.time_to_first_token_ms = round((c.first_token - c.start) * 1000)
            if params and self._capture_calls and io:
                call.parameters_json, _ = cap.json_capture(params, budget, self._node_budget)
        usage.add(c.kind, call)
        truncated = False
        if self._capture_calls and io:
            per = self._node_budget
            call.output_json, cut_out = cap.json_capture(output, budget, per)
            call.input_json, cut_in = cap.json_capture(c.input, budget, per)
            truncated = cut_out or cut_in
        for inner in c.calls:
            sub, cut = self._call_message(inner, budget, usage, io)
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
# Senders whose close already hands over their hooks' open runs (the senders
# themselves: an id could be reused once a closed sender is gone).
_exit_registered: weakref.WeakSet[Any] = weakref.WeakSet()
_exit_lock = threading.Lock()


def _recorded_elsewhere(hook: RunHistoryCallback, key: Any) -> bool:
    """Whether a hook other than ``hook`` records the open run ``key`` belongs to."""
    while True:
        try:
            hooks = list(_open_hooks)
            break
        except RuntimeError:  # a hook made on another thread meanwhile: look again
            continue
    return any(h is not hook and h._find(key) is not None for h in hooks)


def _close_open_runs_at_exit(hook: RunHistoryCallback) -> None:
    """Open runs are handed over as the sender closes (at exit, on SIGTERM, in a
    multiprocessing child), before it delivers what is queued. A stand-in sender
    without ``before_close``: at exit, after its own (atexit runs last-in first-out)."""
    _open_hooks.add(hook)
    with _exit_lock:
        sender = hook.sender
        if not _first_time(sender):
            return
        register = getattr(sender, "before_close", None)
        if callable(register):
            register(lambda: _exit(sender))
        else:
            atexit.register(_exit, sender)


def _first_time(sender: Any) -> bool:
    """Whether this sender is seen here for the first time (under _exit_lock)."""
    try:
        if sender in _exit_registered:
            return False
        _exit_registered.add(sender)
        return True
    except TypeError:  # a stand-in sender that takes no weak reference
        if getattr(sender, "_neuralops_exit", False):
            return False
        with contextlib.suppress(AttributeError):
            sender._neuralops_exit = True
        return True


def _forget_parents_runs() -> None:
    """In a forked child: the runs open in the parent are the parent's to record (a
    child closing its sender must not store them as cancelled under their ids)."""
    for hook in list(_open_hooks):
        hook._lock = threading.Lock()
        hook._open.clear()
        hook._quiet.clear()
        hook._calls.clear()


os.register_at_fork(after_in_child=_forget_parents_runs)


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
