"""The one status codec: typed Enums <-> proto enum numbers, no name arithmetic."""

from __future__ import annotations

from enum import StrEnum

import pytest
from neuralops.clients.enums import EMBEDDING_STATUS, RUN_STATUS, EnumCodec, RunStatus
from neuralops.runhistory.v1 import runhistory_pb2 as pb
from neuralops.servers.runtime.convert import dict_message, message_dict


def test_every_run_status_round_trips_to_the_proto_value_of_its_name() -> None:
    for member in RunStatus:
        number = RUN_STATUS.to_proto(member)
        assert pb.RunStatus.Name(number) == f"RUN_STATUS_{member.name}"
        assert RUN_STATUS.from_proto(number) is member
        assert RUN_STATUS.text(number) == member.value
        assert RUN_STATUS.to_proto(member.value) == number
    # Every proto value but UNSPECIFIED has a member: a new proto value fails here.
    assert len(pb.RunStatus.values()) - 1 == len(RunStatus)
    assert len(pb.EmbeddingStatus.values()) - 1 == len(EMBEDDING_STATUS.names)


@pytest.mark.parametrize("value", [None, "", "RUN_STATUS_COMPLETED", "done", "Completed"])
def test_unknown_text_encodes_to_unspecified(value: str | None) -> None:
    assert RUN_STATUS.to_proto(value) == pb.RUN_STATUS_UNSPECIFIED


def test_unknown_numbers_decode_to_nothing() -> None:
    assert RUN_STATUS.from_proto(pb.RUN_STATUS_UNSPECIFIED) is None
    assert RUN_STATUS.from_proto(99) is None and RUN_STATUS.text(99) == ""


def test_a_codec_must_cover_every_member_once() -> None:
    class Two(StrEnum):
        A = "a"
        B = "b"

    with pytest.raises(ValueError):
        EnumCodec(Two, {Two.A: pb.RUN_STATUS_RUNNING}, unspecified=pb.RUN_STATUS_UNSPECIFIED)
    with pytest.raises(ValueError):
        EnumCodec(
            Two,
            {Two.A: pb.RUN_STATUS_RUNNING, Two.B: pb.RUN_STATUS_UNSPECIFIED},
            unspecified=pb.RUN_STATUS_UNSPECIFIED,
        )


@pytest.mark.parametrize(
    "written",
    ["failed", "FAILED", "Failed", "RUN_STATUS_FAILED", "run_status_failed", RunStatus.FAILED],
)
def test_lookup_reads_every_way_a_caller_writes_a_status(written: str) -> None:
    assert RUN_STATUS.lookup(written) is RunStatus.FAILED


@pytest.mark.parametrize("written", ["", "done", "unspecified", "RUN_STATUS_UNSPECIFIED", "7"])
def test_lookup_names_no_member_for_anything_else(written: str) -> None:
    assert RUN_STATUS.lookup(written) is None


def test_proto_names_come_from_the_generated_enum() -> None:
    assert RUN_STATUS.proto_names == tuple(
        pb.RunStatus.Name(RUN_STATUS.to_proto(m)) for m in RunStatus
    )
    assert RUN_STATUS.proto_name(RunStatus.CANCELLED) == "RUN_STATUS_CANCELLED"


def test_unspecified_is_stored_as_empty_text_and_the_old_spelling_still_reads() -> None:
    # The one rule for status 0: its stored text is "", and rows written before the
    # rule ("unspecified") read back as 0, as "" does.
    assert RUN_STATUS.text(pb.RUN_STATUS_UNSPECIFIED) == ""
    for stored in ("", "unspecified"):
        assert RUN_STATUS.to_proto(stored) == pb.RUN_STATUS_UNSPECIFIED
        assert RUN_STATUS.to_proto(RUN_STATUS.lookup(stored)) == pb.RUN_STATUS_UNSPECIFIED


def test_enums_inside_stored_messages_go_through_their_codec() -> None:
    node = pb.NodeLog(name="agent")
    node.calls.add(kind=pb.CALL_KIND_MODEL, status=pb.RUN_STATUS_FAILED, name="m")
    node.calls.add(kind=pb.CALL_KIND_TOOL, name="t")
    stored = message_dict(node)
    assert [(c["kind"], c.get("status")) for c in stored["calls"]] == [
        ("model", "failed"),
        ("tool", None),
    ]
    assert dict_message(stored, pb.NodeLog()) == node
    # Spellings older rows hold read back too; text no codec names reads as 0.
    older = {"name": "agent", "calls": [{"kind": "CALL_KIND_TOOL", "status": "unspecified"}]}
    back = dict_message(older, pb.NodeLog())
    assert back.calls[0].kind == pb.CALL_KIND_TOOL
    assert back.calls[0].status == pb.RUN_STATUS_UNSPECIFIED
