"""LangGraph patterns through the hook, against a real RunHistory server, compared with
what LangGraph itself reports (its debug stream, its state, its interrupts)."""

from __future__ import annotations

import operator
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.prebuilt import create_react_agent
from langgraph.types import Command, RetryPolicy, Send, interrupt
from neuralops.clients import RunHistoryClient
from neuralops.clients.delivery import RunSender
from neuralops.clients.langgraph import RunHistoryCallback, instrument
from neuralops.clients.runs import to_python
from neuralops.runhistory.v1 import runhistory_pb2 as pb
from neuralops.servers.runtime.app import App
from neuralops.servers.runtime.config import Config

from tests.helpers import KeepingSender

# create_react_agent is LangGraph's documented prebuilt agent (moved to langchain.agents
# in LangGraph 1.0, which this project does not depend on); its deprecation is noise here.
pytestmark = pytest.mark.filterwarnings("ignore:create_react_agent:DeprecationWarning")


@pytest.fixture(params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    """The hook's behaviour does not depend on the database (test_list_runs covers both)."""
    return str(request.param)


@pytest.fixture
def runhistory(config: Config) -> Iterator[App]:
    app = App(config, services=("runhistory",), ports={"runhistory": 0}).start()
    yield app
    app.stop(grace=1)


@pytest.fixture
def sender(runhistory: App, tmp_path: Path) -> Iterator[RunSender]:
    s = RunSender(runhistory.address("runhistory"), spool_dir=tmp_path / "spool", retry_s=0.2)
    yield s
    s.close()


def _client(app: App) -> RunHistoryClient:
    return RunHistoryClient(app.address("runhistory"))


def _stored(app: App, sender: RunSender, wpk_id: str, run_id: str) -> pb.Run:
    assert sender.flush(10)
    return _client(app).get_run(wpk_id, run_id)


def _debug_tasks(graph: Any, inputs: Any, config: dict[str, Any]) -> list[str]:
    """Node names as LangGraph's debug stream reports its tasks (subgraphs included)."""
    names = []
    for item in graph.stream(inputs, config, stream_mode="debug", subgraphs=True):
        _, event = item
        if event["type"] == "task":
            names.append(event["payload"]["name"])
    return names


class ToolChatModel(FakeMessagesListChatModel):
    """The fake chat model create_react_agent can bind tools to."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self


def _usage(i: int, o: int) -> dict[str, int]:
    return {"input_tokens": i, "output_tokens": o, "total_tokens": i + o}


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def _react_agent(name: str = "react") -> Any:
    model = ToolChatModel(
        responses=[
            AIMessage(
                content="",
                tool_calls=[
                    {"name": "add", "args": {"a": 2, "b": 3}, "id": "c1"},
                    {"name": "multiply", "args": {"a": 4, "b": 5}, "id": "c2"},
                ],
                usage_metadata=_usage(12, 7),
            ),
            AIMessage(content="5 and 20", usage_metadata=_usage(30, 4)),
        ]
    )
    return create_react_agent(model, [add, multiply], name=name)


def _all_calls(run: pb.Run) -> list[pb.Call]:
    out: list[pb.Call] = []

    def walk(calls: Any) -> None:
        for c in calls:
            out.append(c)
            walk(c.calls)

    for n in run.node_logs:
        walk(n.calls)
    return out


def test_react_agent_records_model_and_tool_calls_with_token_totals(
    runhistory: App, sender: RunSender
) -> None:
    agent = _react_agent()
    question = {"messages": [HumanMessage("what are 2+3 and 4*5?")]}
    expected = _debug_tasks(_react_agent(), question, {})
    run_id = str(uuid.uuid4())
    out = agent.invoke(
        question, {"callbacks": [RunHistoryCallback(sender=sender)], "run_id": run_id}
    )
    assert out["messages"][-1].content == "5 and 20"
    run = _stored(runhistory, sender, "react", run_id)
    assert run.status == pb.RUN_STATUS_COMPLETED
    assert [n.name for n in run.node_logs] == expected
    calls = _all_calls(run)
    models = [c for c in calls if c.kind == pb.CALL_KIND_MODEL]
    tools = sorted(
        (c.name, to_python(c.output)["output"]["content"])
        for c in calls
        if c.kind == pb.CALL_KIND_TOOL
    )
    assert len(models) == 2 and tools == [("add", "5"), ("multiply", "20")]
    assert [(m.usage.input_tokens, m.usage.output_tokens) for m in models] == [(12, 7), (30, 4)]
    assert all(m.name == "ToolChatModel" and m.status == pb.RUN_STATUS_COMPLETED for m in models)
    assert to_python(models[1].output)["message"]["content"] == "5 and 20"
    assert run.usage.model_calls == 2 and run.usage.tool_calls == 2
    assert (run.usage.tokens.input_tokens, run.usage.tokens.total_tokens) == (42, 53)
    # Every model call sits in an "agent" node, every tool call in a "tools" node.
    for n in run.node_logs:
        kinds = {c.kind for c in n.calls}
        assert kinds == ({pb.CALL_KIND_MODEL} if n.name == "agent" else {pb.CALL_KIND_TOOL})
    listed, _ = _client(runhistory).list_runs("react")
    assert listed[0].usage.tokens.total_tokens == 53


def test_sub_agent_called_from_a_tool_is_recorded_inside_the_one_run(
    runhistory: App, sender: RunSender
) -> None:
    sub = _react_agent("researcher")

    @tool
    def research(question: str) -> str:
        """Ask the research sub-agent."""
        result = sub.invoke({"messages": [HumanMessage(question)]})
        return str(result["messages"][-1].content)

    model = ToolChatModel(
        responses=[
            AIMessage(
                content="",
                tool_calls=[{"name": "research", "args": {"question": "sums?"}, "id": "r1"}],
                usage_metadata=_usage(5, 5),
            ),
            AIMessage(content="done", usage_metadata=_usage(8, 1)),
        ]
    )
    supervisor: Any = create_react_agent(model, [research], name="supervisor")
    run_id = str(uuid.uuid4())
    supervisor.invoke(
        {"messages": [HumanMessage("go")]},
        {"callbacks": [RunHistoryCallback(sender=sender)], "run_id": run_id},
    )
    run = _stored(runhistory, sender, "supervisor", run_id)
    client = _client(runhistory)
    assert [r.run_id for r in client.list_runs("supervisor")[0]] == [run_id]
    assert client.list_runs("researcher")[0] == []  # no separate run for the sub-agent
    inner = [n for n in run.node_logs if n.path.startswith("tools")]
    assert sorted({n.name for n in inner}) == ["agent", "tools"]
    research_call = next(c for c in _all_calls(run) if c.name == "research")
    assert [c.kind for c in research_call.calls] == [pb.CALL_KIND_CHAIN]
    # Supervisor's 2 model calls + the sub-agent's 2; tools: research + add + multiply.
    assert (run.usage.model_calls, run.usage.tool_calls) == (4, 3)
    assert run.usage.tokens.total_tokens == 10 + 9 + 19 + 34


class Team(TypedDict, total=False):
    log: Annotated[list[str], operator.add]
    n: int


def test_handoff_with_command_parent_is_not_a_failure(runhistory: App, sender: RunSender) -> None:
    def hand_off(s: Team) -> Command[Any]:
        return Command(graph=Command.PARENT, goto="billing", update={"log": ["handoff"]})

    inner: Any = StateGraph(Team)
    inner.add_node("triage", hand_off)
    inner.add_edge(START, "triage")
    outer: Any = StateGraph(Team)
    outer.add_node("frontdesk", inner.compile())
    outer.add_node("billing", lambda s: {"log": ["billing"]})
    outer.add_edge(START, "frontdesk")
    outer.add_edge("billing", END)
    graph = outer.compile(name="handoff")
    expected = _debug_tasks(graph, {"log": []}, {})
    run_id = str(uuid.uuid4())
    out = graph.invoke(
        {"log": []}, {"callbacks": [RunHistoryCallback(sender=sender)], "run_id": run_id}
    )
    assert out["log"] == ["handoff", "billing"]
    run = _stored(runhistory, sender, "handoff", run_id)
    assert run.status == pb.RUN_STATUS_COMPLETED and run.error == ""
    assert sorted(n.name for n in run.node_logs) == sorted(expected)
    assert all(n.status == pb.RUN_STATUS_COMPLETED and not n.error for n in run.node_logs)
    triage = next(n for n in run.node_logs if n.name == "triage")
    # The Command as the node raised it (LangGraph rewrites the exception's copy later).
    assert to_python(triage.output)["goto"] == "billing"
    assert to_python(triage.output)["graph"] == Command.PARENT


def test_what_the_caller_changes_after_a_run_is_not_in_its_record(
    runhistory: App, tmp_path: Path
) -> None:
    """A chat loop reuses and appends to the state it got back; the record is built
    later on the sender's thread and must still hold the run as it was."""
    g: Any = StateGraph(Team)
    g.add_node("bot", lambda s: {"log": ["reply"]})
    g.add_edge(START, "bot")
    graph = g.compile(name="chat")
    slow = RunSender(runhistory.address("runhistory"), spool_dir=tmp_path / "s", linger_s=2.0)
    try:
        hook = RunHistoryCallback(sender=slow)
        state: dict[str, Any] = {"log": ["question 1"]}
        first = str(uuid.uuid4())
        state = graph.invoke(state, {"callbacks": [hook], "run_id": first})
        state["log"].append("question 2")  # before the sender built run 1
        state["n"] = 2
        run = _stored(runhistory, slow, "chat", first)
    finally:
        slow.close()
    assert to_python(run.inputs) == {"log": ["question 1"]}
    assert to_python(run.outputs) == {"log": ["question 1", "reply"]}


def test_past_its_bounds_a_run_keeps_nodes_io_or_says_it_was_cut(
    runhistory: App, sender: RunSender
) -> None:
    def fan_out(s: Team) -> list[Send]:
        return [Send("work", {"n": i}) for i in range(40)]

    # Each task runs a chain of 20 steps, so a run logs many more events than nodes:
    # the bounds must count nodes, not events.
    steps: Any = RunnableLambda(lambda s: s)
    for _ in range(19):
        steps = steps | RunnableLambda(lambda s: s)
    work = steps | RunnableLambda(lambda s: {"log": [f"w{s['n']}"]})
    g: Any = StateGraph(Team)
    g.add_node("work", work)
    g.add_conditional_edges(START, fan_out, ["work"])
    graph = g.compile(name="bounded")
    run_id = str(uuid.uuid4())
    hook = RunHistoryCallback(sender=sender, max_node_logs=10)
    graph.invoke({"log": []}, {"callbacks": [hook], "run_id": run_id})
    run = _stored(runhistory, sender, "bounded", run_id)
    assert len(run.node_logs) == 10 and run.omitted_node_logs == 30
    for node in run.node_logs:  # every node kept has its input and output, or says so
        assert node.truncated or (node.HasField("input") and node.HasField("output"))
    assert all(to_python(n.output)["log"][0].startswith("w") for n in run.node_logs)


def _approval_graph() -> Any:
    def ask(s: Team) -> dict[str, Any]:
        answer = interrupt({"question": "refund 15?", "amount": 15})
        return {"log": [str(answer)]}

    g: Any = StateGraph(Team)
    g.add_node("ask", ask)
    g.add_edge(START, "ask")
    g.add_edge("ask", END)
    return g.compile(name="approval", checkpointer=InMemorySaver())


def test_interrupt_and_resume_share_a_thread_and_keep_what_was_asked(
    runhistory: App, sender: RunSender
) -> None:
    graph = _approval_graph()
    hook = RunHistoryCallback(sender=sender)
    first = str(uuid.uuid4())
    meta = {"user_id": "ana", "session_id": "s-9", "ticket": 15}
    cfg: dict[str, Any] = {
        "callbacks": [hook],
        "configurable": {"thread_id": "th-1"},
        "tags": ["billing"],
        "metadata": meta,
    }
    out = graph.invoke({"log": []}, {**cfg, "run_id": first})
    asked = out["__interrupt__"][0]
    paused_at = graph.get_state(cfg).config["configurable"]["checkpoint_id"]
    graph.invoke(Command(resume="yes"), {**cfg, "run_id": first})  # run id reused
    client = _client(runhistory)
    run = _stored(runhistory, sender, "approval", first)
    assert hook.reused_run_ids == 1  # counted as the runs are recorded (sender's thread)
    assert run.status == pb.RUN_STATUS_INTERRUPTED
    assert [i.id for i in run.interrupts] == [asked.id]
    assert to_python(run.interrupts[0].value) == {"question": "refund 15?", "amount": 15}
    assert run.thread_id == "th-1" and run.checkpoint_id == paused_at
    assert (run.user_id, run.session_id, list(run.tags)) == ("ana", "s-9", ["billing"])
    assert to_python(run.metadata)["ticket"] == 15
    resumed = client.get_run("approval", f"{first}~2")
    assert resumed.status == pb.RUN_STATUS_COMPLETED
    assert to_python(resumed.inputs) == {"resume": "yes"}
    assert resumed.thread_id == "th-1" and resumed.checkpoint_id == paused_at
    on_thread, _ = client.list_runs("approval", thread_id="th-1")
    assert [r.run_id for r in on_thread] == [f"{first}~2", first]
    assert [r.run_id for r in client.list_runs("approval", user_id="ana")[0]] == [
        f"{first}~2",
        first,
    ]
    assert client.list_runs("approval", status="interrupted")[0][0].run_id == first
    assert client.list_runs("approval", tag="billing")[0][0].run_id == f"{first}~2"


def test_static_breakpoint_is_interrupted_like_get_state_says(
    runhistory: App, sender: RunSender
) -> None:
    g: Any = StateGraph(Team)
    g.add_node("draft", lambda s: {"log": ["draft"], "n": 15})
    g.add_node("send", lambda s: {"log": ["send"]})
    g.add_edge(START, "draft")
    g.add_edge("draft", "send")
    g.add_edge("send", END)
    graph = g.compile(name="breakpoint", checkpointer=InMemorySaver(), interrupt_before=["send"])
    cfg: dict[str, Any] = {
        "callbacks": [RunHistoryCallback(sender=sender)],
        "configurable": {"thread_id": "b1"},
    }
    run_id = str(uuid.uuid4())
    graph.invoke({"log": []}, {**cfg, "run_id": run_id})
    assert graph.get_state(cfg).next == ("send",)
    run = _stored(runhistory, sender, "breakpoint", run_id)
    assert run.status == pb.RUN_STATUS_INTERRUPTED
    assert [n.name for n in run.node_logs] == ["draft"]
    assert to_python(run.interrupts[0].value) == {"breakpoint": "interrupt_before"}
    assert run.outputs["n"] == 15 and to_python(run.outputs)["n"] == 15
    assert isinstance(to_python(run.node_logs[0].output)["n"], int)


def test_send_fan_out_records_each_task_and_no_hidden_start(
    runhistory: App, sender: RunSender
) -> None:
    g: Any = StateGraph(Team)
    g.add_node("work", lambda s: {"log": [f"w{s['n']}"]})
    g.add_conditional_edges(START, lambda s: [Send("work", {"n": i}) for i in range(5)])
    g.add_edge("work", END)
    graph = g.compile(name="fanout")
    expected = _debug_tasks(graph, {"log": []}, {})
    assert "__start__" not in expected
    run_id, capped = str(uuid.uuid4()), str(uuid.uuid4())
    graph.invoke({"log": []}, {"callbacks": [RunHistoryCallback(sender=sender)], "run_id": run_id})
    graph.invoke(
        {"log": []},
        {"callbacks": [RunHistoryCallback(sender=sender, max_node_logs=3)], "run_id": capped},
    )
    run = _stored(runhistory, sender, "fanout", run_id)
    assert [n.name for n in run.node_logs] == expected == ["work"] * 5
    assert sorted(to_python(n.input)["n"] for n in run.node_logs) == [0, 1, 2, 3, 4]
    cut = _client(runhistory).get_run("fanout", capped)
    assert (len(cut.node_logs), cut.omitted_node_logs) == (3, 2)
    assert cut.status == pb.RUN_STATUS_COMPLETED


def _one_node_run(
    runhistory: App, sender: RunSender, graph: str, node: str, fn: Any, **node_kw: Any
) -> pb.Run:
    """A graph of one node invoked once with the hook: the run as stored."""
    g: Any = StateGraph(Team)
    g.add_node(node, fn, **node_kw)
    g.add_edge(START, node)
    g.add_edge(node, END)
    run_id = str(uuid.uuid4())
    g.compile(name=graph).invoke(
        {"log": []}, {"callbacks": [RunHistoryCallback(sender=sender)], "run_id": run_id}
    )
    return _stored(runhistory, sender, graph, run_id)


def test_retries_carry_attempt_numbers(runhistory: App, sender: RunSender) -> None:
    calls = {"n": 0}

    def flaky(s: Team) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] < 3:
            raise ConnectionError("upstream")
        return {"log": ["ok"]}

    retry = RetryPolicy(initial_interval=0.001, jitter=False, retry_on=ConnectionError)
    run = _one_node_run(runhistory, sender, "retries", "flaky", flaky, retry_policy=retry)
    assert [(n.attempt, n.status) for n in run.node_logs] == [
        (1, pb.RUN_STATUS_FAILED),
        (2, pb.RUN_STATUS_FAILED),
        (3, pb.RUN_STATUS_COMPLETED),
    ]
    assert run.node_logs[0].error == "ConnectionError: upstream"
    assert run.status == pb.RUN_STATUS_COMPLETED


def test_capture_budget_cuts_and_marks_big_io(runhistory: App, sender: RunSender) -> None:
    g: Any = StateGraph(Team)
    g.add_node("big", lambda s: {"log": ["x" * 50 for _ in range(200)]})
    g.add_node("after", lambda s: {"n": 2**60})
    g.add_edge(START, "big")
    g.add_edge("big", "after")
    g.add_edge("after", END)
    run_id = str(uuid.uuid4())
    hook = RunHistoryCallback(sender=sender, node_budget_bytes=1000, run_budget_bytes=3000)
    g.compile(name="budget").invoke({"log": []}, {"callbacks": [hook], "run_id": run_id})
    run = _stored(runhistory, sender, "budget", run_id)
    big, after = run.node_logs
    assert big.truncated and run.truncated
    assert len(big.output.SerializeToString()) < 1500
    assert to_python(big.output)["log"][-1].startswith("… ")
    assert to_python(after.output)["n"] == str(2**60)  # beyond 2^53: kept exact as text


def test_stream_left_open_at_exit_is_recorded_as_cancelled(runhistory: App, tmp_path: Path) -> None:
    run_id = str(uuid.uuid4())
    script = textwrap.dedent(
        f"""
        import operator
        from typing import Annotated, TypedDict
        from langgraph.graph import END, START, StateGraph
        from neuralops.clients.langgraph import RunHistoryCallback

        class S(TypedDict, total=False):
            log: Annotated[list[str], operator.add]

        g = StateGraph(S)
        g.add_node("a", lambda s: {{"log": ["a"]}})
        g.add_node("b", lambda s: {{"log": ["b"]}})
        g.add_edge(START, "a")
        g.add_edge("a", "b")
        g.add_edge("b", END)
        hook = RunHistoryCallback({runhistory.address("runhistory")!r}, wpk_id="open")
        stream = g.compile().stream({{"log": []}}, {{"callbacks": [hook], "run_id": {run_id!r}}})
        next(stream)  # the caller never closes the stream
        """
    )
    env = {"NEURALOPS_DATA_DIR": str(tmp_path / "data")}
    import os

    subprocess.run(
        [sys.executable, "-c", script], check=True, timeout=60, env={**os.environ, **env}
    )
    run = _client(runhistory).get_run("open", run_id)
    assert run.status == pb.RUN_STATUS_CANCELLED
    assert [n.name for n in run.node_logs] == ["a"]


def test_streamed_model_retriever_and_nested_chain_calls_in_an_async_run(
    runhistory: App, sender: RunSender
) -> None:
    import asyncio

    from langchain_core.documents import Document
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.vectorstores import InMemoryVectorStore

    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=8))
    store.add_documents([Document("refunds take 5 days"), Document("invoices are monthly")])
    retriever = store.as_retriever(search_kwargs={"k": 1})
    streamer = GenericFakeChatModel(messages=iter([AIMessage("hello streamed world")]))
    summary = ChatPromptTemplate.from_messages([("human", "{q}")]) | GenericFakeChatModel(
        messages=iter([AIMessage("summary")])
    )

    @tool
    def summarise(q: str) -> str:
        """Summarise with an LCEL chain."""
        return str(summary.invoke({"q": q}).content)

    async def work(s: Team) -> dict[str, Any]:
        docs = await retriever.ainvoke("refund")
        text = "".join([str(c.content) async for c in streamer.astream("hi")])
        await summarise.ainvoke({"q": docs[0].page_content})
        return {"log": [text]}

    g: Any = StateGraph(Team)
    g.add_node("work", work)
    g.add_edge(START, "work")
    g.add_edge("work", END)
    run_id = str(uuid.uuid4())
    asyncio.run(
        g.compile(name="calls").ainvoke(
            {"log": []}, {"callbacks": [RunHistoryCallback(sender=sender)], "run_id": run_id}
        )
    )
    run = _stored(runhistory, sender, "calls", run_id)
    (node,) = run.node_logs
    kinds = [c.kind for c in node.calls]
    assert kinds == [pb.CALL_KIND_RETRIEVER, pb.CALL_KIND_MODEL, pb.CALL_KIND_TOOL]
    found, streamed, tool_call = node.calls
    assert to_python(found.input) == {"query": "refund"}
    assert len(to_python(found.output)["documents"]) == 1
    assert streamed.HasField("time_to_first_token_ms")
    assert to_python(streamed.output)["message"]["content"] == "hello streamed world"
    # The tool's LCEL chain is a CHAIN call holding the model call it made.
    (chain,) = tool_call.calls
    assert chain.kind == pb.CALL_KIND_CHAIN
    assert [c.kind for c in chain.calls] == [pb.CALL_KIND_MODEL]
    assert (run.usage.model_calls, run.usage.tool_calls, run.usage.retriever_calls) == (2, 1, 1)


class _ProviderChat(BaseChatModel):
    """A chat model reporting usage as providers do: on the message (``usage_metadata``,
    with cached and reasoning token details), or, as older integrations do, only in
    ``llm_output["token_usage"]``."""

    legacy: bool = False

    @property
    def _llm_type(self) -> str:
        return "provider-chat"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        if self.legacy:
            return ChatResult(
                generations=[ChatGeneration(message=AIMessage("legacy"))],
                llm_output={
                    "token_usage": {"prompt_tokens": 11, "completion_tokens": 5},
                    "model_name": "prov-small",
                },
            )
        details = {
            "input_token_details": {"cache_read": 16},
            "output_token_details": {"reasoning": 6},
        }
        reply = AIMessage(
            "cached",
            usage_metadata={**_usage(20, 9), **details},
            response_metadata={"model_name": "prov-large"},
        )
        return ChatResult(generations=[ChatGeneration(message=reply)])


def test_model_usage_is_read_however_the_provider_reports_it(
    runhistory: App, sender: RunSender
) -> None:
    def ask(s: Team) -> dict[str, Any]:
        said = [
            _ProviderChat().invoke("hi").content,
            _ProviderChat(legacy=True).invoke("hi").content,
            FakeListLLM(responses=["plain"]).invoke("hi"),
        ]
        return {"log": [str(x) for x in said]}

    run = _one_node_run(runhistory, sender, "usage", "ask", ask)
    cached, legacy, text = run.node_logs[0].calls
    assert (cached.model, legacy.model) == ("prov-large", "prov-small")
    u = cached.usage
    assert (u.input_tokens, u.output_tokens, u.total_tokens) == (20, 9, 29)
    assert (u.cached_input_tokens, u.reasoning_tokens) == (16, 6)
    u = legacy.usage
    assert (u.input_tokens, u.output_tokens, u.total_tokens) == (11, 5, 16)
    assert to_python(legacy.output)["message"]["content"] == "legacy"
    assert to_python(text.output) == {"text": "plain"}
    assert text.usage.total_tokens == 0 and text.kind == pb.CALL_KIND_MODEL
    assert run.usage.model_calls == 3 and run.usage.tokens.total_tokens == 45
    assert run.usage.tokens.cached_input_tokens == 16


def test_a_model_call_past_the_io_bound_still_counts_its_tokens() -> None:
    # Past the bound on calls whose I/O a run holds, a model call's generation is not
    # kept, but its token usage (read when the call ends) still is, and the call says
    # truncated.
    keep = KeepingSender()

    hook = RunHistoryCallback(sender=keep)  # type: ignore[arg-type]
    hook._call_io = 0  # the bound (8 * max_node_logs + 64), reached at once
    _react_agent().invoke({"messages": [HumanMessage("2+3, 4*5?")]}, {"callbacks": [hook]})
    run = keep.items[0]()
    models = [c for c in _all_calls(run) if c.kind == pb.CALL_KIND_MODEL]
    assert [(c.usage.total_tokens, c.output_json, c.truncated) for c in models] == [
        (19, b"", True),
        (34, b"", True),
    ]
    assert run.usage.model_calls == 2 and run.usage.tokens.total_tokens == 53


def test_a_sub_agent_named_like_the_node_calling_it_is_a_call_not_a_node(
    runhistory: App, sender: RunSender
) -> None:
    sub = _react_agent("researcher")

    @tool
    def ask(question: str) -> str:
        """Ask the research sub-agent."""
        return str(sub.invoke({"messages": [HumanMessage(question)]})["messages"][-1].content)

    def researcher(s: Team) -> dict[str, Any]:  # a node named like the sub-agent
        return {"log": [str(ask.invoke({"question": "sums?"}))]}

    g: Any = StateGraph(Team)
    g.add_node("researcher", researcher)
    g.add_edge(START, "researcher")
    graph = g.compile(name="clash")
    debug = _debug_tasks(graph, {"log": []}, {})
    run_id = str(uuid.uuid4())
    graph.invoke({"log": []}, {"callbacks": [RunHistoryCallback(sender=sender)], "run_id": run_id})
    run = _stored(runhistory, sender, "clash", run_id)
    top = [n for n in run.node_logs if not n.path]
    assert [(n.name, n.attempt) for n in top] == [("researcher", 1)] == [(d, 1) for d in debug[:1]]
    (ask_call,) = top[0].calls
    assert (ask_call.kind, ask_call.name) == (pb.CALL_KIND_TOOL, "ask")
    assert [(c.kind, c.name) for c in ask_call.calls] == [(pb.CALL_KIND_CHAIN, "researcher")]
    # The sub-agent's own nodes, where LangGraph's debug stream puts them.
    assert sorted(n.name for n in run.node_logs if n.path) == sorted(debug[1:])


def test_a_drained_run_is_interrupted_not_completed(runhistory: App, sender: RunSender) -> None:
    from langgraph.errors import GraphDrained
    from langgraph.runtime import RunControl

    control = RunControl()

    def first(s: Team) -> dict[str, Any]:
        control.request_drain("sigterm")  # as a SIGTERM handler would
        return {"log": ["first"]}

    g: Any = StateGraph(Team)
    g.add_node("first", first)
    g.add_node("second", lambda s: {"log": ["second"]})
    g.add_edge(START, "first")
    g.add_edge("first", "second")
    graph = g.compile(name="drain", checkpointer=InMemorySaver())
    cfg: dict[str, Any] = {
        "callbacks": [RunHistoryCallback(sender=sender)],
        "configurable": {"thread_id": "d1"},
    }
    drained, resumed = str(uuid.uuid4()), str(uuid.uuid4())
    with pytest.raises(GraphDrained):
        graph.invoke({"log": []}, {**cfg, "run_id": drained}, control=control)
    assert graph.get_state(cfg).next == ("second",)
    graph.invoke(None, {**cfg, "run_id": resumed})
    run = _stored(runhistory, sender, "drain", drained)
    assert run.status == pb.RUN_STATUS_INTERRUPTED and not run.error
    assert [to_python(i.value) for i in run.interrupts] == [{"drained": "sigterm"}]
    assert [(n.name, n.status) for n in run.node_logs] == [("first", pb.RUN_STATUS_COMPLETED)]
    after = _client(runhistory).get_run("drain", resumed)
    assert after.thread_id == run.thread_id == "d1"
    assert [n.name for n in after.node_logs] == ["second"]
    assert after.status == pb.RUN_STATUS_COMPLETED


def test_a_node_timeout_fails_each_attempt_as_langgraph_reports_it(
    runhistory: App, sender: RunSender
) -> None:
    import asyncio

    async def slow(s: Team) -> dict[str, Any]:
        await asyncio.sleep(5)
        return {"log": ["slow"]}

    async def main() -> str:
        g: Any = StateGraph(Team)
        retry = RetryPolicy(max_attempts=2, initial_interval=0.001, jitter=False)
        g.add_node("slow", slow, timeout=0.05, retry_policy=retry)
        g.add_edge(START, "slow")
        graph = g.compile(name="timeout")
        results = []
        with pytest.raises(Exception, match="exceeded its run timeout"):
            async for e in graph.astream({"log": []}, stream_mode="debug"):
                if e["type"] == "task_result":
                    results.append(e["payload"].get("error"))
        run_id = str(uuid.uuid4())
        with pytest.raises(Exception, match="exceeded its run timeout") as raised:
            await graph.ainvoke(
                {"log": []}, {"callbacks": [RunHistoryCallback(sender=sender)], "run_id": run_id}
            )
        assert type(raised.value).__name__ == "NodeTimeoutError"
        assert results and "exceeded its run timeout" in str(results[-1])
        return run_id

    run = _stored(runhistory, sender, "timeout", asyncio.run(main()))
    assert run.status == pb.RUN_STATUS_FAILED
    assert run.error.startswith("NodeTimeoutError: Node 'slow' exceeded its run timeout")
    assert [(n.attempt, n.status, n.error) for n in run.node_logs] == [
        (1, pb.RUN_STATUS_FAILED, run.error),
        (2, pb.RUN_STATUS_FAILED, run.error),
    ]


def test_functional_api_tasks_sit_where_the_debug_stream_puts_them(
    runhistory: App, sender: RunSender
) -> None:
    from langgraph.func import entrypoint, task

    @task
    def double(x: int) -> int:
        return 2 * x

    @entrypoint()
    def quad(x: int) -> int:
        return double(double(x).result()).result()

    flow: Any = quad
    debug = [
        (ns, e["payload"]["name"])
        for ns, e in flow.stream(3, stream_mode="debug", subgraphs=True)
        if e["type"] == "task"
    ]
    run_id = str(uuid.uuid4())
    hook = RunHistoryCallback(sender=sender, wpk_id="quad")
    assert flow.invoke(3, {"callbacks": [hook], "run_id": run_id}) == 12
    run = _stored(runhistory, sender, "quad", run_id)
    assert [((tuple(n.path.split("/")) if n.path else ()), n.name) for n in run.node_logs] == debug
    assert debug == [((), "quad"), ((), "double"), ((), "double")]
    assert [to_python(n.output) for n in run.node_logs[1:]] == [{"value": 6}, {"value": 12}]


class _ChoicesChat(BaseChatModel):
    """A provider answering with several choices (n > 1), as langchain-openai reports
    them: the response's usage on every choice, and in llm_output."""

    @property
    def _llm_type(self) -> str:
        return "choices-chat"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        choices = [
            ChatGeneration(
                message=AIMessage(
                    text,
                    usage_metadata=_usage(10, 8),
                    response_metadata={"model_name": "choices-model"},
                ),
                generation_info={"finish_reason": "stop"},
            )
            for text in ("first", "second")
        ]
        usage = {"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18}
        return ChatResult(generations=choices, llm_output={"token_usage": usage})


class _SlowStartChat(BaseChatModel):
    """Streams as providers do: a chunk with only the role first, content later."""

    delay_s: float = 0.15

    @property
    def _llm_type(self) -> str:
        return "slow-start-chat"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        return ChatResult(generations=[ChatGeneration(message=AIMessage("hello world"))])

    def _stream(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        import time

        from langchain_core.messages import AIMessageChunk
        from langchain_core.outputs import ChatGenerationChunk

        for i, text in enumerate(("", "hello", " world")):
            if i == 1:
                time.sleep(self.delay_s)  # the model thinking before its first token
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
            if run_manager is not None:
                run_manager.on_llm_new_token(text, chunk=chunk)
            yield chunk


def test_a_response_with_several_choices_is_billed_once(runhistory: App, sender: RunSender) -> None:
    from langchain_core.callbacks import get_usage_metadata_callback

    def ask(s: Team) -> dict[str, Any]:
        return {"log": [str(_ChoicesChat().invoke("hi").content)]}

    with get_usage_metadata_callback() as langchain_count:  # LangChain's own count
        run = _one_node_run(runhistory, sender, "choices", "ask", ask)
    (call,) = run.node_logs[0].calls
    (counted,) = langchain_count.usage_metadata.values()
    u = call.usage
    assert (u.input_tokens, u.output_tokens, u.total_tokens) == (10, 8, 18)
    assert (counted["input_tokens"], counted["total_tokens"]) == (10, 18)
    assert run.usage.tokens.total_tokens == 18


def test_time_to_first_token_waits_for_content_not_the_first_chunk(
    runhistory: App, sender: RunSender
) -> None:
    def ask(s: Team) -> dict[str, Any]:
        text = "".join(str(c.content) for c in _SlowStartChat().stream("hi"))
        return {"log": [text]}

    run = _one_node_run(runhistory, sender, "ttft", "ask", ask)
    (call,) = run.node_logs[0].calls
    assert 150 <= call.time_to_first_token_ms <= call.duration_ms
    assert to_python(call.output)["message"]["content"] == "hello world"
    assert to_python(call.output)["message"]["type"] == "ai"  # not "AIMessageChunk"


def test_usage_is_what_the_model_reported_whatever_a_later_node_changes(
    runhistory: App, sender: RunSender
) -> None:
    class Chat(TypedDict, total=False):
        messages: list[Any]

    model = FakeMessagesListChatModel(
        responses=[AIMessage("my card is 4111", usage_metadata=_usage(12, 7))]
    )

    def redact(s: Chat) -> dict[str, Any]:
        reply = s["messages"][-1]
        reply.content = "[redacted]"  # in place, as a careless redaction step does
        reply.usage_metadata = None
        return {}

    g: Any = StateGraph(Chat)
    g.add_node("agent", lambda s: {"messages": [*s["messages"], model.invoke(s["messages"])]})
    g.add_node("redact", redact)
    g.add_edge(START, "agent")
    g.add_edge("agent", "redact")
    run_id = str(uuid.uuid4())
    g.compile(name="redacted").invoke(
        {"messages": [HumanMessage("hi")]},
        {"callbacks": [RunHistoryCallback(sender=sender)], "run_id": run_id},
    )
    run = _stored(runhistory, sender, "redacted", run_id)
    (call,) = run.node_logs[0].calls
    assert (call.usage.input_tokens, call.usage.output_tokens) == (12, 7)
    assert run.usage.tokens.total_tokens == 19


def test_a_chain_invoked_on_its_own_is_no_run_but_one_around_a_graph_is(
    runhistory: App, sender: RunSender
) -> None:
    hook = RunHistoryCallback(sender=sender)
    model = FakeMessagesListChatModel(responses=[AIMessage("plain chain")] * 2)
    graph = _react_agent("inner-agent")
    chain = RunnableLambda(lambda x: x) | model
    chain.invoke("hi", {"callbacks": [hook]})  # no graph: nothing to record
    # A plain function calling the graph (RunnableLambda(graph.invoke) would hand it the
    # chain's config itself).
    wrapped = RunnableLambda(lambda x: graph.invoke(x)) | RunnableLambda(lambda s: s)  # noqa: PLW0108
    wrapped.invoke(
        {"messages": [HumanMessage("2+3?")]},
        {"callbacks": [hook], "metadata": {"wpk_id": "wrapped"}},
    )
    assert sender.flush(10)
    assert sender.delivered == 1 and sender.spooled == 0
    assert sender.stats().get("dropped", 0) == 0
    (listed,), _ = _client(runhistory).list_runs("wrapped")  # one run: the chain's, whole
    run = _client(runhistory).get_run("wrapped", listed.run_id)
    assert [n.name for n in run.node_logs] == _debug_tasks(
        _react_agent("inner-agent"), {"messages": [HumanMessage("2+3?")]}, {}
    )
    assert not (hook._open or hook._quiet or hook._calls)  # nothing left behind


def test_what_a_reply_says_beyond_its_text_is_kept(runhistory: App, sender: RunSender) -> None:
    bad_call = {"name": "add", "args": '{"a": 1,', "id": "x1", "error": "bad json"}
    model = FakeMessagesListChatModel(
        responses=[
            AIMessage(
                "",
                invalid_tool_calls=[bad_call],
                response_metadata={"finish_reason": "length"},
            )
        ]
    )

    @tool(response_format="content_and_artifact")
    def rows(q: str) -> tuple[str, dict[str, Any]]:
        """Rows for q."""
        return "3 rows", {"rows": [1, 2, 3]}

    @tool
    def soft_fail(q: str) -> ToolMessage:
        """Fails softly."""
        return ToolMessage("could not do it", tool_call_id="t2", status="error")

    def ask(s: Team) -> dict[str, Any]:
        model.invoke("hi")
        rows.invoke({"type": "tool_call", "name": "rows", "args": {"q": "a"}, "id": "t1"})
        soft_fail.invoke({"type": "tool_call", "name": "soft_fail", "args": {"q": "b"}, "id": "t2"})
        return {"log": ["asked"]}

    run = _one_node_run(runhistory, sender, "fields", "ask", ask)
    reply, artifact, soft = (to_python(c.output) for c in run.node_logs[0].calls)
    assert reply["message"]["invalid_tool_calls"][0]["args"] == '{"a": 1,'
    assert reply["message"]["finish_reason"] == "length"
    assert artifact["output"]["artifact"] == {"rows": [1, 2, 3]}
    assert soft["output"]["status"] == "error"


def test_each_tool_call_names_the_model_tool_call_it_answers(
    runhistory: App, sender: RunSender
) -> None:
    @tool
    def flaky(q: str) -> str:
        """Fails."""
        raise ValueError("upstream down")

    model = ToolChatModel(
        responses=[
            AIMessage(
                "",
                tool_calls=[
                    {"name": "add", "args": {"a": 1, "b": 2}, "id": "call-add"},
                    {"name": "flaky", "args": {"q": "x"}, "id": "call-flaky"},
                ],
            ),
            AIMessage("done"),
        ]
    )
    from langgraph.prebuilt import ToolNode

    tools_node = ToolNode([add, flaky], handle_tool_errors=True)  # the error goes back to the model
    agent: Any = create_react_agent(model, tools_node, name="tool-ids")
    run_id = str(uuid.uuid4())
    agent.invoke(
        {"messages": [HumanMessage("go")]},
        {"callbacks": [RunHistoryCallback(sender=sender)], "run_id": run_id},
    )
    run = _stored(runhistory, sender, "tool-ids", run_id)
    tools = {c.name: c for c in _all_calls(run) if c.kind == pb.CALL_KIND_TOOL}
    assert (tools["add"].tool_call_id, tools["add"].status) == ("call-add", pb.RUN_STATUS_COMPLETED)
    assert (tools["flaky"].tool_call_id, tools["flaky"].status) == (
        "call-flaky",
        pb.RUN_STATUS_FAILED,
    )
    assert "upstream down" in tools["flaky"].error


def test_nested_subgraph_paths_match_the_debug_stream(runhistory: App, sender: RunSender) -> None:
    def leaf(name: str) -> Any:
        return lambda s: {"log": [name]}

    inner: Any = StateGraph(Team)
    inner.add_node("i1", leaf("i1"))
    inner.add_edge(START, "i1")
    mid: Any = StateGraph(Team)
    mid.add_node("inner", inner.compile())
    mid.add_node("m1", leaf("m1"))
    mid.add_edge(START, "m1")
    mid.add_edge("m1", "inner")
    mid_graph = mid.compile()
    top: Any = StateGraph(Team)
    top.add_node("mid", mid_graph)  # a subgraph as a node
    top.add_node("fn", lambda s: mid_graph.invoke(s))  # noqa: PLW0108 - invoked in a node
    top.add_edge(START, "mid")
    top.add_edge("mid", "fn")
    graph = top.compile(name="nested")
    debug = sorted(
        ("/".join(p.split(":")[0] for p in ns), e["payload"]["name"])
        for ns, e in graph.stream({"log": []}, stream_mode="debug", subgraphs=True)
        if e["type"] == "task"
    )
    run_id = str(uuid.uuid4())
    graph.invoke({"log": []}, {"callbacks": [RunHistoryCallback(sender=sender)], "run_id": run_id})
    run = _stored(runhistory, sender, "nested", run_id)
    assert sorted((n.path, n.name) for n in run.node_logs) == debug
    assert ("mid/inner", "i1") in debug and ("fn/inner", "i1") in debug


def _two_branches(second: Any, *, name: str) -> Any:
    """START -> ask (which calls interrupt()) and ``second`` in the same step."""
    g: Any = StateGraph(Team)
    g.add_node("ask", lambda s: {"log": [interrupt("approve?")]})
    g.add_node("other", second)
    g.add_edge(START, "ask")
    g.add_edge(START, "other")
    return g.compile(name=name, checkpointer=InMemorySaver())


def test_an_error_beside_an_interrupt_fails_the_run_as_the_caller_saw(
    runhistory: App, sender: RunSender
) -> None:
    def boom(s: Team) -> Team:
        raise ValueError("boom")

    graph = _two_branches(boom, name="both")
    run_id = str(uuid.uuid4())
    cfg: dict[str, Any] = {"configurable": {"thread_id": "t-both"}}
    with pytest.raises(ValueError, match="boom"):
        graph.invoke(
            {"log": []}, {**cfg, "callbacks": [RunHistoryCallback(sender=sender)], "run_id": run_id}
        )
    run = _stored(runhistory, sender, "both", run_id)
    assert run.status == pb.RUN_STATUS_FAILED and run.error == "ValueError: boom"
    assert not run.interrupts
    by_name = {n.name: n for n in run.node_logs}
    assert by_name["other"].status == pb.RUN_STATUS_FAILED
    assert by_name["ask"].status == pb.RUN_STATUS_INTERRUPTED
    # What the node that paused returned: nothing (LangGraph's debug task_result is {}).
    assert not by_name["ask"].HasField("output") and not by_name["ask"].output_json


def test_an_interrupt_the_caller_catches_pauses_nothing(runhistory: App, sender: RunSender) -> None:
    """A node (or a tool) that runs a sub-agent and catches what it raises: LangGraph
    returns normally with nothing pending, and so is the run stored."""
    sub: Any = StateGraph(Team)
    sub.add_node("ask", lambda s: {"log": [interrupt("approve?")]})
    sub.add_edge(START, "ask")
    agent = sub.compile()

    def guarded(s: Team) -> Team:
        try:
            agent.invoke({"log": []})
        except Exception as e:  # what user code does around a sub-agent
            return {"log": [f"caught {type(e).__name__}"]}
        return {"log": ["done"]}

    g: Any = StateGraph(Team)
    g.add_node("node", guarded)
    g.add_edge(START, "node")
    graph = g.compile(name="caught", checkpointer=InMemorySaver())
    cfg: dict[str, Any] = {"configurable": {"thread_id": "t-caught"}}
    run_id = str(uuid.uuid4())
    out = graph.invoke(
        {"log": []}, {**cfg, "callbacks": [RunHistoryCallback(sender=sender)], "run_id": run_id}
    )
    assert out["log"] == ["caught GraphInterrupt"]
    state = graph.get_state(cfg)
    assert state.next == () and not state.interrupts
    run = _stored(runhistory, sender, "caught", run_id)
    assert run.status == pb.RUN_STATUS_COMPLETED and not run.interrupts


def test_a_breakpoint_inside_a_subgraph_says_where_it_paused(
    runhistory: App, sender: RunSender
) -> None:
    sub: Any = StateGraph(Team)
    sub.add_node("s1", lambda s: {"log": ["s1"]})
    sub.add_node("s2", lambda s: {"log": ["s2"]})
    sub.add_edge(START, "s1")
    sub.add_edge("s1", "s2")
    g: Any = StateGraph(Team)
    g.add_node("sub", sub.compile(interrupt_before=["s2"]))
    g.add_edge(START, "sub")
    graph = g.compile(name="subbreak", checkpointer=InMemorySaver())
    cfg: dict[str, Any] = {"configurable": {"thread_id": "t-sub"}}
    run_id = str(uuid.uuid4())
    graph.invoke(
        {"log": []}, {**cfg, "callbacks": [RunHistoryCallback(sender=sender)], "run_id": run_id}
    )
    assert graph.get_state(cfg).next == ("sub",)
    run = _stored(runhistory, sender, "subbreak", run_id)
    assert run.status == pb.RUN_STATUS_INTERRUPTED
    assert [to_python(i.value) for i in run.interrupts] == [{"breakpoint": "in a subgraph"}]


def test_a_sub_agent_and_its_supervisor_each_instrumented_are_one_run(
    runhistory: App, sender: RunSender
) -> None:
    llm = ToolChatModel(responses=[AIMessage("noted", usage_metadata=_usage(10, 10))])
    sub: Any = StateGraph(Team)
    sub.add_node("think", lambda s: {"log": [llm.invoke("x").content]})
    sub.add_edge(START, "think")
    researcher = instrument(sub.compile(name="researcher"), sender=sender)
    g: Any = StateGraph(Team)
    g.add_node("research", researcher)
    g.add_edge(START, "research")
    supervisor = instrument(g.compile(name="supervisor"), sender=sender)
    run_id = str(uuid.uuid4())
    config: Any = {"run_id": run_id}
    supervisor.invoke({"log": []}, config)
    run = _stored(runhistory, sender, "supervisor", run_id)
    assert [(n.path, n.name) for n in run.node_logs] == [("", "research"), ("research", "think")]
    assert run.usage.tokens.total_tokens == 20
    assert _client(runhistory).list_runs("researcher")[0] == []
    # On its own, the sub-agent is its own run.
    researcher.invoke({"log": []})
    assert sender.flush(10)
    assert len(_client(runhistory).list_runs("researcher")[0]) == 1


@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
def test_a_model_called_on_the_start_edge_is_a_run_level_call(
    runhistory: App, sender: RunSender
) -> None:
    """A routing function on the START edge that asks a model (LangGraph's adaptive RAG
    tutorial): LangGraph runs it in its hidden __start__ task, so the call is the run's
    own, and the totals count exactly the calls stored."""
    router = ToolChatModel(responses=[AIMessage("web", usage_metadata=_usage(30, 8))])
    writer = ToolChatModel(responses=[AIMessage("answer", usage_metadata=_usage(20, 18))])

    def route(s: Team) -> str:
        return str(router.invoke("where to look?").content)

    g: Any = StateGraph(Team)
    g.add_node("web", lambda s: {"log": [writer.invoke("write").content]})
    g.add_node("docs", lambda s: {"log": ["docs"]})
    g.add_conditional_edges(START, route, ["web", "docs"])
    graph = g.compile(name="adaptive")
    expected = _debug_tasks(graph, {"log": []}, {})
    run_id = str(uuid.uuid4())
    graph.invoke({"log": []}, {"callbacks": [RunHistoryCallback(sender=sender)], "run_id": run_id})
    run = _stored(runhistory, sender, "adaptive", run_id)
    assert [n.name for n in run.node_logs] == expected == ["web"]
    assert [(c.kind, c.usage.total_tokens) for c in run.calls] == [(pb.CALL_KIND_MODEL, 38)]
    assert to_python(run.calls[0].output)["message"]["content"] == "web"
    stored_calls = [*run.calls, *(c for n in run.node_logs for c in n.calls)]
    assert run.usage.model_calls == len(stored_calls) == 2
    assert run.usage.tokens.total_tokens == sum(c.usage.total_tokens for c in stored_calls) == 76
