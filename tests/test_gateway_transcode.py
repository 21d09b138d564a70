"""The transcoding rules on their own: templates, and HTTP → request messages on a
service described only by its descriptor (nothing in the gateway names our RPCs)."""

from __future__ import annotations

import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, timestamp_pb2
from neuralops.servers.gateway import transcode
from neuralops.servers.gateway.app import service_descriptors
from neuralops.servers.gateway.routes import (
    Route,
    RouteTable,
    TemplateError,
    compile_template,
    routes_of,
)

F = descriptor_pb2.FieldDescriptorProto


def _demo_service() -> descriptor_pool.DescriptorPool:
    """A made-up service with nested, repeated, enum and Timestamp fields, annotated
    the way a .proto would be."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(timestamp_pb2.DESCRIPTOR.serialized_pb))
    f = descriptor_pb2.FileDescriptorProto(
        name="demo/v1/demo.proto",
        package="demo.v1",
        syntax="proto3",
        dependency=["google/protobuf/timestamp.proto"],
    )
    f.enum_type.add(name="Color").value.extend(
        [
            descriptor_pb2.EnumValueDescriptorProto(name="COLOR_UNSPECIFIED", number=0),
            descriptor_pb2.EnumValueDescriptorProto(name="COLOR_RED", number=1),
            descriptor_pb2.EnumValueDescriptorProto(name="COLOR_BLUE", number=2),
        ]
    )
    key = f.message_type.add(name="Key")
    key.field.add(name="shelf", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    key.field.add(name="book", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    req = f.message_type.add(name="ThingRequest")
    req.field.add(
        name="key", number=1, type=F.TYPE_MESSAGE, type_name=".demo.v1.Key", label=F.LABEL_OPTIONAL
    )
    req.field.add(name="tags", number=2, type=F.TYPE_STRING, label=F.LABEL_REPEATED)
    req.field.add(
        name="color", number=3, type=F.TYPE_ENUM, type_name=".demo.v1.Color", label=F.LABEL_OPTIONAL
    )
    req.field.add(
        name="colors",
        number=4,
        type=F.TYPE_ENUM,
        type_name=".demo.v1.Color",
        label=F.LABEL_REPEATED,
    )
    req.field.add(name="page_size", number=5, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    req.field.add(
        name="since",
        number=6,
        type=F.TYPE_MESSAGE,
        type_name=".google.protobuf.Timestamp",
        label=F.LABEL_OPTIONAL,
    )
    req.field.add(
        name="note", number=7, type=F.TYPE_MESSAGE, type_name=".demo.v1.Key", label=F.LABEL_OPTIONAL
    )
    req.field.add(name="path", number=8, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    req.field.add(name="deleted", number=9, type=F.TYPE_BOOL, label=F.LABEL_OPTIONAL)
    svc = f.service.add(name="DemoService")
    rules = {
        "GetThing": http_pb2.HttpRule(
            get="/shelves/{key.shelf}/books/{key.book}",
            additional_bindings=[http_pb2.HttpRule(get="/books/{key.book}")],
        ),
        "PutThing": http_pb2.HttpRule(put="/things/{key.shelf}", body="note"),
        "MakeThing": http_pb2.HttpRule(post="/things:make", body="*"),
        "FileThing": http_pb2.HttpRule(get="/files/{path=**}"),
        "ShelfOf": http_pb2.HttpRule(get="/shelf-of/{key.book}", response_body="shelf"),
    }
    for name, rule in rules.items():
        m = svc.method.add(
            name=name, input_type=".demo.v1.ThingRequest", output_type=".demo.v1.Key"
        )
        m.options.Extensions[annotations_pb2.http].CopyFrom(rule)
    pool.Add(f)
    return pool


@pytest.fixture(scope="module")
def table() -> RouteTable:
    pool = _demo_service()
    return RouteTable(routes_of(pool.FindServiceByName("demo.v1.DemoService")))


def _route(table: RouteTable, method: str, path: str) -> tuple[Route, dict[str, str]]:
    found = table.find(method, path)
    assert found is not None and not isinstance(found, str), (method, path, found)
    return found


def test_templates_compile_by_the_http_proto_grammar() -> None:
    pattern, variables, _ = compile_template("/v1/{name=shelves/*/books/*}:publish")
    assert [v.field_path for v in variables] == ["name"]
    assert pattern.fullmatch("/v1/shelves/a/books/b:publish")
    assert not pattern.fullmatch("/v1/shelves/a/books/b")
    assert not pattern.fullmatch("/v1/shelves/a:publish")
    pattern, variables, _ = compile_template("/files/{path=**}")
    assert variables[0].multi_segment and pattern.fullmatch("/files/a/b/c.txt")
    for bad in ("runs", "/a/x{b}", "/a/{b}x"):
        with pytest.raises(TemplateError):
            compile_template(bad)


def test_nested_path_variables_and_additional_bindings(table: RouteTable) -> None:
    route, found = _route(table, "GET", "/shelves/s%2F1/books/b%201")
    msg = transcode.build_request(route, found, [], b"")
    assert (msg.key.shelf, msg.key.book) == ("s/1", "b 1")  # type: ignore[attr-defined]


def test_query_parameters_repeated_enums_timestamps_and_nested(table: RouteTable) -> None:
    route, found = _route(table, "GET", "/books/b1")
    msg: object = transcode.build_request(
        route,
        found,
        [
            ("tags", "a"),
            ("tags", "b"),
            ("color", "COLOR_BLUE"),
            ("colors", "red"),
            ("colors", "2"),
            ("page_size", "7"),
            ("since", "2026-01-02T03:04:05Z"),
            ("key.shelf", "top"),
            ("deleted", "true"),
        ],
        b"",
    )
    m: object = msg
    assert list(m.tags) == ["a", "b"]  # type: ignore[attr-defined]
    assert m.color == 2 and list(m.colors) == [1, 2]  # type: ignore[attr-defined]
    assert m.page_size == 7 and m.deleted is True  # type: ignore[attr-defined]
    assert m.since.seconds == 1767323045  # type: ignore[attr-defined]
    assert (m.key.shelf, m.key.book) == ("top", "b1")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ([("page_size", "ten")], "page_size"),
        ([("color", "COLOR_GREEN")], "color"),
        ([("since", "yesterday")], "since"),
        ([("nope", "1")], "nope"),
        ([("note", "x")], "note"),
        ([("page_size", "1"), ("page_size", "2")], "page_size"),
    ],
)
def test_bad_query_values_name_their_field(
    table: RouteTable, query: list[tuple[str, str]], field: str
) -> None:
    route, found = _route(table, "GET", "/books/b1")
    with pytest.raises(transcode.BadField) as err:
        transcode.build_request(route, found, query, b"")
    assert err.value.field == field


def test_body_star_and_body_field(table: RouteTable) -> None:
    route, found = _route(table, "POST", "/things:make")
    msg: object = transcode.build_request(
        route, found, [], b'{"key": {"shelf": "s"}, "tags": ["x"], "pageSize": 3}'
    )
    assert msg.key.shelf == "s" and list(msg.tags) == ["x"]  # type: ignore[attr-defined]
    assert msg.page_size == 3  # type: ignore[attr-defined]

    route, found = _route(table, "PUT", "/things/top")
    msg = transcode.build_request(route, found, [("tags", "q")], b'{"book": "in-note"}')
    assert msg.note.book == "in-note" and msg.key.shelf == "top"  # type: ignore[attr-defined]
    assert list(msg.tags) == ["q"]  # type: ignore[attr-defined]
    with pytest.raises(transcode.BadField) as err:
        transcode.build_request(route, found, [("note.book", "x")], b"{}")
    assert err.value.field == "note.book"
    with pytest.raises(transcode.BadField) as err:
        transcode.build_request(route, found, [], b"{not json")
    assert err.value.field == "body"
    with pytest.raises(transcode.BadField) as err:
        transcode.build_request(route, found, [], b'{"book": 5, "shelf": []}')
    assert err.value.field == "note"


def test_multi_segment_variable_and_method_mismatch(table: RouteTable) -> None:
    route, found = _route(table, "GET", "/files/a/b/c.txt")
    assert transcode.build_request(route, found, [], b"").path == "a/b/c.txt"  # type: ignore[attr-defined]
    assert table.find("DELETE", "/files/a") == "method"
    assert table.find("GET", "/nowhere") is None


def test_our_contracts_annotate_the_documented_routes() -> None:
    served = {
        (r.http_method, r.template): r.grpc_path.rsplit("/", 1)[1]
        for svc in service_descriptors()
        for r in routes_of(svc)
    }
    for key, rpc in {
        ("GET", "/workflows/{workflow_id}/runs"): "ListWorkflowRuns",
        ("GET", "/workflows"): "ListWorkflows",
        ("GET", "/workflows/{workflow_id}"): "GetWorkflow",
        ("GET", "/runs/{wpk_id}/{run_id}"): "GetRun",
        ("POST", "/runs"): "LogRun",
        ("GET", "/signals"): "ListSignals",
        ("POST", "/signals:probe"): "Probe",
    }.items():
        assert served.get(key) == rpc, key


def test_response_body_and_json_mapping(table: RouteTable) -> None:
    route, _ = _route(table, "GET", "/shelf-of/b")
    reply = transcode.new_message(route.method.output_type)
    reply.shelf = "top"  # type: ignore[attr-defined]
    assert transcode.response_json(route, reply) == "top"
    route, _ = _route(table, "GET", "/books/b")
    assert transcode.response_json(route, reply) == {"shelf": "top", "book": ""}
