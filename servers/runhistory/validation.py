"""RunHistory request validation: the one place its servicer checks a request.

Generic checks (enums, timestamps, NaN, Struct depth) come from
:mod:`neuralops.servers.runtime.validation`. The runs of LogRun and BatchLogRuns are
walked once, not twice: their conversion (:mod:`neuralops.servers.runtime.convert`)
makes the generic checks as it goes and signals what they refuse, and
:func:`runs_checked`, around that conversion, answers it with the field violations the
generic walk names, the same as for any other request. Here are RunHistory's own, on
every RPC that takes them: ids required, at most 200 characters, without NUL; a run's status
given, its durations not negative, its node logs named and bounded in number, its tags
bounded; a batch of 1 to 500 runs; ListRuns' workflow and filters; SearchRuns' text
and limit. The domain code (:mod:`.service`) trusts what passes here. Free text and
Struct content may hold NUL: storage escapes it (:mod:`neuralops.servers.runtime.textcodec`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from google.protobuf.message import Message
from neuralops.clients.enums import RUN_STATUS
from neuralops.runhistory.v1 import runhistory_pb2 as pb
from neuralops.servers.runhistory import embeddings
from neuralops.servers.runtime import validation as v
from neuralops.servers.runtime.convert import NotValid
from neuralops.servers.runtime.errors import FieldViolation, InvalidArgument
from neuralops.servers.runtime.validation import MAX_ID_LENGTH

_RUN_IDS = ("wpk_id", "run_id")
MAX_BATCH = 500  # runs in one BatchLogRuns
MAX_NODE_LOGS = 10_000  # node logs in one run
MAX_TAGS = 64  # tags on one run
MAX_SEARCH_LIMIT = 100  # hits one SearchRuns returns


# Ids added to the contract later (thread_id, ...) are optional but bounded: every
# other string field of a run named *_id, in field number order.
_OPTIONAL_IDS = tuple(
    f.name
    for f in sorted(pb.Run.DESCRIPTOR.fields, key=lambda f: f.number)
    if f.name.endswith("_id")
    and f.name not in _RUN_IDS
    and f.type == f.TYPE_STRING
    and not f.is_repeated
)


def _ids(run: pb.Run, prefix: str) -> list[FieldViolation]:
    out: list[FieldViolation] = []
    for name in _RUN_IDS:
        out += v.id_violations(getattr(run, name), f"{prefix}.{name}")
    for name in _OPTIONAL_IDS:
        value = getattr(run, name)
        if value:
            out += v.id_violations(value, f"{prefix}.{name}", required=False)
    return out


def _run(run: pb.Run, prefix: str) -> list[FieldViolation]:
    """Everything wrong with one run, each naming its field under ``prefix``."""
    out = _ids(run, prefix)
    if run.status == RUN_STATUS.unspecified:  # a number no value has: the generic check
        names = ", ".join(RUN_STATUS.proto_names)
        out.append(FieldViolation(f"{prefix}.status", f"must be one of {names}"))
    if run.duration_ms < 0:
        out.append(FieldViolation(f"{prefix}.duration_ms", "must be >= 0"))
    if len(run.node_logs) > MAX_NODE_LOGS:
        out.append(FieldViolation(f"{prefix}.node_logs", f"has more than {MAX_NODE_LOGS} entries"))
    if len(run.tags) > MAX_TAGS:
        out.append(FieldViolation(f"{prefix}.tags", f"has more than {MAX_TAGS} tags"))
    for i, tag in enumerate(run.tags[:MAX_TAGS]):
        if len(tag) > MAX_ID_LENGTH:
            out.append(FieldViolation(f"{prefix}.tags[{i}]", f"is longer than {MAX_ID_LENGTH}"))
    if run.omitted_node_logs < 0:
        out.append(FieldViolation(f"{prefix}.omitted_node_logs", "must be >= 0"))
    if run.HasField("usage"):
        u = run.usage
        for name in ("model_calls", "tool_calls", "retriever_calls", "failed_calls"):
            if getattr(u, name) < 0:
                out.append(FieldViolation(f"{prefix}.usage.{name}", "must be >= 0"))
        _tokens(u.tokens, f"{prefix}.usage.tokens", out)
    _calls(run.calls, f"{prefix}.calls", out)
    for i, node in enumerate(run.node_logs[:MAX_NODE_LOGS]):
        if not node.name.strip():
            out.append(FieldViolation(f"{prefix}.node_logs[{i}].name", "is required"))
        if node.duration_ms < 0:
            out.append(FieldViolation(f"{prefix}.node_logs[{i}].duration_ms", "must be >= 0"))
        _calls(node.calls, f"{prefix}.node_logs[{i}].calls", out)
        if len(out) > 20:
            break
    return out


def _tokens(usage: pb.Usage, path: str, out: list[FieldViolation]) -> None:
    for field, value in usage.ListFields():
        if value < 0:
            out.append(FieldViolation(f"{path}.{field.name}", "must be >= 0"))


def _calls(calls: Sequence[pb.Call], path: str, out: list[FieldViolation]) -> None:
    """Durations, time to first token and token counts of calls (nested too) are
    never negative (the proto says "at least 0")."""
    for j, call in enumerate(calls):
        here = f"{path}[{j}]"
        if call.duration_ms < 0:
            out.append(FieldViolation(f"{here}.duration_ms", "must be >= 0"))
        if call.HasField("time_to_first_token_ms") and call.time_to_first_token_ms < 0:
            out.append(FieldViolation(f"{here}.time_to_first_token_ms", "must be >= 0"))
        _tokens(call.usage, f"{here}.usage", out)
        if len(out) > 20:
            return
        _calls(call.calls, f"{here}.calls", out)


def _batch(request: pb.BatchLogRunsRequest) -> list[FieldViolation]:
    n = len(request.runs)
    if not n:
        return [FieldViolation("runs", "must hold at least one run")]
    if n > MAX_BATCH:
        return [FieldViolation("runs", f"holds {n} runs; at most {MAX_BATCH}")]
    out: list[FieldViolation] = []
    for i, run in enumerate(request.runs):
        out += _run(run, f"runs[{i}]")
        if len(out) > 20:
            break
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


def _search(request: pb.SearchRunsRequest) -> list[FieldViolation]:
    out = _top_level_ids(request, ())
    if not request.text.strip():
        out.append(FieldViolation("text", "is required"))
    out += v.text_violations(request.text, "text", limit=embeddings.MAX_TEXT)
    if not 0 <= request.limit <= MAX_SEARCH_LIMIT:
        out.append(
            FieldViolation("limit", f"must be between 1 and {MAX_SEARCH_LIMIT} (0 means 10)")
        )
    return out


def validate(request: Message) -> None:
    """Raise InvalidArgument naming every field of ``request`` the service cannot take.
    Of a LogRun or BatchLogRuns whose runs pass RunHistory's own checks, the generic
    checks are left to the conversion of the runs, which must run inside
    :func:`runs_checked`."""
    extra: list[FieldViolation] = []
    converted_later = False
    if isinstance(request, pb.LogRunRequest):
        extra = _run(request.run, "run")
        converted_later = True
    elif isinstance(request, pb.BatchLogRunsRequest):
        extra = _batch(request)
        if extra and extra[0].field == "runs":
            raise InvalidArgument(extra)  # no run is looked at in a batch of the wrong size
        converted_later = True
    elif isinstance(request, pb.GetRunRequest):
        extra = _top_level_ids(request, _RUN_IDS)
    elif isinstance(request, pb.ListRunsRequest):
        extra = _top_level_ids(request, ("wpk_id",))
        if len(request.tag) > MAX_ID_LENGTH:  # a tag filter may hold NUL, as tags may
            extra.append(
                FieldViolation("tag", f"is {len(request.tag)} characters; at most {MAX_ID_LENGTH}")
            )
    elif isinstance(request, pb.SearchRunsRequest):
        extra = _search(request)
    else:  # an RPC added later: ids and page tokens by name, then the generic checks
        extra = _top_level_ids(request, ())
    if converted_later and not extra:
        return
    v.check_request(request, extra)


@contextmanager
def runs_checked(request: pb.LogRunRequest | pb.BatchLogRunsRequest) -> Iterator[None]:
    """Around the conversion of the runs of a request :func:`validate` passed: the
    conversion signals (:class:`NotValid`) a value the generic checks refuse without
    naming it; this answers INVALID_ARGUMENT with the violations the generic walk
    names, as :func:`validate` answers any other request (storage has stored nothing:
    its transaction ends with the signal)."""
    try:
        yield
    except NotValid as exc:
        violations = v.message_violations(request)
        if not violations:  # the conversion and the walk disagree; the signal still stands
            field = "run" if isinstance(request, pb.LogRunRequest) else "runs"
            violations = [FieldViolation(field, str(exc))]
        raise InvalidArgument(violations[:20]) from None
