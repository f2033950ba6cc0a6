"""Server reflection that resolves method symbols (grpc/grpc#34743) and serves descriptors as
protoc writes them (with ``json_name``), so ghz and grpcurl see what ``--proto`` gives them."""

from __future__ import annotations

from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha._base import _collect_transitive_dependencies, _not_found_error


def json_name(field_name: str) -> str:
    """protoc's JSON name of a field: underscores dropped, the letter after each upper-cased."""
    out, upper = [], False
    for ch in field_name:
        if ch == "_":
            upper = True
        else:
            out.append(ch.upper() if upper else ch)
            upper = False
    return "".join(out)


def _with_json_names(message: descriptor_pb2.DescriptorProto) -> None:
    for field in message.field:
        if not field.HasField("json_name"):
            field.json_name = json_name(field.name)
    for nested in message.nested_type:
        _with_json_names(nested)


def file_descriptor_response(descriptor, original_request):
    """The file and its dependencies, each as protoc would write it (json_name set)."""
    files: dict = {}
    _collect_transitive_dependencies(descriptor, files)
    serialized = []
    for file in files.values():
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        for message in proto.message_type:
            _with_json_names(message)
        serialized.append(proto.SerializeToString())
    return reflection_pb2.ServerReflectionResponse(
        file_descriptor_response=reflection_pb2.FileDescriptorResponse(
            file_descriptor_proto=serialized),
        original_request=original_request)


class MethodAwareReflectionServicer(reflection.ReflectionServicer):
    """grpcio-reflection's servicer, plus: ``pkg.Service.Method`` resolves to the service's file,
    and fields carry their JSON names."""

    def _file_by_filename(self, request, filename):
        try:
            return file_descriptor_response(self._pool.FindFileByName(filename), request)
        except KeyError:
            return _not_found_error(request)

    def _file_containing_symbol(self, request, fully_qualified_name):
        try:
            return file_descriptor_response(
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
        return file_descriptor_response(service.file, request)

    def _file_containing_extension(self, request, containing_type, extension_number):
        try:
            message = self._pool.FindMessageTypeByName(containing_type)
            extension = self._pool.FindExtensionByNumber(message, extension_number)
            file = self._pool.FindFileContainingSymbol(extension.full_name)
        except KeyError:
            return _not_found_error(request)
        return file_descriptor_response(file, request)


def enable_reflection(service_names, server) -> None:
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        MethodAwareReflectionServicer(service_names), server)
