"""gRPC reflection that also serves the proto comments.

grpcio-reflection answers from the runtime descriptor pool, whose descriptors carry
no source info, so ``grpcurl describe`` would show bare signatures. ``make generate``
also writes each proto's descriptor *with* source info next to its generated code
(``<service>_descriptor.binpb``); this servicer answers with those where it has them
and with the pool's for everything else (well-known types, health).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from neuralops.servers.runtime import services


def _documented() -> dict[str, bytes]:
    """Serialized FileDescriptorProtos with source info, by file name. (The proto
    packages are namespace packages, so the files are found beside the modules.)"""
    out: dict[str, bytes] = {}
    for module in (s.load_proto() for s in services.SERVICES):
        stem = module.__name__.rsplit(".", 1)[1].removesuffix("_pb2")
        raw = (Path(module.__file__ or "").parent / f"{stem}_descriptor.binpb").read_bytes()
        files = descriptor_pb2.FileDescriptorSet.FromString(raw)
        for f in files.file:
            _drop_json_names(f.message_type)
            out[f.name] = f.SerializeToString()
    return out


def _drop_json_names(messages: Any) -> None:
    """Keep grpcurl printing the proto field names (``run_id``), as the runtime pool's
    descriptors make it do, rather than the lowerCamel JSON names."""
    for m in messages:
        for f in m.field:
            f.ClearField("json_name")
        _drop_json_names(m.nested_type)


class DocumentedReflectionServicer(reflection.ReflectionServicer):
    def __init__(self, service_names: tuple[str, ...]) -> None:
        super().__init__(service_names)
        self._docs = _documented()
        self._pool_ref = descriptor_pool.Default()

    def _response(self, file: descriptor.FileDescriptor, request: Any) -> Any:
        seen: dict[str, descriptor.FileDescriptor] = {}
        todo = [file]
        while todo:
            f = todo.pop()
            if f.name in seen:
                continue
            seen[f.name] = f
            todo.extend(f.dependencies)
        protos = []
        for name, f in seen.items():
            if name in self._docs:
                protos.append(self._docs[name])
            else:
                p = descriptor_pb2.FileDescriptorProto()
                f.CopyToProto(p)
                protos.append(p.SerializeToString())
        return reflection_pb2.ServerReflectionResponse(
            file_descriptor_response=reflection_pb2.FileDescriptorResponse(
                file_descriptor_proto=protos
            ),
            original_request=request,
        )

    def _file_by_filename(self, request: Any, filename: str) -> Any:
        try:
            return self._response(self._pool_ref.FindFileByName(filename), request)
        except KeyError:
            return super()._file_by_filename(request, filename)

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        name = fully_qualified_name
        while name:
            try:
                return self._response(self._pool_ref.FindFileContainingSymbol(name), request)
            except KeyError:
                # The pool indexes services, not their methods: retry with the parent
                # (``pkg.Service.Method`` -> ``pkg.Service``).
                name = name.rpartition(".")[0]
        return super()._file_containing_symbol(request, fully_qualified_name)


def enable(server: grpc.Server, service_names: tuple[str, ...]) -> None:
    names = (*service_names, reflection.SERVICE_NAME)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        DocumentedReflectionServicer(names), server
    )
