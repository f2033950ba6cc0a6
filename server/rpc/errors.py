"""The one mapping of the core's exceptions to gRPC status codes, at the boundary."""

from __future__ import annotations

import functools
import inspect
import logging
from concurrent.futures import CancelledError

import grpc

from crossbit.indexer.items import StoreError
from crossbit.server.core.exceptions import (
    LimitError,
    NotFoundError,
    PermissionDenied,
    Unauthenticated,
    UnavailableError,
)

__all__ = ["LimitError", "NotFoundError", "UnavailableError", "grpc_errors", "is_abort",
           "status_for"]

log = logging.getLogger(__name__)


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a client gets for an exception raised by the core."""
    if isinstance(exc, Unauthenticated):
        return grpc.StatusCode.UNAUTHENTICATED, str(exc)
    if isinstance(exc, PermissionDenied):
        return grpc.StatusCode.PERMISSION_DENIED, str(exc)
    if isinstance(exc, LimitError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
    if isinstance(exc, (ValueError, TypeError)):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, KeyError):
        return grpc.StatusCode.NOT_FOUND, str(exc.args[0]) if exc.args else "not found"
    if isinstance(exc, CancelledError):
        return grpc.StatusCode.CANCELLED, "cancelled: the caller went away"
    if isinstance(exc, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(exc) or "deadline exceeded"
    if isinstance(exc, (StoreError, UnavailableError)):
        return grpc.StatusCode.UNAVAILABLE, str(exc)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the server log"


def _abort(context, exc: BaseException, method: str) -> None:
    code, message = status_for(exc)
    if code == grpc.StatusCode.INTERNAL:
        log.exception("%s failed", method)
    else:
        log.info("%s: %s: %s", method, code.name, message)
    context.abort(code, message)


def grpc_errors(method):
    """Decorate a servicer method so no exception reaches a client as UNKNOWN."""
    name = method.__name__

    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def stream(self, request, context):
            try:
                yield from method(self, request, context)
            except Exception as exc:
                if is_abort(exc):
                    raise
                _abort(context, exc, name)
        return stream

    @functools.wraps(method)
    def unary(self, request, context):
        try:
            return method(self, request, context)
        except Exception as exc:
            if is_abort(exc):
                raise
            _abort(context, exc, name)
    return unary


def is_abort(exc: BaseException) -> bool:
    # context.abort() raises a bare Exception subclass from grpc's internals
    return type(exc).__module__.startswith("grpc")
