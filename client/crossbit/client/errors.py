"""The client's exceptions: one small hierarchy instead of raw grpc.RpcError."""

from __future__ import annotations

import re

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


class PermissionDenied(CrossbitError, PermissionError):
    """A known token without the role the call needs on its collection."""

    code = "PERMISSION_DENIED"


class Unavailable(CrossbitError, ConnectionError):
    code = "UNAVAILABLE"


class DeadlineExceeded(CrossbitError, TimeoutError):
    code = "DEADLINE_EXCEEDED"


_BY_CODE = {cls.code: cls for cls in (InvalidArgument, NotFound, ResourceExhausted,
                                      Unauthenticated, PermissionDenied, Unavailable,
                                      DeadlineExceeded)}


CONNECT_FAILED = ("failed to connect", "connection refused", "dns resolution failed",
                  "name resolution", "connect failed", "no route to host")
# what grpc's TLS layer says (BoringSSL's reason after the error code, then ": OK")
UNTRUSTED = re.compile(r"CERTIFICATE_VERIFY_FAILED(?:: ([^:]+))?", re.I)
WRONG_NAME = ("hostname verification", "no match found for server name", "peer name")
HANDSHAKE = re.compile(r"(?:tls|ssl) handshake failed", re.I)
SSL_REASON = re.compile(r"SSL routines:\w+:([A-Z_]+)")


def from_rpc_error(exc: grpc.RpcError, address: str | None = None) -> CrossbitError:
    """The client exception for a failed call (``address`` names the server in the message
    when nothing answers there, or when TLS with it failed)."""
    code = exc.code().name if exc.code() is not None else "UNKNOWN"
    cls = _BY_CODE.get(code, CrossbitError)
    details = exc.details() or code
    if code == "UNAVAILABLE" and address:
        details = _connect_failure(details, address) or details
    return cls(details, code, _committed(exc))


def _connect_failure(details: str, address: str) -> str | None:
    """A message naming why no connection was made, or None when it was not a connect failure."""
    untrusted, handshake = UNTRUSTED.search(details), HANDSHAKE.search(details)
    if untrusted:
        reason = (untrusted.group(1) or "certificate verify failed").strip().lower()
        return (f"the TLS certificate of the server at {address} is not trusted by this client "
                f"({reason}): pass the CA certificate that signed it (crossbit --tls CA.pem, "
                "Client(..., tls='CA.pem'))")
    if any(w in details.lower() for w in WRONG_NAME):
        return (f"the TLS certificate of the server at {address} is not for that name (hostname "
                "verification failed): connect by a name or address the certificate lists")
    if handshake:
        found = SSL_REASON.search(details)
        reason = found.group(1).lower().replace("_", " ") if found else "handshake failed"
        return (f"the TLS handshake with {address} failed ({reason}): is that server serving "
                "TLS (crossbit serve --tls-cert/--tls-key)? Without TLS, leave --tls out")
    if any(w in details.lower() for w in CONNECT_FAILED):
        reason = details.rsplit(": ", 1)[-1].strip().rstrip(".").lower()
        if reason == "socket closed":  # what a TLS server does to a plaintext client
            return (f"the server at {address} closed the connection at once (socket closed): if "
                    "it serves TLS, connect with TLS (crossbit --tls CA.pem, Client(..., "
                    "tls='CA.pem'))")
        return (f"no crossbit server answers at {address} ({reason}): start one with "
                "'crossbit serve', or point --server (CROSSBIT_SERVER) at the one you have")
    return None


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
