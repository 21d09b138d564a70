"""RunHistoryService.ListRuns and the run context fields, on a real server (both backends)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import struct_pb2
from neuralops.runhistory.v1 import runhistory_pb2 as pb
from neuralops.runhistory.v1 import runhistory_pb2_grpc
from neuralops.servers.runtime.app import App
from neuralops.servers.runtime.config import Config

from tests.helpers import field_violations


@pytest.fixture
def runhistory(config: Config) -> Iterator[App]:
    app = App(config, services=("runhistory",), ports={"runhistory": 0}).start()
    yield app
    app.stop(grace=1)


def _stub(app: App) -> runhistory_pb2_grpc.RunHistoryServiceStub:
    return runhistory_pb2_grpc.RunHistoryServiceStub(
        grpc.insecure_channel(app.address("runhistory"))
    )


def _run(run_id: str, **fields: object) -> pb.Run:
    fields.setdefault("status", pb.RUN_STATUS_COMPLETED)
    return pb.Run(wpk_id="wf", run_id=run_id, **fields)  # type: ignore[arg-type]


def test_list_runs_pages_newest_first_without_gaps(runhistory: App) -> None:
    stub = _stub(runhistory)
    stub.BatchLogRuns(pb.BatchLogRunsRequest(runs=[_run(f"r{i}") for i in range(7)]))
    stub.LogRun(
        pb.LogRunRequest(run=pb.Run(wpk_id="other", run_id="x", status=pb.RUN_STATUS_COMPLETED))
    )
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        reply = stub.ListRuns(pb.ListRunsRequest(wpk_id="wf", page_size=3, page_token=token))
        seen += [r.run_id for r in reply.runs]
        pages += 1
        token = reply.next_page_token
        if not token:
            break
    assert seen == [f"r{i}" for i in reversed(range(7))]
    assert pages == 3
    assert stub.ListRuns(pb.ListRunsRequest(wpk_id="nobody")).runs == []


def test_run_context_round_trips_and_filters(runhistory: App) -> None:
    stub = _stub(runhistory)
    meta = struct_pb2.Struct()
    meta.update({"user_id": "u1", "n": 15})
    usage = pb.RunUsage(
        model_calls=2,
        tool_calls=1,
        tokens=pb.Usage(input_tokens=10, output_tokens=5, total_tokens=15),
    )
    asked = pb.Interrupt(id="abc", next_nodes=["review"])
    asked.value.string_value = "approve?"
    call = pb.Call(
        id="c1",
        kind=pb.CALL_KIND_MODEL,
        name="FakeChat",
        model="fake-1",
        status=pb.RUN_STATUS_COMPLETED,
        duration_ms=3,
        usage=pb.Usage(input_tokens=10, output_tokens=5, total_tokens=15),
        time_to_first_token_ms=1,
        calls=[
            pb.Call(id="c2", kind=pb.CALL_KIND_TOOL, name="add", status=pb.RUN_STATUS_COMPLETED)
        ],
    )
    stub.BatchLogRuns(
        pb.BatchLogRunsRequest(
            runs=[
                _run(
                    "a",
                    thread_id="t1",
                    user_id="u1",
                    session_id="s1",
                    tags=["prod"],
                    metadata=meta,
                    usage=usage,
                    checkpoint_id="cp1",
                    node_logs=[
                        pb.NodeLog(
                            name="agent", attempt=2, calls=[call], status=pb.RUN_STATUS_COMPLETED
                        )
                    ],
                ),
                _run("b", thread_id="t1", status=pb.RUN_STATUS_INTERRUPTED, interrupts=[asked]),
                _run("c", thread_id="t2", tags=["dev"], omitted_node_logs=4, truncated=True),
            ]
        )
    )
    run = stub.GetRun(pb.GetRunRequest(wpk_id="wf", run_id="a")).run
    assert (run.thread_id, run.user_id, run.session_id, run.checkpoint_id) == (
        "t1",
        "u1",
        "s1",
        "cp1",
    )
    assert list(run.tags) == ["prod"] and run.metadata["n"] == 15
    assert run.usage == usage
    assert run.node_logs[0].attempt == 2
    assert run.node_logs[0].calls[0] == call
    b = stub.GetRun(pb.GetRunRequest(wpk_id="wf", run_id="b")).run
    assert list(b.interrupts) == [asked]
    c = stub.GetRun(pb.GetRunRequest(wpk_id="wf", run_id="c")).run
    assert (c.omitted_node_logs, c.truncated) == (4, True)

    def ids(**flt: object) -> list[str]:
        return [r.run_id for r in stub.ListRuns(pb.ListRunsRequest(wpk_id="wf", **flt)).runs]  # type: ignore[arg-type]

    assert ids(thread_id="t1") == ["b", "a"]
    assert ids(status=pb.RUN_STATUS_INTERRUPTED) == ["b"]
    assert ids(user_id="u1") == ["a"] and ids(session_id="s1") == ["a"]
    assert ids(tag="dev") == ["c"] and ids(tag="none") == []
    listed = stub.ListRuns(pb.ListRunsRequest(wpk_id="wf", thread_id="t1")).runs[1]
    assert listed.usage == usage and listed.thread_id == "t1"


def test_list_runs_refuses_bad_requests_naming_the_field(runhistory: App) -> None:
    stub = _stub(runhistory)
    stub.BatchLogRuns(pb.BatchLogRunsRequest(runs=[_run(f"r{i}") for i in range(3)]))
    token = stub.ListRuns(pb.ListRunsRequest(wpk_id="wf", page_size=1)).next_page_token
    cases = [
        (pb.ListRunsRequest(), "wpk_id"),
        (pb.ListRunsRequest(wpk_id="wf", page_size=-1), "page_size"),
        (pb.ListRunsRequest(wpk_id="wf", page_token="garbage!"), "page_token"),
        (pb.ListRunsRequest(wpk_id="wf", page_token=token, thread_id="t"), "page_token"),
        (pb.ListRunsRequest(wpk_id="wf", status=99), "status"),  # type: ignore[arg-type]
    ]
    for request, name in cases:
        with pytest.raises(grpc.RpcError) as err:
            stub.ListRuns(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert name in field_violations(err.value), name
    big = stub.ListRuns(pb.ListRunsRequest(wpk_id="wf", page_size=5000))
    assert len(big.runs) == 3


def test_a_run_id_sent_again_is_counted_and_undefined_call_enums_are_refused(
    runhistory: App,
) -> None:
    from prometheus_client import REGISTRY

    stub = _stub(runhistory)
    name = "neuralops_runs_already_stored_total"
    before = REGISTRY.get_sample_value(name) or 0.0
    first = _run("dup", node_logs=[pb.NodeLog(name="n", calls=[pb.Call(id="c", name="m")])])
    assert stub.LogRun(pb.LogRunRequest(run=first)).created
    assert not stub.LogRun(pb.LogRunRequest(run=_run("dup"))).created
    assert (REGISTRY.get_sample_value(name) or 0.0) == before + 1
    # An enum number the proto does not define is refused, naming the field (issue 9).
    odd = pb.Call(id="c", name="m", kind=77, status=42)  # type: ignore[arg-type]
    with pytest.raises(grpc.RpcError) as err:
        stub.LogRun(
            pb.LogRunRequest(run=_run("odd", node_logs=[pb.NodeLog(name="n", calls=[odd])]))
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "run.node_logs[0].calls[0].kind" in (err.value.details() or "")
