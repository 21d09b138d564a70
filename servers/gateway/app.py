"""The HTTP/JSON gateway and web console: one Starlette app.

Every annotated RPC is served at its ``google.api.http`` route and forwarded to the real
gRPC server over a channel, so the servers' interceptors (auth, validation, error
mapping) apply exactly as they do to gRPC callers; the caller's ``authorization``
header (and any ``Grpc-Metadata-*`` header, as grpc-gateway does) travels as metadata.

Besides the transcoded routes: ``/`` is the console (static files shipped in the
package), ``/api/routes`` lists the routes (the console reads it to know which RPCs
exist), ``/api/series`` is a thin read-only pass-through to Prometheus'
``/api/v1/query_range`` so the console can plot the series around a signal.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import grpc
import httpx
from google.protobuf import descriptor, message
from neuralops.clients.channels import channel
from neuralops.servers.gateway import errors, transcode
from neuralops.servers.gateway.routes import RouteTable, routes_of
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
CALL_TIMEOUT_S = 30.0
MAX_BODY_BYTES = 32 * 1024 * 1024
_FORWARDED_PREFIX = "grpc-metadata-"


def service_descriptors() -> list[descriptor.ServiceDescriptor]:
    """The services of the generated NeuralOps modules."""
    from neuralops.insight.v1 import insight_pb2
    from neuralops.registry.v1 import registry_pb2
    from neuralops.runhistory.v1 import runhistory_pb2

    return [
        svc
        for module in (registry_pb2, insight_pb2, runhistory_pb2)
        for svc in module.DESCRIPTOR.services_by_name.values()
    ]


def _metadata(request: Request) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in request.headers.items():
        k = key.lower()
        if k == "authorization":
            out.append((k, value))
        elif k.startswith(_FORWARDED_PREFIX) and len(k) > len(_FORWARDED_PREFIX):
            out.append((k[len(_FORWARDED_PREFIX) :], value))
    return out


class Gateway:
    """Routes from descriptors, channels to the servers that implement them."""

    def __init__(
        self,
        targets: Mapping[str, str],
        *,
        services: Iterable[descriptor.ServiceDescriptor] | None = None,
        prom_url: str | None = None,
        prom_timeout_s: float = 10.0,
    ) -> None:
        descs = list(services) if services is not None else service_descriptors()
        self.targets = dict(targets)
        self.table = RouteTable(r for svc in descs for r in routes_of(svc))
        self.prom_url = prom_url.rstrip("/") if prom_url else None
        self.prom_timeout_s = prom_timeout_s

    def _call(
        self,
        route_service: str,
        path: str,
        request: message.Message,
        out: type[message.Message],
        metadata: list[tuple[str, str]],
    ) -> message.Message:
        stub = channel(self.targets[route_service], route_service).unary_unary(
            path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=out.FromString,
        )
        result: message.Message = stub(request, metadata=tuple(metadata), timeout=CALL_TIMEOUT_S)
        return result

    async def transcode(self, request: Request) -> Response:
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        path = raw_path.decode("utf-8", "replace").split("?", 1)[0]
        found = self.table.find(request.method, path)
        if found is None:
            return JSONResponse(
                errors.error_body(grpc.StatusCode.NOT_FOUND, f"no route for {path}"), 404
            )
        if found == "method":
            return JSONResponse(
                errors.error_body(
                    grpc.StatusCode.UNIMPLEMENTED, f"{request.method} is not served on {path}"
                ),
                405,
            )
        assert not isinstance(found, str)
        route, path_vars = found
        if route.service not in self.targets:
            return JSONResponse(
                errors.error_body(
                    grpc.StatusCode.UNAVAILABLE, f"{route.service} is not reachable from here"
                ),
                503,
            )
        body = await request.body() if route.body else b""
        if len(body) > MAX_BODY_BYTES:
            return JSONResponse(
                errors.bad_request("body", f"larger than {MAX_BODY_BYTES} bytes"), 400
            )
        try:
            grpc_request = transcode.build_request(
                route, path_vars, request.query_params.multi_items(), body
            )
        except transcode.BadField as exc:
            return JSONResponse(errors.bad_request(exc.field, exc.description), 400)
        out = transcode.new_message(route.method.output_type)
        try:
            reply = await run_in_threadpool(
                self._call,
                route.service,
                route.grpc_path,
                grpc_request,
                type(out),
                _metadata(request),
            )
        except grpc.RpcError as exc:
            status, body_json = errors.from_rpc_error(exc)
            return JSONResponse(body_json, status)
        return JSONResponse(transcode.response_json(route, reply))

    async def routes(self, request: Request) -> Response:
        return JSONResponse(
            [
                {
                    "method": r.http_method,
                    "path": r.template,
                    "rpc": r.grpc_path,
                    "body": r.body,
                    "fields": [f.name for f in r.method.input_type.fields],
                }
                for r in self.table.routes
            ]
        )

    async def series(self, request: Request) -> Response:
        """``query_range`` at Prometheus for the console's plots (read-only)."""
        if self.prom_url is None:
            return JSONResponse(
                errors.error_body(
                    grpc.StatusCode.FAILED_PRECONDITION, "PROM_URL is not set: no series to plot"
                ),
                400,
            )
        params = {
            k: request.query_params[k]
            for k in ("query", "start", "end", "step")
            if k in request.query_params
        }
        if "query" not in params:
            return JSONResponse(errors.bad_request("query", "required"), 400)
        refused = await self._auth_refused(request)
        if refused is not None:
            return refused
        try:
            async with httpx.AsyncClient(timeout=self.prom_timeout_s) as client:
                reply = await client.post(f"{self.prom_url}/api/v1/query_range", data=params)
            data: Any = reply.json()
        except (httpx.HTTPError, ValueError) as exc:
            return JSONResponse(
                errors.error_body(
                    grpc.StatusCode.UNAVAILABLE, f"Prometheus at {self.prom_url}: {exc}"
                ),
                503,
            )
        return JSONResponse(data, reply.status_code if reply.status_code < 500 else 503)

    async def _auth_refused(self, request: Request) -> Response | None:
        """Series are as private as signals: the caller's credentials must pass Insight's
        own auth (a one-row ListSignals through the same interceptors) first."""
        from neuralops.insight.v1 import insight_pb2

        service = insight_pb2.DESCRIPTOR.services_by_name["InsightService"].full_name
        if service not in self.targets:
            return None
        try:
            await run_in_threadpool(
                self._call,
                service,
                f"/{service}/ListSignals",
                insight_pb2.ListSignalsRequest(page_size=1),
                insight_pb2.ListSignalsResponse,
                _metadata(request),
            )
        except grpc.RpcError as exc:
            status, body = errors.from_rpc_error(exc)
            if status in (401, 403):
                return JSONResponse(body, status)
        return None


async def _index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html")


def build_app(gateway: Gateway) -> Starlette:
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    return Starlette(
        routes=[
            Route("/", _index, methods=["GET", "HEAD"]),
            Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
            Route("/api/routes", gateway.routes, methods=["GET"]),
            Route("/api/series", gateway.series, methods=["GET"]),
            Route("/{path:path}", gateway.transcode, methods=methods),
        ]
    )
