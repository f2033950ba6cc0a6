"""The client's exceptions: one small hierarchy instead of raw grpc.RpcError."""

from __future__ import annotations

import grpc

COMMITTED_KEY = "crossbit-committed-bin"


class CrossbitError(Exception):
    """Any error from the crossbit service; ``code`` holds the gRPC status name.

    ``committed``: for a stream of adds that failed midway, the results of the items the
    server had committed before the failure (``AddResult`` messages); else None.
    """

    code = "UNKNOWN"
    committed = None

    def __init__(self, message: str, code: str | None = None, committed=None):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.committed = committed


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


CONNECT_FAILED = ("failed to connect", "connection refused", "dns resolution failed",
                  "name resolution", "connect failed", "no route to host")


def from_rpc_error(exc: grpc.RpcError, address: str | None = None) -> CrossbitError:
    """The client exception for a failed call (``address`` names the server in the message
    when nothing answers there)."""
    code = exc.code().name if exc.code() is not None else "UNKNOWN"
    cls = _BY_CODE.get(code, CrossbitError)
    details = exc.details() or code
    if code == "UNAVAILABLE" and address and any(w in details.lower() for w in CONNECT_FAILED):
        reason = details.rsplit(": ", 1)[-1].strip().rstrip(".").lower()
        details = (f"no crossbit server answers at {address} ({reason}): start one with "
                   "'crossbit serve', or point --server (CROSSBIT_SERVER) at the one you have")
    return cls(details, code, _committed(exc))


def _committed(exc: grpc.RpcError):
    try:
        trailing = exc.trailing_metadata() or ()
    except Exception:  # an error that never reached the server has none
        return None
    for key, value in trailing:
        if key == COMMITTED_KEY:
            from crossbit.v1 import crossbit_pb2 as pb

            return list(pb.AddResponse.FromString(value).results)
    return None
