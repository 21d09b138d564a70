"""The hook's capture: the fast path (orjson) and the careful walk give the same record
(the JSON text of a Struct's ``*_json`` twin), and every bound (budget, string length,
integer precision, depth) holds on both."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from enum import Enum, IntEnum
from typing import Any

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.types import Command
from neuralops.clients import capture as cap
from neuralops.clients.jsontext import deeper_than, has_negative_zero

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


def careful(value: Any, budget: int = 1_000_000, max_chars: int = 2000) -> tuple[Any, bool]:
    """The walk alone (what the fast path must agree with), as JSON text read back."""
    d, cut = cap.capture(value, cap.Budget(budget, max_chars), budget)
    return (None if d is None else orjson.loads(orjson.dumps(d))), cut


def filled(value: Any, budget: int = 1_000_000, max_chars: int = 2000) -> tuple[Any, bool]:
    """What the record carries: the JSON text ``json_capture`` writes, read back."""
    text, cut = cap.json_capture(value, cap.Budget(budget, max_chars), budget)
    if not text:  # left unset: an empty mapping (or nothing)
        return {}, cut
    assert text[:1] == b"{" and not deeper_than(text, 32)  # what the server takes
    return orjson.loads(text), cut


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_fast_path_gives_what_the_careful_walk_gives(value: dict[str, Any]) -> None:
    assert filled(value) == careful(value)


def test_langchain_messages_and_langgraph_commands_keep_their_shape() -> None:
    ai = AIMessage(
        content="",
        tool_calls=[{"name": "add", "args": {"a": 2, "b": 3}, "id": "c1"}],
        usage_metadata={"input_tokens": 12, "output_tokens": 7, "total_tokens": 19},
    )
    value = {"messages": [HumanMessage("hi"), ai], "cmd": Command(resume="yes")}
    got, cut = filled(value)
    assert (got, cut) == careful(value)
    assert got["cmd"] == {"resume": "yes"}
    assert got["messages"][1]["tool_calls"][0]["args"] == {"a": 2, "b": 3}
    assert got["messages"][1]["usage_metadata"]["total_tokens"] == 19


def test_integers_past_2_53_are_text_and_non_finite_floats_null() -> None:
    value = {"big": 2**60, "small": 15, "nan": math.nan, "inf": -math.inf}
    got, cut = filled(value)
    assert got == {"big": str(2**60), "small": 15, "nan": None, "inf": None}
    assert not cut
    assert type(got["small"]) is int  # 15 stays 15


def test_long_strings_and_budgets_are_cut_and_flagged() -> None:
    got, cut = filled({"text": "x" * 5000}, max_chars=100)
    assert cut and got["text"] == "x" * 100 + "…"
    got, cut = filled({f"k{i}": "v" * 50 for i in range(100)}, budget=500)
    assert cut and "…" in got and len(got) < 100


def test_nesting_past_the_depth_bound_is_cut() -> None:
    deep: Any = "leaf"
    for _ in range(40):
        deep = {"d": deep}
    got, cut = filled(deep)
    assert cut
    depth = 0
    while isinstance(got, dict) and "d" in got:
        got, depth = got["d"], depth + 1
    assert depth <= cap.MAX_DEPTH + 1 and got == "…"


@dataclass
class Point:
    x: int
    y: int


class Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


def test_odd_types_take_the_walk_and_never_fail() -> None:
    value = {"p": Point(1, 2), "o": Opaque(), "s": {3}, (1, 2): "tuple key"}
    got, cut = filled(value)
    assert got == {"p": {"x": 1, "y": 2}, "o": "<opaque>", "s": [3], "(1, 2)": "tuple key"}
    assert not cut


class Color(Enum):
    RED = 1


def test_both_paths_write_dates_ids_enums_and_keys_alike() -> None:
    ident = uuid.UUID(int=7)
    value = {"d": date(2024, 1, 2), "u": ident, "c": Color.RED, True: 1, None: 2}
    fast = filled(value)
    walk = careful(value)
    assert fast == walk
    assert fast[0] == {"d": "2024-01-02", "u": str(ident), "c": 1, "true": 1, "null": 2}


def test_a_lone_surrogate_is_replaced_not_fatal() -> None:
    got, _ = filled({"text": "cut emoji \ud83d", "\ud83dkey": 1})
    assert got == {"text": "cut emoji \ufffd", "\ufffdkey": 1}


def test_a_value_far_over_its_budget_is_not_written_whole() -> None:
    big = {"docs": ["x" * 100 for _ in range(200_000)]}  # ~22 MB as JSON
    started = time.perf_counter()
    got, cut = filled(big, budget=64_000)
    assert cut and len(got["docs"]) < 1000
    assert time.perf_counter() - started < 0.5  # the walk stops at the budget


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


json_trees = st.recursive(
    json_scalars | st.text(alphabet='[]{}"\\ab', max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=60,
)


@settings(max_examples=400, deadline=None)
@given(json_trees, st.integers(min_value=1, max_value=40))
def test_nesting_is_read_off_the_text_as_a_parser_would(value: Any, limit: int) -> None:
    # Brackets, quotes and backslashes inside strings must not count as nesting.
    assert deeper_than(orjson.dumps(value), limit) == (_depth(value) > limit)


def test_a_value_that_is_not_a_mapping_is_captured_under_value() -> None:
    assert filled(["a", 1]) == ({"value": ["a", 1]}, False)
    assert filled("text") == ({"value": "text"}, False)
    # An object that captures as a mapping (a message) is that mapping, on both paths.
    assert filled(HumanMessage("hi")) == careful(HumanMessage("hi"))
    assert filled(HumanMessage("hi"))[0] == {"type": "human", "content": "hi"}


def test_a_message_recurring_in_one_run_is_written_the_same_each_time() -> None:
    # A run's budget remembers each message's shape (a react agent's messages recur in
    # every node's state): the second capture must equal the first and the walk's.
    ai = AIMessage(content="5", tool_calls=[{"name": "add", "args": {"a": 2}, "id": "c1"}])
    run = cap.Budget(1_000_000, 2000)
    first, _ = cap.json_capture({"messages": [HumanMessage("hi"), ai]}, run, 64_000)
    again, _ = cap.json_capture({"last": ai, "all": [ai]}, run, 64_000)
    shape = orjson.loads(first)["messages"][1]
    assert orjson.loads(again) == {"last": shape, "all": [shape]}
    assert careful({"m": ai})[0] == {"m": shape}


@settings(max_examples=300, deadline=None)
@given(json_trees)
def test_a_negative_zero_is_found_only_as_a_number(value: Any) -> None:
    def has(v: Any) -> bool:
        if isinstance(v, dict):
            return any(map(has, v.values()))
        if isinstance(v, list):
            return any(map(has, v))
        return type(v) is float and v == 0.0 and math.copysign(1, v) < 0

    assert has_negative_zero(orjson.dumps(value)) == has(value)


def test_an_empty_mapping_leaves_the_field_unset_on_both_paths() -> None:
    # As an empty Struct did: a node that returned {} has no output, not an empty one.
    from types import MappingProxyType

    empties: list[Any] = [{}, MappingProxyType({})]  # the fast path, and the walk
    for empty in empties:
        assert cap.json_capture(empty, cap.Budget(1000, 100), 1000) == (b"", False)
    assert cap.json_capture([], cap.Budget(1000, 100), 1000) == (b'{"value":[]}', False)


def test_into_structs_moves_every_twin_into_its_struct_as_the_server_stores_it() -> None:
    from neuralops.clients.jsontext import into_structs
    from neuralops.runhistory.v1 import runhistory_pb2 as pb

    run = pb.Run(inputs_json=b'{"n": 15, "z": -0.0}')
    node = run.node_logs.add(name="a", output_json=b'{"k": [1, "x"]}')
    node.calls.add(name="m", parameters_json=b'{"t": 0.5}')
    into_structs(run)
    assert not run.inputs_json and not node.output_json and not node.calls[0].parameters_json
    assert dict(run.inputs) == {"n": 15, "z": 0.0}
    assert math.copysign(1, run.inputs.fields["z"].number_value) == 1.0  # -0 as 0, as stored
    assert [
        v.number_value or v.string_value for v in node.output.fields["k"].list_value.values
    ] == [
        1,
        "x",
    ]
    assert node.calls[0].parameters.fields["t"].number_value == 0.5


class Score(float):
    """A float subclass, as numpy.float64 is."""


class Level(IntEnum):
    HIGH = 3


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class Unreadable(Mapping[str, Any]):
    """A mapping whose items cannot be read."""

    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("cannot iterate")

    def __len__(self) -> int:
        return 1


def test_numbers_of_other_types_are_captured_as_plain_numbers() -> None:
    value = {
        "score": np.float64(0.93),
        "half": np.float32(0.5),
        "count": np.int64(7),
        "big": np.int64(2**60),
        "sub": Score(1.5),
        "level": Level.HIGH,
        "vector": np.arange(3),
        "flag": np.bool_(True),
    }
    want = {
        "score": 0.93,
        "half": 0.5,
        "count": 7,
        "big": str(2**60),  # past 2^53: text, as a Python int would be
        "sub": 1.5,
        "level": 3,
        "vector": [0, 1, 2],
        "flag": True,
    }
    assert filled(value) == (want, False)
    assert careful(value) == (want, False)
    huge = np.zeros(10_000)  # numpy's own abridged text, not ten thousand numbers
    got, _ = filled({"huge": huge})
    assert got["huge"].startswith("array([0., 0., 0., ...")


def test_a_value_that_cannot_be_read_is_named_and_the_rest_kept() -> None:
    value = {"bad": Unprintable(), "rows": Unreadable(), "ok": [1, "two"]}
    assert filled(value) == (
        {"bad": "<Unprintable>", "rows": "<Unreadable>", "ok": [1, "two"]},
        False,
    )


def test_long_keys_are_cut_like_strings_and_flagged() -> None:
    key = "k" * 100_000
    got, cut = filled({key: 1}, max_chars=2000)
    assert cut
    assert list(got) == ["k" * 2000 + "…"]


def test_non_finite_float_keys_read_the_same_on_both_paths() -> None:
    value = {math.nan: 1, math.inf: 2, 1.5: 3}
    assert filled(value) == careful(value)


def test_token_counts_reported_oddly_count_zero_and_never_fail() -> None:
    good = AIMessage("a", usage_metadata={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7})
    odd = AIMessage("b")
    reported: Any = {"input_tokens": "many", "output_tokens": -2, "total_tokens": 2**70}
    odd.usage_metadata = reported
    tokens, _ = cap.usage_of([good, odd], None)
    assert tokens == {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}
    tokens, _ = cap.usage_of(
        [], {"token_usage": {"prompt_tokens": "12", "completion_tokens": None}}
    )
    assert tokens == {"input_tokens": 12, "output_tokens": 0, "total_tokens": 12}
