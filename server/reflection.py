"""Server reflection that also resolves method symbols (grpc/grpc#34743), so ghz and grpcurl work."""

from __future__ import annotations

from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from grpc_reflection.v1alpha._base import _file_descriptor_response, _not_found_error


class MethodAwareReflectionServicer(reflection.ReflectionServicer):
    """grpcio-reflection's servicer, plus: ``pkg.Service.Method`` resolves to the service's file."""

    def _file_containing_symbol(self, request, fully_qualified_name):
        try:
            return _file_descriptor_response(
                self._pool.FindFileContainingSymbol(fully_qualified_name), request)
        except KeyError:
            pass
        service_name, _, method = fully_qualified_name.rpartition(".")
        try:
            service = self._pool.FindServiceByName(service_name)
        except KeyError:
            return _not_found_error(request)
        if method not in service.methods_by_name:
            return _not_found_error(request)
        return _file_descriptor_response(service.file, request)


def enable_reflection(service_names, server) -> None:
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        MethodAwareReflectionServicer(service_names), server)
