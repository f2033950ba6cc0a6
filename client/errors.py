"""The client's exceptions: one small hierarchy instead of raw grpc.RpcError."""

from __future__ import annotations

import grpc


class CrossbitError(Exception):
    """Any error from the crossbit service; ``code`` holds the gRPC status name."""

    code = "UNKNOWN"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidArgument(CrossbitError, ValueError):
    code = "INVALID_ARGUMENT"


class NotFound(CrossbitError, KeyError):
    code = "NOT_FOUND"

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not found"


class ResourceExhausted(CrossbitError):
    code = "RESOURCE_EXHAUSTED"


class Unauthenticated(CrossbitError):
    code = "UNAUTHENTICATED"


class Unavailable(CrossbitError, ConnectionError):
    code = "UNAVAILABLE"


class DeadlineExceeded(CrossbitError, TimeoutError):
    code = "DEADLINE_EXCEEDED"


_BY_CODE = {cls.code: cls for cls in (InvalidArgument, NotFound, ResourceExhausted,
                                      Unauthenticated, Unavailable, DeadlineExceeded)}


def from_rpc_error(exc: grpc.RpcError) -> CrossbitError:
    """The client exception for a failed call."""
    code = exc.code().name if exc.code() is not None else "UNKNOWN"
    cls = _BY_CODE.get(code, CrossbitError)
    return cls(exc.details() or code, code)
