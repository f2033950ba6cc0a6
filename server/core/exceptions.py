"""The service core's exceptions (no gRPC here): what went wrong, for the boundaries to map."""

from __future__ import annotations


class LimitError(ValueError):
    """A request is over a configured limit (size, pixels, batch, top_k): RESOURCE_EXHAUSTED."""


class NotFoundError(KeyError):
    """Ids or keys that are not stored: NOT_FOUND."""

    def __str__(self) -> str:  # KeyError quotes its message; this one reads as plain text
        return str(self.args[0]) if self.args else "not found"


class UnavailableError(RuntimeError):
    """The service cannot do this now (shutting down, store not writable): UNAVAILABLE."""


class Unauthenticated(PermissionError):
    """No token, more than one, or one the server does not know: UNAUTHENTICATED."""


class PermissionDenied(PermissionError):
    """A known token without the role the call needs on its collection: PERMISSION_DENIED."""
