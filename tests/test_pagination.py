"""Keyset pagination (servers/runtime/pagination.py) and the listings built on it."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf import duration_pb2
from neuralops.insight.v1 import insight_pb2 as ipb
from neuralops.insight.v1 import insight_pb2_grpc
from neuralops.servers.runtime import pagination
from neuralops.servers.runtime.app import App
from neuralops.servers.runtime.db import as_datetime
from neuralops.servers.runtime.errors import InvalidArgument

from tests.helpers import field_violations

_ID = "6f1c1b7e-0000-4000-8000-000000000001"


def _token(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def test_page_slices_the_extra_row_into_a_next_token() -> None:
    assert pagination.page([1, 2, 3], 2, str) == ([1, 2], "2")
    assert pagination.page([1, 2], 2, str) == ([1, 2], "")
    assert pagination.page([], 2, str) == ([], "")


def test_a_position_round_trips_through_its_token_and_only_in_its_listing() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC)
    rows = [(at, _ID), (at, _ID)]
    page, token = pagination.keyset_page(rows, 1, "runs:x", lambda r: r)
    assert page == rows[:1]
    assert pagination.decode_position(token, "runs:x") == (at, _ID)
    with pytest.raises(InvalidArgument):
        pagination.decode_position(token, "runs:y")
    for forged in (
        {"s": "runs:x", "t": "yesterday", "i": _ID},
        {"s": "runs:x", "t": at.isoformat()},
    ):
        with pytest.raises(InvalidArgument):
            pagination.decode_position(_token(forged), "runs:x")


def test_a_key_token_holds_text_only() -> None:
    assert pagination.decode_key(pagination.encode_key("wf", "a"), "wf") == "a"
    assert pagination.decode_key("", "wf") is None
    with pytest.raises(InvalidArgument):
        pagination.decode_key(_token({"s": "wf", "a": 1}), "wf")


def test_predicate_and_order_agree_on_the_direction() -> None:
    assert pagination.after("postgres", "t") == "(t, id) < (%s::timestamptz, %s::uuid)"
    assert pagination.after("sqlite", "t", newest_first=False) == "(t, id) > (%s, %s)"
    assert pagination.order("t") == "t DESC, id DESC"
    assert pagination.order("t", newest_first=False) == "t ASC, id ASC"


def _insight(app: App) -> insight_pb2_grpc.InsightServiceStub:
    return insight_pb2_grpc.InsightServiceStub(grpc.insecure_channel(app.address("insight")))


def test_list_watches_walks_oldest_first_and_reads_tokens_of_the_earlier_format(
    stack: App,
) -> None:
    stub = _insight(stack)
    made = []
    for i in range(5):
        watch = ipb.Watch(
            name=f"w{i}", query=f"up{{i='{i}'}}", interval=duration_pb2.Duration(seconds=3600)
        )
        made.append(stub.CreateWatch(ipb.CreateWatchRequest(watch=watch)).watch)
    seen, token, pages = [], "", 0
    while True:
        reply = stub.ListWatches(ipb.ListWatchesRequest(page_size=2, page_token=token))
        seen += [w.id for w in reply.watches]
        pages += 1
        token = reply.next_page_token
        if not token:
            break
    assert seen == [w.id for w in made] and pages == 3
    # The token format is unchanged: {"s": "watches", "t": created_at, "i": id}.
    assert stack.db is not None
    with stack.db.transaction(write=False) as tx:
        row = tx.execute("SELECT created_at FROM insight_watches WHERE id = %s", (made[0].id,))[0]
    at = as_datetime(row["created_at"])
    assert at is not None
    older = _token({"s": "watches", "t": at.isoformat(), "i": made[0].id})
    rest = stub.ListWatches(ipb.ListWatchesRequest(page_token=older))
    assert [w.id for w in rest.watches] == [w.id for w in made[1:]]
    for forged in (_token({"s": "signals:", "t": "x"}), _token({"s": "watches", "t": "x"})):
        with pytest.raises(grpc.RpcError) as err:
            stub.ListWatches(ipb.ListWatchesRequest(page_token=forged))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(err.value) == ["page_token"]


@pytest.mark.parametrize(
    ("token", "ok"),
    [
        ("", True),
        (_token({"s": "wf", "a": "x"}), True),
        (_token({"s": "runs:x", "t": "2026-01-02T03:04:05Z", "i": _ID}), True),
        (_token({"s": "runs:x", "t": None}), False),
        (_token({"s": "runs:x", "t": "soon"}), False),
        (_token({"s": "runs:x", "i": "not-a-uuid"}), False),
        (_token({"s": "x\u0000"}), False),
        (_token([1, 2]), False),
        ("!!!", False),
        ("e" * 5000, False),
    ],
)
def test_well_formed_is_the_check_every_validator_makes(token: str, ok: bool) -> None:
    assert pagination.well_formed(token) is ok
