"""Typed statuses and the one codec between them and the proto enums.

Shared by the clients and the servers (which may import the clients, never the reverse).

Storage keeps a status as its lowercase text (``completed``), the API as a proto enum
number (``RUN_STATUS_COMPLETED``). Each Python enum lists its members once, and its
:class:`EnumCodec` maps them to the proto numbers explicitly: no name or prefix
arithmetic anywhere, and an import-time check that the two sides agree.

``*_UNSPECIFIED`` (0) has no member and no stored text: it is stored as ``""`` (the
text :meth:`EnumCodec.text` gives it). Rows written before this rule hold
``"unspecified"``; :meth:`EnumCodec.to_proto` reads that (like any text it does not
know) back as 0, so they stay readable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar

from neuralops.runhistory.v1 import runhistory_pb2 as rpb

E = TypeVar("E", bound=StrEnum)
V = TypeVar("V", bound=int)  # a proto enum's ValueType


class ProtoEnum(Protocol):
    """A generated proto enum (its wrapper's ``items``: value name, number)."""

    def items(self) -> Sequence[tuple[str, int]]: ...


class EnumCodec(Generic[E, V]):
    """Python enum member <-> proto enum number. Number 0 (``*_UNSPECIFIED``) and
    numbers this code does not know decode to None; None encodes to 0."""

    def __init__(
        self,
        kind: type[E],
        numbers: Mapping[E, V],
        *,
        unspecified: V,
        proto: ProtoEnum | None = None,
    ) -> None:
        """``proto``: the generated enum (``runhistory_pb2.RunStatus``), whose value
        names (``RUN_STATUS_COMPLETED``) serve messages and reading the proto spelling
        of a member, never to compute a member's text."""
        if set(numbers) != set(kind) or unspecified in numbers.values():
            raise ValueError(f"{kind.__name__}: every member needs its own specified number")
        self.kind = kind
        self.unspecified = unspecified
        self._numbers = dict(numbers)
        self._members: dict[int, E] = {int(n): m for m, n in numbers.items()}
        names = {int(n): name for name, n in proto.items()} if proto is not None else {}
        self._proto_names: dict[E, str] = {m: names.get(int(n), m.name) for m, n in numbers.items()}
        self._by_proto_name: dict[str, E] = {n.upper(): m for m, n in self._proto_names.items()}

    def to_proto(self, value: E | str | None) -> V:
        """The number of a member or of its stored text; unspecified for None, "" or unknown."""
        member = self.parse(value) if value else None
        return self.unspecified if member is None else self._numbers[member]

    def from_proto(self, number: int) -> E | None:
        return self._members.get(number)

    def text(self, number: int) -> str:
        """The stored text of a number; "" for 0 or an unknown number (validation refuses it)."""
        member = self._members.get(number)
        return "" if member is None else member.value

    def parse(self, text: str) -> E | None:
        """The member stored as ``text``; None when it is not one."""
        try:
            return self.kind(text)
        except ValueError:
            return None

    def lookup(self, value: object) -> E | None:
        """The member ``value`` names, as a caller may write it: the member, its stored
        text or its proto name, in any case (``failed``, ``FAILED``,
        ``RUN_STATUS_FAILED``); None when it names none."""
        if isinstance(value, self.kind):
            return value
        text = str(value)
        return self.parse(text.lower()) or self._by_proto_name.get(text.upper())

    def proto_name(self, member: E) -> str:
        """``RUN_STATUS_COMPLETED`` for ``RunStatus.COMPLETED``."""
        return self._proto_names[member]

    @property
    def names(self) -> tuple[str, ...]:
        """Every member's stored text, in declaration order."""
        return tuple(m.value for m in self.kind)

    @property
    def proto_names(self) -> tuple[str, ...]:
        """Every member's proto name, in declaration order."""
        return tuple(self._proto_names[m] for m in self.kind)


class RunStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    CANCELLED = "cancelled"


class EmbeddingStatus(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


class CallKind(StrEnum):
    MODEL = "model"
    TOOL = "tool"
    RETRIEVER = "retriever"
    CHAIN = "chain"


RUN_STATUS = EnumCodec(
    RunStatus,
    {
        RunStatus.RUNNING: rpb.RUN_STATUS_RUNNING,
        RunStatus.COMPLETED: rpb.RUN_STATUS_COMPLETED,
        RunStatus.FAILED: rpb.RUN_STATUS_FAILED,
        RunStatus.INTERRUPTED: rpb.RUN_STATUS_INTERRUPTED,
        RunStatus.CANCELLED: rpb.RUN_STATUS_CANCELLED,
    },
    unspecified=rpb.RUN_STATUS_UNSPECIFIED,
    proto=rpb.RunStatus,
)

EMBEDDING_STATUS = EnumCodec(
    EmbeddingStatus,
    {
        EmbeddingStatus.PENDING: rpb.EMBEDDING_STATUS_PENDING,
        EmbeddingStatus.DONE: rpb.EMBEDDING_STATUS_DONE,
        EmbeddingStatus.FAILED: rpb.EMBEDDING_STATUS_FAILED,
        EmbeddingStatus.SKIPPED: rpb.EMBEDDING_STATUS_SKIPPED,
    },
    unspecified=rpb.EMBEDDING_STATUS_UNSPECIFIED,
    proto=rpb.EmbeddingStatus,
)

CALL_KIND = EnumCodec(
    CallKind,
    {
        CallKind.MODEL: rpb.CALL_KIND_MODEL,
        CallKind.TOOL: rpb.CALL_KIND_TOOL,
        CallKind.RETRIEVER: rpb.CALL_KIND_RETRIEVER,
        CallKind.CHAIN: rpb.CALL_KIND_CHAIN,
    },
    unspecified=rpb.CALL_KIND_UNSPECIFIED,
    proto=rpb.CallKind,
)

# The codec of each enum stored inside messages (by the proto enum's full name), for the
# generic message <-> dict conversion of the servers.
BY_PROTO_ENUM: Mapping[str, EnumCodec[Any, Any]] = {
    rpb.RunStatus.DESCRIPTOR.full_name: RUN_STATUS,
    rpb.EmbeddingStatus.DESCRIPTOR.full_name: EMBEDDING_STATUS,
    rpb.CallKind.DESCRIPTOR.full_name: CALL_KIND,
}
