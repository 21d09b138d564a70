"""HTTP/JSON in front of the gRPC services, and the web console.

Routes come from the ``google.api.http`` annotations in the protos (:mod:`.routes`), the
HTTP ↔ protobuf rules from ``google/api/http.proto`` (:mod:`.transcode`), errors from
grpc-gateway's status mapping (:mod:`.errors`); :mod:`.app` is the Starlette app and
:mod:`.server` runs it under uvicorn inside ``neuralops serve`` / ``up``.
"""
