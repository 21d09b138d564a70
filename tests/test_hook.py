"""The LangGraph hook on real compiled graphs, against real servers."""

from __future__ import annotations

import asyncio
import operator
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, RetryPolicy, interrupt
from neuralops.clients import InvalidArgumentError, NotFoundError, RunHistoryClient, log_run
from neuralops.clients.delivery import RunSender
from neuralops.clients.enums import RunStatus
from neuralops.clients.example import ReviewRejected, build_graph
from neuralops.clients.langgraph import RunHistoryCallback, instrument
from neuralops.clients.runs import run_message
from neuralops.runhistory.v1 import runhistory_pb2 as pb
from neuralops.servers.runtime.app import App
from neuralops.servers.runtime.config import Config

from tests.conftest import free_port
from tests.helpers import KeepingSender, wait_for
from tests.procs import ServerProcess

TICKET = {"subject": "refund", "body": "the invoice is wrong"}


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


def _get(app: App, wpk_id: str, run_id: str) -> pb.Run:
    return RunHistoryClient(app.address("runhistory")).get_run(wpk_id, run_id)


def _nodes(run: pb.Run) -> list[tuple[str, str, str]]:
    return sorted((n.name, n.path, pb.RunStatus.Name(n.status)) for n in run.node_logs)


def test_invoke_records_the_run_and_every_node(runhistory: App, sender: RunSender) -> None:
    run_id = str(uuid.uuid4())
    out = build_graph().invoke(
        TICKET,
        config={
            "callbacks": [RunHistoryCallback(sender=sender)],
            "run_id": run_id,
            "metadata": {"wpk_id": "support"},
        },
    )
    assert out["approved"] is True
    assert sender.flush(10)
    run = _get(runhistory, "support", run_id)
    assert run.status == pb.RUN_STATUS_COMPLETED
    assert run.inputs["subject"] == "refund"
    assert run.outputs["text"] == out["text"]
    ok = "RUN_STATUS_COMPLETED"
    assert _nodes(run) == [
        ("classify", "", ok),
        ("draft", "", ok),
        ("lookup_customer", "", ok),
        ("outline", "draft", ok),
        ("review", "", ok),
        ("search_kb", "", ok),
        ("write", "draft", ok),
    ]
    steps = {n.name: n.step for n in run.node_logs if not n.path}
    assert (
        steps["lookup_customer"] == steps["search_kb"] == steps["classify"] + 1
    )  # parallel branches
    for n in run.node_logs:
        assert n.end_time.ToDatetime() >= n.start_time.ToDatetime()
    assert run.duration_ms >= max(n.duration_ms for n in run.node_logs)
    classify = next(n for n in run.node_logs if n.name == "classify")
    assert classify.output["category"] == "billing"


def test_failing_node_gives_a_failed_run_and_the_same_exception(
    runhistory: App, sender: RunSender
) -> None:
    run_id = str(uuid.uuid4())
    with pytest.raises(ReviewRejected, match="rejected"):
        build_graph().invoke(
            {**TICKET, "fail": True},
            config={"callbacks": [RunHistoryCallback(sender=sender)], "run_id": run_id},
        )
    assert sender.flush(10)
    run = _get(runhistory, "support-triage", run_id)  # wpk_id defaults to the graph name
    assert run.status == pb.RUN_STATUS_FAILED
    assert "ReviewRejected" in run.error and "rejected" in run.error
    review = next(n for n in run.node_logs if n.name == "review")
    assert review.status == pb.RUN_STATUS_FAILED and "ReviewRejected" in review.error


def test_ainvoke_stream_and_astream_are_recorded(runhistory: App, sender: RunSender) -> None:
    graph = build_graph()
    ids = {k: str(uuid.uuid4()) for k in ("ainvoke", "stream", "astream")}

    def cfg(key: str) -> dict[str, Any]:
        return {
            "callbacks": [RunHistoryCallback(sender=sender)],
            "run_id": ids[key],
            "metadata": {"wpk_id": "modes"},
        }

    async def run_async() -> None:
        await graph.ainvoke(TICKET, config=cfg("ainvoke"))
        async for _ in graph.astream(TICKET, config=cfg("astream"), stream_mode="updates"):
            pass

    asyncio.run(run_async())
    chunks = list(graph.stream(TICKET, config=cfg("stream")))
    assert chunks
    assert sender.flush(10)
    for run_id in ids.values():
        run = _get(runhistory, "modes", run_id)
        assert run.status == pb.RUN_STATUS_COMPLETED
        assert len(run.node_logs) == 7


class Counter(TypedDict, total=False):
    n: int
    seen: Annotated[list[str], operator.add]


def test_retried_node_is_logged_per_attempt_and_the_run_completes(
    runhistory: App, sender: RunSender
) -> None:
    attempts = {"n": 0}

    def flaky(s: Counter) -> dict[str, Any]:
        attempts["n"] += 1
        if attempts["n"] < 3:
            raise ConnectionError("flaky upstream")
        return {"seen": ["flaky"]}

    g: Any = StateGraph(Counter)
    g.add_node(
        "flaky",
        flaky,
        retry_policy=RetryPolicy(max_attempts=3, initial_interval=0.01, retry_on=ConnectionError),
    )
    g.add_edge(START, "flaky")
    g.add_edge("flaky", END)
    run_id = str(uuid.uuid4())
    g.compile(name="retry").invoke(
        {"n": 0}, config={"callbacks": [RunHistoryCallback(sender=sender)], "run_id": run_id}
    )
    assert sender.flush(10)
    run = _get(runhistory, "retry", run_id)
    assert run.status == pb.RUN_STATUS_COMPLETED
    flaky_logs = [n for n in run.node_logs if n.name == "flaky"]
    assert flaky_logs, "the retried node was not logged"
    assert flaky_logs[-1].status == pb.RUN_STATUS_COMPLETED


def test_interrupt_gives_an_interrupted_run_and_resume_a_completed_one(
    runhistory: App, sender: RunSender
) -> None:
    def ask(s: Counter) -> dict[str, Any]:
        answer = interrupt("approve?")
        return {"seen": [str(answer)]}

    g: Any = StateGraph(Counter)
    g.add_node("ask", ask)
    g.add_edge(START, "ask")
    g.add_edge("ask", END)
    graph: Any = g.compile(name="approval", checkpointer=InMemorySaver())
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    thread = {"thread_id": "t1"}
    out = graph.invoke(
        {"n": 1},
        config={
            "callbacks": [RunHistoryCallback(sender=sender)],
            "run_id": first,
            "configurable": thread,
        },
    )
    assert "__interrupt__" in out
    graph.invoke(
        Command(resume="yes"),
        config={
            "callbacks": [RunHistoryCallback(sender=sender)],
            "run_id": second,
            "configurable": thread,
        },
    )
    assert sender.flush(10)
    assert _get(runhistory, "approval", first).status == pb.RUN_STATUS_INTERRUPTED
    resumed = _get(runhistory, "approval", second)
    assert resumed.status == pb.RUN_STATUS_COMPLETED
    assert resumed.outputs["seen"] == ["yes"]


def test_leaving_a_stream_early_gives_a_cancelled_run(runhistory: App, sender: RunSender) -> None:
    run_id = str(uuid.uuid4())
    for _ in build_graph().stream(
        TICKET, config={"callbacks": [RunHistoryCallback(sender=sender)], "run_id": run_id}
    ):
        break  # the caller stops after the first update
    assert sender.flush(10)
    run = _get(runhistory, "support-triage", run_id)
    assert run.status == pb.RUN_STATUS_CANCELLED
    assert run.error == ""
    assert [n.name for n in run.node_logs] == ["classify"]


def test_instrument_binds_the_hook_once(runhistory: App, sender: RunSender) -> None:
    graph = instrument(build_graph("bound"), sender=sender)
    run_ids = [str(uuid.uuid4()) for _ in range(3)]
    for r in run_ids:
        graph.invoke(TICKET, config={"run_id": uuid.UUID(r)})
    assert sender.flush(10)
    for r in run_ids:
        assert _get(runhistory, "bound", r).status == pb.RUN_STATUS_COMPLETED


def test_unserialisable_state_is_stored_as_text_and_never_breaks_the_graph(
    runhistory: App, sender: RunSender
) -> None:
    class Blob:
        def __repr__(self) -> str:
            return "<Blob>"

    class S(TypedDict, total=False):
        obj: Any
        text: str

    g: Any = StateGraph(S)
    g.add_node("make", lambda s: {"obj": Blob(), "text": "x" * 10_000})
    g.add_edge(START, "make")
    g.add_edge("make", END)
    run_id = str(uuid.uuid4())
    out = g.compile(name="odd").invoke(
        {},
        config={
            "callbacks": [RunHistoryCallback(sender=sender, max_io_chars=100)],
            "run_id": run_id,
        },
    )
    assert isinstance(out["obj"], Blob)
    assert sender.flush(10)
    run = _get(runhistory, "odd", run_id)
    assert run.outputs["obj"] == "<Blob>"
    assert len(str(run.outputs["text"])) == 101  # capped, with an ellipsis


def test_a_dead_service_never_slows_or_fails_the_graph(tmp_path: Path) -> None:
    sender = RunSender(f"localhost:{free_port()}", spool_dir=tmp_path / "spool", timeout_s=1)
    try:
        graph = build_graph()
        start = time.perf_counter()
        for _ in range(20):
            graph.invoke(TICKET, config={"callbacks": [RunHistoryCallback(sender=sender)]})
        elapsed = time.perf_counter() - start
        assert sender.flush(20)
        assert sender.spool.pending() == 20
        assert elapsed < 20  # generous: it is about never blocking on the network
    finally:
        sender.close()


def test_full_queue_spills_to_the_spool_and_replays(config: Config, tmp_path: Path) -> None:
    port = free_port()
    sender = RunSender(
        f"localhost:{port}", spool_dir=tmp_path / "spool", max_queue=2, retry_s=0.2, timeout_s=1
    )
    try:
        for i in range(50):
            sender.submit(pb.Run(wpk_id="spill", run_id=f"r{i}", status=pb.RUN_STATUS_COMPLETED))
        assert sender.flush(20)
        assert sender.spool.pending() == 50 and sender.spooled == 50
        app = App(config, services=("runhistory",), ports={"runhistory": port}).start()
        try:
            wait_for(lambda: sender.spool.pending() == 0, timeout=30)
            client = RunHistoryClient(app.address("runhistory"))
            for i in range(50):
                assert client.get_run("spill", f"r{i}").run_id == f"r{i}"
        finally:
            app.stop(grace=1)
    finally:
        sender.close()


def test_client_batch_log_runs_answers_per_run(runhistory: App) -> None:
    client = RunHistoryClient(runhistory.address("runhistory"))
    results = client.batch_log_runs(
        [
            {"wpk_id": "batch", "run_id": "a", "status": "completed"},
            {"wpk_id": "batch", "run_id": "b", "status": "failed", "error": "boom"},
            {"wpk_id": "batch", "run_id": "a", "status": "completed"},
        ]
    )
    assert [(r.run_id, r.created) for r in results] == [("a", True), ("b", True), ("a", False)]
    assert results[2].id == results[0].id
    assert client.get_run("batch", "b").error == "boom"
    with pytest.raises(InvalidArgumentError) as err:
        client.batch_log_runs([])
    assert err.value.violations[0].field == "runs"


def test_log_run_takes_the_seed_dict(runhistory: App) -> None:
    addr = runhistory.address("runhistory")
    run = {
        "wpk_id": "test",
        "run_id": "r1",
        "inputs": {},
        "outputs": {"text": "ok"},
        "status": "completed",
        "node_logs": [],
        "duration_ms": 123,
    }
    assert log_run(run, address=addr) == "r1"
    assert log_run(run, address=addr) == "r1"
    stored = RunHistoryClient(addr).get_run("test", "r1")
    assert stored.duration_ms == 123 and stored.outputs["text"] == "ok"
    with pytest.raises(NotFoundError):
        RunHistoryClient(addr).get_run("test", "nope")


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"run_id": "r"}, "wpk_id"),
        ({"wpk_id": "w", "status": "done"}, "status"),
        ({"wpk_id": "w", "duration_ms": -5}, "duration_ms"),
        ({"wpk_id": "w", "outputs": "text"}, "outputs"),
        ({"wpk_id": "w", "node_logs": [{"status": "completed"}]}, "node_logs[0].name"),
        ({"wpk_id": "w", "colour": "red"}, "colour"),
    ],
)
def test_log_run_rejects_bad_dicts_naming_the_key(bad: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgumentError) as err:
        log_run(bad, address="localhost:1")
    assert err.value.violations[0].field == field
    assert field in str(err.value)


def _python(
    code: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_killed_process_replays_its_spool_on_the_next_start(config: Config, tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path / "srv", postgres_dsn=config.postgres_dsn, services="runhistory"
    )
    env = {**server.env, "NEURALOPS_DATA_DIR": str(tmp_path / "client")}
    # The service is down: log_run spools, returns the id; then the process dies hard.
    killed = _python(
        """
        import os, signal
        from neuralops.clients import log_run
        print(log_run({'wpk_id': 'test', 'run_id': 'killed-1', 'status': 'completed', 'outputs': {'text': 'ok'}}))
        os.kill(os.getpid(), signal.SIGKILL)
        """,
        env,
    )
    assert killed.returncode == -9 and killed.stdout.strip() == "killed-1"
    server.start()
    try:
        nxt = _python(
            """
            from neuralops.clients import log_run
            print(log_run({'wpk_id': 'test', 'run_id': 'next-1', 'status': 'completed'}))
            """,
            env,
        )
        assert nxt.returncode == 0, nxt.stderr
        client = RunHistoryClient(server.address("runhistory"))
        assert wait_for(lambda: _exists(client, "killed-1"))
        assert _exists(client, "next-1")
        assert not list((tmp_path / "client" / "spool").glob("runs-*"))
    finally:
        server.stop()


@pytest.fixture
def served(config: Config, tmp_path: Path) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    """A RunHistory server process, and the environment a client process uses with it."""
    server = ServerProcess(
        tmp_path / "srv", postgres_dsn=config.postgres_dsn, services="runhistory"
    ).start()
    try:
        yield server, {**server.env, "NEURALOPS_DATA_DIR": str(tmp_path / "client")}
    finally:
        server.stop()


def test_runs_still_queued_at_exit_are_delivered(
    served: tuple[ServerProcess, dict[str, str]],
) -> None:
    server, env = served
    quick = _python(
        """
        from neuralops.clients.example import build_graph
        from neuralops.clients.langgraph import instrument
        graph = instrument(build_graph())
        for i in range(20):
            graph.invoke({"subject": "refund"}, config={"run_id": f"exit-{i}", "metadata": {"wpk_id": "test"}})
        # no flush: the interpreter exits with runs still queued
        """,
        env,
    )
    assert quick.returncode == 0, quick.stderr
    client = RunHistoryClient(server.address("runhistory"))
    assert all(_exists(client, f"exit-{i}") for i in range(20))


def _exists(client: RunHistoryClient, run_id: str) -> bool:
    try:
        client.get_run("test", run_id)
    except NotFoundError:
        return False
    return True


def test_server_stopped_mid_stream_loses_and_duplicates_nothing(
    config: Config, tmp_path: Path
) -> None:
    server = ServerProcess(
        tmp_path / "srv", postgres_dsn=config.postgres_dsn, services="runhistory"
    ).start()
    sender = RunSender(
        server.address("runhistory"),
        spool_dir=tmp_path / "spool",
        retry_s=0.2,
        max_retry_s=1,
        timeout_s=2,
    )
    graph = instrument(
        build_graph("outage"), RunHistoryCallback(sender=sender, capture_node_io=False)
    )
    run_ids = [f"run-{i:03d}" for i in range(150)]
    try:
        for i, run_id in enumerate(run_ids):
            if i == 50:
                server.stop()
            if i == 100:
                server.start()
            cfg: Any = {"run_id": run_id}  # LangGraph takes any string id; the stubs say UUID
            graph.invoke(TICKET, config=cfg)
        assert sender.flush(30)
        client = RunHistoryClient(server.address("runhistory"))
        wait_for(lambda: sender.spool.pending() == 0, timeout=60)
        ids = {client.get_run("outage", r).id for r in run_ids}
        assert len(ids) == 150  # every run stored, each once
        assert sender.spooled > 0, "the outage never reached the hook"
    finally:
        sender.close()
        server.stop()


@pytest.mark.parametrize("written", ["failed", "FAILED", "RUN_STATUS_FAILED", RunStatus.FAILED])
def test_run_dict_status_reads_through_the_one_codec(written: Any) -> None:
    msg = run_message({"wpk_id": "w", "status": written, "node_logs": [{"name": "n"}]})
    assert msg.status == pb.RUN_STATUS_FAILED
    assert msg.node_logs[0].status == pb.RUN_STATUS_COMPLETED  # the default


def test_run_dict_bad_status_lists_both_spellings() -> None:
    with pytest.raises(InvalidArgumentError) as err:
        run_message({"wpk_id": "w", "status": "done"})
    assert "completed (RUN_STATUS_COMPLETED)" in str(err.value)


def test_a_huge_fan_out_holds_node_inputs_only_up_to_the_bound() -> None:
    # Until a run is built, the hook holds what its nodes were given: past the bound
    # (2 * max_node_logs + 16 nodes) a node's input is not held, only marked dropped, so
    # memory stays bounded however many tasks a run fans out to.
    from langgraph.types import Send
    from neuralops.clients import capture as cap
    from neuralops.clients import langgraph as lg

    class Team(TypedDict, total=False):
        log: Annotated[list[str], operator.add]

    keep = KeepingSender()

    g: Any = StateGraph(Team)
    g.add_node("work", lambda s: {"log": ["w"]})
    g.add_conditional_edges(START, lambda s: [Send("work", {"n": i}) for i in range(60)], ["work"])
    hook = RunHistoryCallback(sender=keep, max_node_logs=3)  # type: ignore[arg-type]
    g.compile(name="fan").invoke({"log": []}, {"callbacks": [hook]})
    (rec,) = keep.items
    log_, inputs = list(rec), []  # the run being recorded is its event log
    i = lg._ROOT  # after the run's own start
    while i < len(log_):
        if log_[i] == lg._START and log_[i + 4] is not None:  # a node's start event
            inputs.append(log_[i + lg._SIZE[lg._START] - 2])  # the input, then the time
        i += lg._SIZE[log_[i]]
    assert len(inputs) == 60
    kept = [x for x in inputs if x is not cap.DROPPED]
    assert len(kept) == 2 * 3 + 16
    assert all(x is cap.DROPPED for x in inputs[len(kept) :])
    run = rec()  # the record still has its 3 nodes, and says the rest was omitted
    assert len(run.node_logs) == 3 and run.omitted_node_logs == 57


def test_what_the_caller_changes_after_the_run_is_not_what_is_recorded() -> None:
    # The record is built later, on the sender's thread. A chat loop that appends to
    # the state it passed in or got back (the usual shape) must not change the
    # recorded inputs and outputs: the hook copies them, a level deep, as the run
    # starts and ends.
    import json

    class Chat(TypedDict, total=False):
        log: Annotated[list[str], operator.add]
        meta: dict[str, str]

    keep = KeepingSender()

    g: Any = StateGraph(Chat)
    g.add_node("reply", lambda s: {"log": ["reply"], "meta": {"turn": "1"}})
    g.add_edge(START, "reply")
    g.add_edge("reply", END)
    hook = RunHistoryCallback(sender=keep)  # type: ignore[arg-type]
    state: dict[str, Any] = {"log": ["hi"], "meta": {"turn": "0"}}
    out = g.compile(name="chat").invoke(state, {"callbacks": [hook]})
    state["log"].append("changed after the run")
    state["meta"]["turn"] = "changed"
    out["log"].append("changed after the run")
    out["meta"]["turn"] = "changed"
    (rec,) = keep.items
    run = rec()
    assert json.loads(run.inputs_json) == {"log": ["hi"], "meta": {"turn": "0"}}
    assert json.loads(run.outputs_json) == {"log": ["hi", "reply"], "meta": {"turn": "1"}}


class _Team(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


def _two_nodes(first: Any) -> Any:
    g: Any = StateGraph(_Team)
    g.add_node("first", first)
    g.add_node("second", lambda s: {"log": ["second"]})
    g.add_edge(START, "first")
    g.add_edge("first", "second")
    g.add_edge("second", END)
    return g.compile(name="two")


class _Unsayable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


def test_an_exception_that_cannot_be_printed_still_fails_its_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def first(s: _Team) -> dict[str, Any]:
        raise _Unsayable()

    keep = KeepingSender()
    hook = RunHistoryCallback(sender=keep)  # type: ignore[arg-type]
    with pytest.raises(_Unsayable):
        _two_nodes(first).invoke({"log": []}, {"callbacks": [hook]})
    (rec,) = keep.items
    run = rec()
    assert (run.status, run.error) == (pb.RUN_STATUS_FAILED, "_Unsayable")
    assert [(n.name, n.status, n.error) for n in run.node_logs] == [
        ("first", pb.RUN_STATUS_FAILED, "_Unsayable")
    ]
    assert "neuralops hook" not in caplog.text  # no callback of the hook failed


def test_building_a_run_twice_gives_the_same_record() -> None:
    keep = KeepingSender()
    hook = RunHistoryCallback(sender=keep)  # type: ignore[arg-type]
    run_id = str(uuid.uuid4())
    _two_nodes(lambda s: {"log": ["first"]}).invoke(
        {"log": []}, {"callbacks": [hook], "run_id": run_id}
    )
    (rec,) = keep.items
    assert rec() == rec()
    assert rec().run_id == run_id and hook.reused_run_ids == 0


def test_a_run_whose_values_cannot_be_captured_is_recorded_without_them(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A bug in capturing values (none is known: capture never raises on odd values)
    # must cost the run its inputs and outputs, not the run.
    from neuralops.clients import capture as cap

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("capture bug")

    keep = KeepingSender()
    hook = RunHistoryCallback(sender=keep)  # type: ignore[arg-type]
    _two_nodes(lambda s: {"log": ["first"]}).invoke(
        {"log": []}, {"callbacks": [hook], "metadata": {"user_id": "u1", "team": "a"}}
    )
    monkeypatch.setattr(cap, "json_capture", broken)
    (rec,) = keep.items
    run = rec()
    assert run.status == pb.RUN_STATUS_COMPLETED and run.truncated
    assert [(n.name, n.status) for n in run.node_logs] == [
        ("first", pb.RUN_STATUS_COMPLETED),
        ("second", pb.RUN_STATUS_COMPLETED),
    ]
    assert not (run.inputs_json or run.outputs_json or run.metadata_json)
    assert not any(n.input_json or n.output_json for n in run.node_logs)
    assert run.user_id == "u1"
    assert "recorded without them" in caplog.text


def test_sigterm_delivers_every_run_finished_before_it(
    served: tuple[ServerProcess, dict[str, str]],
) -> None:
    # SIGTERM is how Kubernetes, Docker and systemd stop a process; it skips exit
    # handlers. A loop that never waits keeps its runs queued (the sender steps aside),
    # so without the sender's SIGTERM handler they are all lost.
    import signal

    server, env = served
    code = """
        import sys
        from neuralops.clients.example import build_graph
        from neuralops.clients.langgraph import instrument
        graph = instrument(build_graph())
        i = 0
        while True:
            graph.invoke({"subject": "refund"}, config={"run_id": f"term-{i}", "metadata": {"wpk_id": "test"}})
            print(i, flush=True)
            i += 1
        """
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for _ in range(200):  # 200 runs finished, none delivered yet in a busy loop
        proc.stdout.readline()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM, err  # still ends as SIGTERM ends it
    done = 200 + len(out.split())
    client = RunHistoryClient(server.address("runhistory"))
    missing = [i for i in range(done) if not _exists(client, f"term-{i}")]
    assert missing == []


@pytest.mark.parametrize("made_in", ["parent", "child"])
def test_runs_of_multiprocessing_children_are_delivered(
    served: tuple[ServerProcess, dict[str, str]], made_in: str
) -> None:
    # A multiprocessing child ends with os._exit: no atexit, so no flush at exit; the
    # sender may be made before the fork or in the child itself.
    server, env = served
    done = _python(
        f"""
        import multiprocessing as mp
        from neuralops.clients.example import build_graph
        from neuralops.clients.langgraph import instrument
        graph = instrument(build_graph()) if {made_in!r} == "parent" else None

        def work(i):
            g = graph or instrument(build_graph())
            g.invoke({{"subject": "refund"}}, config={{"run_id": f"child-{{i}}", "metadata": {{"wpk_id": "test"}}}})
            return i

        if __name__ == "__main__":
            ctx = mp.get_context("fork")
            procs = [ctx.Process(target=work, args=(i,)) for i in range(3)]
            for p in procs:
                p.start()
            for p in procs:
                p.join()
            pool = ctx.Pool(2)
            pool.map(work, range(3, 9))
            pool.close()
            pool.join()
        """,
        env,
    )
    assert done.returncode == 0, done.stderr
    client = RunHistoryClient(server.address("runhistory"))
    assert [i for i in range(9) if not _exists(client, f"child-{i}")] == []


def test_a_forked_child_never_records_its_parents_open_run(
    served: tuple[ServerProcess, dict[str, str]],
) -> None:
    # The child inherits the hook's open runs; closing its sender at exit must not store
    # the parent's run (still open in the parent) as cancelled under its id.
    server, env = served
    done = _python(
        """
        import multiprocessing as mp, operator, threading
        from typing import Annotated, TypedDict
        from langgraph.graph import START, StateGraph
        from neuralops.clients.langgraph import RunHistoryCallback

        hook = RunHistoryCallback()

        class S(TypedDict):
            log: Annotated[list, operator.add]

        sub = StateGraph(S); sub.add_node("w", lambda s: {"log": ["w"]}); sub.add_edge(START, "w")
        sub = sub.compile(name="child-graph")

        def child():  # a fresh thread: no context inherited from the node
            t = threading.Thread(target=lambda: sub.invoke({"log": []}, {"callbacks": [hook]}))
            t.start(); t.join()

        def fan_out(s):
            p = mp.get_context("fork").Process(target=child); p.start(); p.join()
            return {"log": ["fanned"]}

        top = StateGraph(S); top.add_node("fan_out", fan_out); top.add_edge(START, "fan_out")
        top.compile(name="parent-graph").invoke({"log": []}, {"callbacks": [hook], "run_id": "parent-1"})
        """,
        env,
    )
    assert done.returncode == 0, done.stderr
    client = RunHistoryClient(server.address("runhistory"))
    assert client.get_run("parent-graph", "parent-1").status == pb.RUN_STATUS_COMPLETED
    assert len(client.list_runs("child-graph")[0]) == 1  # the child's own run, stored
