"""Embeddings: the real openai client against a local endpoint, vectors in Milvus Lite."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import struct_pb2
from neuralops.clients import InvalidArgumentError, RunHistoryClient
from neuralops.runhistory.v1 import runhistory_pb2 as pb
from neuralops.runhistory.v1 import runhistory_pb2_grpc
from neuralops.servers.runtime.app import App
from neuralops.servers.runtime.config import Config

from tests.helpers import wait_for
from tests.openai_server import OpenAIServer


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    server = OpenAIServer()
    yield server
    server.close()


@pytest.fixture
def embedding_stack(config: Config, openai_server: OpenAIServer) -> Iterator[App]:
    cfg = config.with_(
        openai_key="test-key", openai_base_url=openai_server.base_url, embedding_model="test-embed"
    )
    app = App(cfg, services=("runhistory",), ports={"runhistory": 0}).start()
    yield app
    app.stop(grace=1.0)


def _run(run_id: str, text: str | None) -> pb.Run:
    outputs = struct_pb2.Struct()
    if text is not None:
        outputs.update({"text": text})
    return pb.Run(wpk_id="docs", run_id=run_id, outputs=outputs, status=pb.RUN_STATUS_COMPLETED)


def _status(stub: runhistory_pb2_grpc.RunHistoryServiceStub, run_id: str) -> int:
    return stub.GetRun(pb.GetRunRequest(wpk_id="docs", run_id=run_id)).run.embedding_status


def test_logged_output_is_embedded_then_searchable(
    embedding_stack: App, openai_server: OpenAIServer
) -> None:
    stub = runhistory_pb2_grpc.RunHistoryServiceStub(
        grpc.insecure_channel(embedding_stack.address("runhistory"))
    )
    texts = {
        "r1": "the invoice total was computed from line items",
        "r2": "weather forecast says rain tomorrow in paris",
        "r3": "refund issued for the duplicate invoice",
    }
    stub.BatchLogRuns(
        pb.BatchLogRunsRequest(runs=[_run(k, v) for k, v in texts.items()] + [_run("r4", None)])
    )
    wait_for(lambda: all(_status(stub, r) == pb.EMBEDDING_STATUS_DONE for r in texts))
    assert _status(stub, "r4") == pb.EMBEDDING_STATUS_SKIPPED
    assert openai_server.requests[0]["model"] == "test-embed"
    assert openai_server.auth[0] == "Bearer test-key"

    hits = stub.SearchRuns(pb.SearchRunsRequest(text="invoice refund", wpk_id="docs", limit=2)).hits
    assert [h.run_id for h in hits] == ["r3", "r1"]
    assert hits[0].score > hits[1].score > 0
    assert hits[0].text == texts["r3"]
    other = stub.SearchRuns(pb.SearchRunsRequest(text="invoice refund", wpk_id="someone-else")).hits
    assert list(other) == []


def test_failed_embedding_is_marked_and_retried(
    embedding_stack: App, openai_server: OpenAIServer
) -> None:
    openai_server.fail_next = 4  # the client retries once per call: two failed attempts
    stub = runhistory_pb2_grpc.RunHistoryServiceStub(
        grpc.insecure_channel(embedding_stack.address("runhistory"))
    )
    reply = stub.LogRun(pb.LogRunRequest(run=_run("r1", "first try fails")))
    assert reply.created  # the reply never waits for the embedding
    wait_for(lambda: _status(stub, "r1") == pb.EMBEDDING_STATUS_FAILED)
    wait_for(lambda: _status(stub, "r1") == pb.EMBEDDING_STATUS_DONE, timeout=20)
    assert stub.SearchRuns(pb.SearchRunsRequest(text="first try fails")).hits[0].run_id == "r1"


def test_client_search_runs(embedding_stack: App) -> None:
    client = RunHistoryClient(embedding_stack.address("runhistory"))
    client.batch_log_runs(
        [_run("r1", "the invoice total was wrong"), _run("r2", "rain tomorrow in paris")]
    )
    stub = runhistory_pb2_grpc.RunHistoryServiceStub(
        grpc.insecure_channel(embedding_stack.address("runhistory"))
    )
    wait_for(lambda: all(_status(stub, r) == pb.EMBEDDING_STATUS_DONE for r in ("r1", "r2")))
    hits = client.search_runs("invoice wrong", wpk_id="docs", limit=1)
    assert [(h.run_id, h.wpk_id) for h in hits] == [("r1", "docs")]
    with pytest.raises(InvalidArgumentError) as err:
        client.search_runs("x", limit=500)
    assert err.value.violations[0].field == "limit"


def test_search_text_is_required(embedding_stack: App) -> None:
    stub = runhistory_pb2_grpc.RunHistoryServiceStub(
        grpc.insecure_channel(embedding_stack.address("runhistory"))
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.SearchRuns(pb.SearchRunsRequest(text=" "))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
