"""HTTP routes read from the ``google.api.http`` annotations of the service descriptors.

The same annotations grpc-gateway and Envoy's gRPC-JSON transcoder read: a deployment
can put either in front of the gRPC servers instead of this gateway. Nothing here names
an RPC: annotating a method in its .proto (then ``make generate``) is all it takes to
serve it over HTTP.

Path templates follow ``google/api/http.proto``::

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    Verb     = ":" LITERAL ;
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor

_METHOD_FIELDS = ("get", "put", "post", "delete", "patch")


class TemplateError(ValueError):
    """A path template the grammar does not allow."""


@dataclass(frozen=True)
class Variable:
    """A path variable: the request field it sets and whether it may span segments."""

    field_path: str
    multi_segment: bool


@dataclass(frozen=True)
class Route:
    """One HTTP binding of one gRPC method."""

    http_method: str
    template: str
    pattern: re.Pattern[str]
    variables: tuple[Variable, ...]
    literal_segments: int
    body: str
    response_body: str
    service: str
    method: descriptor.MethodDescriptor

    @property
    def grpc_path(self) -> str:
        return f"/{self.service}/{self.method.name}"

    def match(self, path: str) -> dict[str, str] | None:
        """The decoded path variables by field path, or None when ``path`` does not match."""
        m = self.pattern.fullmatch(path)
        if m is None:
            return None
        out: dict[str, str] = {}
        for i, var in enumerate(self.variables):
            raw = m.group(i + 1)
            # A single-segment value may hold an escaped "/"; a multi-segment one keeps
            # its "/" separators and decodes everything else (http.proto's rules).
            out[var.field_path] = unquote(raw)
        return out


def _compile_segments(segments: str, where: str) -> tuple[str, int]:
    """Regex for a "/"-separated segment list, and how many literal segments it has."""
    parts: list[str] = []
    literals = 0
    for seg in segments.split("/"):
        if seg == "*":
            parts.append(r"[^/]+")
        elif seg == "**":
            parts.append(r".+")
        elif seg and not re.search(r"[{}*=]", seg):
            parts.append(re.escape(seg))
            literals += 1
        else:
            raise TemplateError(f"bad segment {seg!r} in {where}")
    return "/".join(parts), literals


def compile_template(template: str) -> tuple[re.Pattern[str], tuple[Variable, ...], int]:
    """Compile a path template into a regex with one group per variable."""
    if not template.startswith("/"):
        raise TemplateError(f"template {template!r} must start with '/'")
    body, verb = template, ""
    last = template.rsplit("/", 1)[1]
    if ":" in last and "}" not in last.split(":", 1)[1]:
        body, verb = template.rsplit(":", 1)
    regex: list[str] = []
    variables: list[Variable] = []
    literals = 0
    pos = 1
    for m in re.finditer(r"\{([^{}=]+)(?:=([^{}]+))?\}", body):
        before = body[pos : m.start()]
        if before:
            if not before.endswith("/"):
                raise TemplateError(f"a variable must be a whole segment in {template!r}")
            part, n = _compile_segments(before[:-1], template)
            regex.append(part + "/")
            literals += n
        sub = m.group(2) or "*"
        part, n = _compile_segments(sub, template)
        literals += n
        regex.append(f"({part})")
        variables.append(Variable(m.group(1).strip(), "**" in sub.split("/")))
        pos = m.end()
        if pos < len(body) and body[pos] != "/":
            raise TemplateError(f"a variable must be a whole segment in {template!r}")
        if pos < len(body):
            pos += 1
            regex.append("/")
    rest = body[pos:]
    if rest:
        part, n = _compile_segments(rest, template)
        regex.append(part)
        literals += n
    pattern = "/" + "".join(regex) + (re.escape(":" + verb) if verb else "")
    return re.compile(pattern), tuple(variables), literals + (1 if verb else 0)


def _bindings(rule: http_pb2.HttpRule) -> Iterable[http_pb2.HttpRule]:
    yield rule
    yield from rule.additional_bindings


def routes_of(service: descriptor.ServiceDescriptor) -> list[Route]:
    """Every HTTP binding of every annotated method of ``service``."""
    out: list[Route] = []
    for method in service.methods:
        if method.client_streaming or method.server_streaming:
            continue  # transcoding here is unary only
        options = method.GetOptions()
        if not options.HasExtension(annotations_pb2.http):
            continue
        for rule in _bindings(options.Extensions[annotations_pb2.http]):
            kind = rule.WhichOneof("pattern")
            if kind is None:
                continue
            if kind == "custom":
                verb, template = rule.custom.kind.upper(), rule.custom.path
            else:
                verb, template = kind.upper(), getattr(rule, kind)
            pattern, variables, literals = compile_template(template)
            out.append(
                Route(
                    http_method=verb,
                    template=template,
                    pattern=pattern,
                    variables=variables,
                    literal_segments=literals,
                    body=rule.body,
                    response_body=rule.response_body,
                    service=service.full_name,
                    method=method,
                )
            )
    return out


class RouteTable:
    """Routes of several services, matched most specific first (more literal segments
    win over variables: ``/runs:search`` before ``/runs/{wpk_id}/{run_id}``)."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = sorted(
            routes, key=lambda r: (-r.literal_segments, len(r.variables), r.template)
        )

    def find(self, http_method: str, path: str) -> tuple[Route, dict[str, str]] | str | None:
        """The route and its path variables; the string "method" when the path is
        known under another HTTP method (405); None when no route has this path."""
        other_method = False
        for route in self.routes:
            found = route.match(path)
            if found is None:
                continue
            if route.http_method == http_method or (
                http_method == "HEAD" and route.http_method == "GET"
            ):
                return route, found
            other_method = True
        return "method" if other_method else None
