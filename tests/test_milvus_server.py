"""MILVUS_ENDPOINT against a real Milvus server process (the `milvus` package's binary).

Embeddings go through the real openai client to tests/openai_server.py; the vectors
go to the Milvus server over gRPC. The server is killed (SIGKILL) while embeddings
are pending: SearchRuns answers UNAVAILABLE, nothing is lost, and the pending runs
are embedded once it is back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2
from neuralops.runhistory.v1 import runhistory_pb2 as pb
from neuralops.runhistory.v1 import runhistory_pb2_grpc
from neuralops.servers.runtime.app import App
from neuralops.servers.runtime.config import Config

from tests.helpers import wait_for
from tests.milvus_server import MilvusProcess
from tests.openai_server import OpenAIServer


@pytest.fixture(scope="module")
def milvus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusProcess]:
    server = MilvusProcess(tmp_path_factory.mktemp("milvus"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    server = OpenAIServer()
    yield server
    server.close()


@pytest.fixture(params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    # The embedding queue is the same code on both backends (covered by
    # test_embeddings); one backend keeps the server drill short.
    return str(request.param)


@pytest.fixture
def milvus_stack(
    config: Config, openai_server: OpenAIServer, milvus: MilvusProcess, tmp_path: Path
) -> Iterator[App]:
    cfg = config.with_(
        openai_key="test-key",
        openai_base_url=openai_server.base_url,
        embedding_model="test-embed",
        milvus_endpoint=milvus.uri,
    )
    app = App(cfg, services=("runhistory",), ports={"runhistory": 0}).start()
    yield app
    app.stop(grace=1.0)


def _run(wpk_id: str, run_id: str, text: str) -> pb.Run:
    outputs = struct_pb2.Struct()
    outputs.update({"text": text})
    return pb.Run(wpk_id=wpk_id, run_id=run_id, outputs=outputs, status=pb.RUN_STATUS_COMPLETED)


def _stub(app: App) -> runhistory_pb2_grpc.RunHistoryServiceStub:
    return runhistory_pb2_grpc.RunHistoryServiceStub(
        grpc.insecure_channel(app.address("runhistory"))
    )


def _done(stub: runhistory_pb2_grpc.RunHistoryServiceStub, wpk_id: str, ids: list[str]) -> bool:
    return all(
        stub.GetRun(pb.GetRunRequest(wpk_id=wpk_id, run_id=r)).run.embedding_status
        == pb.EMBEDDING_STATUS_DONE
        for r in ids
    )


def test_runs_are_embedded_into_the_milvus_server_and_searchable(milvus_stack: App) -> None:
    stub = _stub(milvus_stack)
    texts = {
        "r1": "the invoice total was computed from line items",
        "r2": "weather forecast says rain tomorrow in paris",
        "r3": "refund issued for the duplicate invoice",
    }
    stub.BatchLogRuns(pb.BatchLogRunsRequest(runs=[_run("srv", k, v) for k, v in texts.items()]))
    wait_for(lambda: _done(stub, "srv", list(texts)), timeout=60)
    hits = stub.SearchRuns(pb.SearchRunsRequest(text="invoice refund", wpk_id="srv", limit=2)).hits
    assert [h.run_id for h in hits] == ["r3", "r1"]
    assert hits[0].text == texts["r3"]


def test_milvus_server_killed_while_embeddings_pending_loses_nothing(
    milvus_stack: App, milvus: MilvusProcess
) -> None:
    stub = _stub(milvus_stack)
    stub.LogRun(pb.LogRunRequest(run=_run("drill", "before", "stored before the crash")))
    wait_for(lambda: _done(stub, "drill", ["before"]), timeout=60)

    milvus.kill()
    try:
        pending = [f"p{i}" for i in range(20)]
        reply = stub.BatchLogRuns(
            pb.BatchLogRunsRequest(
                runs=[_run("drill", r, f"pending invoice number {r}") for r in pending]
            )
        )
        assert all(r.created for r in reply.results)  # storing never waits for Milvus
        with pytest.raises(grpc.RpcError) as err:
            stub.SearchRuns(pb.SearchRunsRequest(text="invoice", wpk_id="drill"), timeout=60)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        states = {
            stub.GetRun(pb.GetRunRequest(wpk_id="drill", run_id=r)).run.embedding_status
            for r in pending
        }
        assert pb.EMBEDDING_STATUS_DONE not in states
    finally:
        milvus.start()

    wait_for(lambda: _done(stub, "drill", pending), timeout=90)
    hits = stub.SearchRuns(
        pb.SearchRunsRequest(text="pending invoice number p7", wpk_id="drill", limit=25)
    ).hits
    assert {h.run_id for h in hits} == {*pending, "before"}
