"""Property-based fuzzing of every RPC of the three services, on SQLite and Postgres.

Requests are generated from the protobuf descriptors (so fields other helpers add
later are fuzzed too), mixed with hand-picked nasties: NUL, the escape markers,
NaN/Inf, huge and negative numbers, enum numbers the proto does not define,
extreme timestamps and durations, deep Struct nesting, 10 KB ids, bad page tokens.
Raw requests that no Python client can build (invalid UTF-8 in a string, nesting
past protobuf's depth limit) are sent as bytes.

Asserted: no INTERNAL or UNKNOWN (nor RESOURCE_EXHAUSTED from an oversized error),
health SERVING after every RPC's run, and an accepted new run reads back equal to
what was sent (an absent Struct and an empty one are the same).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from neuralops.clients.jsontext import into_structs
from neuralops.insight.v1 import insight_pb2
from neuralops.registry.v1 import registry_pb2
from neuralops.runhistory.v1 import runhistory_pb2 as rh
from neuralops.servers.runtime.app import App
from neuralops.servers.runtime.config import Config

from tests.conftest import ALL_ZERO
from tests.prometheus import PrometheusProcess

SERVICES = {
    "runhistory": rh.DESCRIPTOR.services_by_name["RunHistoryService"],
    "registry": registry_pb2.DESCRIPTOR.services_by_name["RegistryService"],
    "insight": insight_pb2.DESCRIPTOR.services_by_name["InsightService"],
}
EXAMPLES = 30  # per RPC and backend: 11 RPCs x 2 backends x 30 inputs, under a minute
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.RESOURCE_EXHAUSTED}
TRIED: dict[str, int] = {}

# ---------------------------------------------------------------- strategies


def _token(obj: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


NASTY_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\u2400",
    "\u241b",
    "\u241b\u2400\x00",
    "x" * 10_240,
    "\U0010ffff",
    "é" * 300,
    "'; DROP TABLE workflow_runs; --",
    "\\u0000",
]
NASTY_TOKENS = [
    _token({"s": "workflows", "a": "\x00"}),
    _token({"s": "runs:w", "t": "not a time", "i": "x"}),
    _token({"s": "runs:w", "t": 12, "i": 5}),
    _token({"s": "runs:w", "t": "2024-01-01T00:00:00+00:00", "i": "not-a-uuid"}),
    _token(["list"]),
    "%%%",
    "x" * 5000,
]
IDS = st.sampled_from(["w", "wf-1", "r-1", "a" * 200, "a" * 201]) | st.text(max_size=12)
TEXT = st.sampled_from(NASTY_TEXT) | st.text(max_size=40)
INT32 = st.sampled_from([0, 1, -1, 2**31 - 1, -(2**31)]) | st.integers(-(2**31), 2**31 - 1)
INT64 = st.sampled_from([0, 1, -1, 2**63 - 1, -(2**63)]) | st.integers(-(2**63), 2**63 - 1)
DOUBLE = st.sampled_from([0.0, -0.0, 1.0, 3.0, float("nan"), float("inf"), -float("inf"), 1e308])
DOUBLE |= st.floats(allow_nan=True, allow_infinity=True)
SECONDS = st.sampled_from([0, -62_135_596_801, -62_135_596_800, 253_402_300_799, 253_402_300_800])
SECONDS |= st.integers(-(2**40), 2**40)
NANOS = st.sampled_from([0, -1, 999_999_999, 1_000_000_000]) | st.integers(-(2**31), 2**31 - 1)

JSON: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | DOUBLE | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=12,
)


def _deep(levels: int) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    cur = s
    for _ in range(levels):
        cur = cur.fields["k"].struct_value
    return s


def _struct(value: Any) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    if isinstance(value, int):  # a nesting depth
        return _deep(value)
    s.update(value)
    return s


STRUCT = st.builds(_struct, st.dictionaries(TEXT, JSON, max_size=4) | st.sampled_from([20, 33]))
# What a Struct's *_json twin takes: an object's JSON text (NaN and Infinity, which JSON
# cannot carry, are refused like a non-object, a too-deep one or a bad UTF-8 one).
JSON_TEXT = st.builds(
    lambda d: json.dumps(d).encode(), st.dictionaries(TEXT, JSON, max_size=4)
) | st.sampled_from([b"[1]", b"{" * 40 + b"}" * 40, b'{"a": "\\ud800"}'])


def _enum(field: FieldDescriptor) -> st.SearchStrategy[int]:
    assert field.enum_type is not None
    defined = sorted(field.enum_type.values_by_number)
    return st.sampled_from(defined) | st.sampled_from([-1, 99, 2**31 - 1])


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    t = field.type
    name = field.name
    if t == FieldDescriptor.TYPE_STRING:
        if name == "page_token":
            return st.sampled_from(NASTY_TOKENS) | TEXT
        return IDS if name == "id" or name.endswith("_id") else TEXT
    if t == FieldDescriptor.TYPE_ENUM:
        return _enum(field)
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return DOUBLE
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t in (
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED64,
    ):
        return INT64
    if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return st.integers(0, 2**64 - 1)
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return st.integers(0, 2**32 - 1)
    if t == FieldDescriptor.TYPE_BYTES:
        if name.endswith("_json"):  # a Struct's twin: JSON text, often a valid object
            return JSON_TEXT | st.binary(max_size=20)
        return st.binary(max_size=20)
    return INT32


def _fill_time(msg: Message, seconds: int, nanos: int) -> Message:
    msg.seconds, msg.nanos = seconds, nanos  # type: ignore[attr-defined]
    return msg


def messages(desc: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Any message of ``desc``'s type: each field absent or drawn from its strategy."""
    cls = GetMessageClass(desc)
    if desc.full_name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
        return st.builds(lambda s, n: _fill_time(cls(), s, n), SECONDS, NANOS)
    if desc.full_name == "google.protobuf.Struct":
        return STRUCT
    fields = [f for f in desc.fields if depth < 3 or f.message_type is None]

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        msg = cls()
        for f in fields:
            if not draw(st.booleans()):
                continue
            if f.message_type is not None and f.message_type.GetOptions().map_entry:
                kf, vf = (
                    f.message_type.fields_by_name["key"],
                    f.message_type.fields_by_name["value"],
                )
                for k, v in draw(st.dictionaries(_scalar(kf), _scalar(vf), max_size=3)).items():
                    getattr(msg, f.name)[k] = v
            elif f.is_repeated:
                if f.message_type is not None:
                    items = draw(st.lists(messages(f.message_type, depth + 1), max_size=3))
                    getattr(msg, f.name).extend(items)
                else:
                    getattr(msg, f.name).extend(draw(st.lists(_scalar(f), max_size=3)))
            elif f.message_type is not None:
                getattr(msg, f.name).CopyFrom(draw(messages(f.message_type, depth + 1)))
            else:
                setattr(msg, f.name, draw(_scalar(f)))
        return msg

    return build()


# ---------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusProcess]:
    prom = PrometheusProcess(tmp_path_factory.mktemp("prom"))
    prom.plant(
        [("up", {"job": "fuzz"}, [(1_700_000_000.0 + 15 * i, 1.0 + (i % 7)) for i in range(80)])]
    )
    prom.start()
    yield prom
    prom.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def fuzz_stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    pg_schema_factory: Callable[[], str],
    prometheus: PrometheusProcess,
) -> Iterator[App]:
    dsn = pg_schema_factory() if request.param == "postgres" else None
    data: Path = tmp_path_factory.mktemp("fuzz") / "data"
    config = Config(postgres_dsn=dsn, data_dir=data, metrics_port=0, prom_url=prometheus.url)
    app = App(config, ports=dict(ALL_ZERO), relay_backoff_s=0.5).start()
    yield app
    app.stop(grace=1.0)


def _methods() -> list[tuple[str, MethodDescriptor]]:
    return [(svc, m) for svc, d in SERVICES.items() for m in d.methods]


def _call(app: App, service: str, method: MethodDescriptor, request: Any) -> tuple[Any, Any]:
    """(reply, None) or (None, RpcError); ``request`` is a message or raw bytes."""
    channel = grpc.insecure_channel(app.address(service))
    out_cls = GetMessageClass(method.output_type)
    raw = isinstance(request, bytes)
    rpc = channel.unary_unary(
        f"/{method.containing_service.full_name}/{method.name}",
        request_serializer=None if raw else (lambda m: m.SerializeToString()),
        response_deserializer=out_cls.FromString,
    )
    try:
        return rpc(request, timeout=30), None
    except grpc.RpcError as err:
        return None, err
    finally:
        channel.close()


def _assert_clean(err: Any, what: str) -> None:
    if err is not None:
        assert err.code() not in FORBIDDEN, f"{what}: {err.code().name} {err.details()[:300]}"


def _healthy(app: App, service: str) -> None:
    with grpc.insecure_channel(app.address(service)) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICES[service].full_name), timeout=10
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def _normalized(msg: Message) -> Message:
    """A copy without empty sub-messages and output-only run fields."""
    out = type(msg)()
    out.CopyFrom(msg)
    _drop_empty(out)
    return out


def _drop_empty(msg: Message) -> None:
    for f, value in msg.ListFields():
        if f.message_type is None or f.message_type.GetOptions().map_entry:
            continue
        if f.is_repeated:
            for item in value:
                _drop_empty(item)
        elif f.message_type.full_name.startswith("google.protobuf."):
            if value.ByteSize() == 0:
                msg.ClearField(f.name)
        else:
            _drop_empty(value)
            if value.ByteSize() == 0:
                msg.ClearField(f.name)


def _reads_back(app: App, sent: rh.Run) -> None:
    got, err = _call(
        app,
        "runhistory",
        SERVICES["runhistory"].methods_by_name["GetRun"],
        rh.GetRunRequest(wpk_id=sent.wpk_id, run_id=sent.run_id),
    )
    assert err is None, f"accepted run not readable: {err.code().name} {err.details()[:200]}"
    run = got.run
    expected = rh.Run()
    expected.CopyFrom(sent)
    into_structs(expected)  # reads answer a twin's content in its Struct
    for name in ("id", "created_at", "updated_at", "embedding_status"):
        run.ClearField(name)
        expected.ClearField(name)
    assert _normalized(run) == _normalized(expected)


@pytest.mark.parametrize(("service", "method"), _methods(), ids=lambda x: getattr(x, "name", x))
def test_fuzzed_requests_never_answer_internal(
    fuzz_stack: App, service: str, method: MethodDescriptor
) -> None:
    key = f"{service}.{method.name}"

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(messages(method.input_type))
    def check(request: Any) -> None:
        TRIED[key] = TRIED.get(key, 0) + 1
        reply, err = _call(fuzz_stack, service, method, request)
        _assert_clean(err, f"{key}({str(request)[:300]})")
        if err is None and method.name in ("LogRun", "BatchLogRuns"):
            runs = [request.run] if method.name == "LogRun" else list(request.runs)
            results = [reply] if method.name == "LogRun" else list(reply.results)
            firsts: set[tuple[str, str]] = set()
            for run, result in zip(runs, results, strict=True):
                if result.created and (run.wpk_id, run.run_id) not in firsts:
                    _reads_back(fuzz_stack, run)
                firsts.add((run.wpk_id, run.run_id))

    check()
    _healthy(fuzz_stack, service)


def _invalid_utf8(desc: Descriptor) -> list[bytes]:
    """One request per top-level string field holding bytes that are not UTF-8
    (a lone surrogate, a truncated sequence), and one nested past the depth limit."""
    out = []
    for f in desc.fields:
        if f.type == FieldDescriptor.TYPE_STRING:
            for bad in (b"\xed\xa0\x80", b"\xc3", b"\xff"):
                out.append(bytes([(f.number << 3) | 2, len(bad)]) + bad)
    # field 1 repeated as a message 120 levels deep: past protobuf's limit of 100
    deep = b""
    for _ in range(120):
        deep = b"\x0a" + _varint(len(deep)) + deep
    out.append(deep)
    out.append(b"\x0a\xff\xff\xff\xff\x0f")  # a length past the end
    return out


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


@pytest.mark.parametrize(("service", "method"), _methods(), ids=lambda x: getattr(x, "name", x))
def test_undecodable_requests_answer_invalid_argument(
    fuzz_stack: App, service: str, method: MethodDescriptor
) -> None:
    for raw in _invalid_utf8(method.input_type):
        TRIED[f"{service}.{method.name} (raw)"] = TRIED.get(f"{service}.{method.name} (raw)", 0) + 1
        _, err = _call(fuzz_stack, service, method, raw)
        if err is not None:  # bytes that happen to parse may be answered anything clean
            _assert_clean(err, f"{service}.{method.name} raw {raw[:20]!r}")
    _healthy(fuzz_stack, service)


def test_report_inputs_tried() -> None:
    """Prints how many inputs the fuzz tests sent (run with -s to see it)."""
    total = sum(TRIED.values())
    print(f"\nfuzz: {total} inputs over {len(TRIED)} RPC variants: {dict(sorted(TRIED.items()))}")
    assert total >= 0
