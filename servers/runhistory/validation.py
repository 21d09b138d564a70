"""RunHistory request validation: the one place its servicer checks a request.

Generic checks (enums, timestamps, NaN, Struct depth) come from
:mod:`neuralops.servers.runtime.validation`; here are RunHistory's own: ids required, at most
200 characters, without NUL, on every RPC that takes them. Free text and Struct
content may hold NUL: storage escapes it (:mod:`neuralops.servers.runtime.textcodec`).
"""

from __future__ import annotations

from google.protobuf.message import Message
from neuralops.runhistory.v1 import runhistory_pb2 as pb
from neuralops.servers.runhistory import embeddings
from neuralops.servers.runtime import validation as v
from neuralops.servers.runtime.errors import FieldViolation

_RUN_IDS = ("wpk_id", "run_id")


def _run(run: pb.Run, prefix: str) -> list[FieldViolation]:
    out: list[FieldViolation] = []
    for name in _RUN_IDS:
        out += v.id_violations(getattr(run, name), f"{prefix}.{name}")
    # Ids added to the contract later (thread_id, ...) are optional but bounded.
    for field, value in run.ListFields():
        if field.name.endswith("_id") and field.name not in _RUN_IDS and isinstance(value, str):
            out += v.id_violations(value, f"{prefix}.{field.name}", required=False)
    return out


def _top_level_ids(request: Message, required: tuple[str, ...]) -> list[FieldViolation]:
    out: list[FieldViolation] = []
    for field in request.DESCRIPTOR.fields:
        if field.type != field.TYPE_STRING or field.is_repeated:
            continue
        value = getattr(request, field.name)
        if field.name in required:
            out += v.id_violations(value, field.name)
        elif field.name == "id" or field.name.endswith("_id"):
            out += v.id_violations(value, field.name, required=False)
        elif field.name == "page_token":
            out += v.page_token_violations(value)
    return out


def validate(request: Message) -> None:
    """Raise InvalidArgument naming every field of ``request`` the service cannot take."""
    extra: list[FieldViolation] = []
    if isinstance(request, pb.LogRunRequest):
        extra = _run(request.run, "run")
    elif isinstance(request, pb.BatchLogRunsRequest):
        for i, run in enumerate(request.runs):
            extra += _run(run, f"runs[{i}]")
            if len(extra) > 20:
                break
    elif isinstance(request, pb.GetRunRequest):
        extra = _top_level_ids(request, _RUN_IDS)
    elif isinstance(request, pb.SearchRunsRequest):
        extra = _top_level_ids(request, ())
        extra += v.text_violations(request.text, "text", limit=embeddings.MAX_TEXT)
    else:  # an RPC added later: ids and page tokens by name, then the generic checks
        extra = _top_level_ids(request, ())
    v.check_request(request, extra)
