"""Bearer-token auth at the gRPC boundary: the interceptor refuses every RPC but health from a caller
without a known token (UNAUTHENTICATED); the servicer asks :func:`principal` who the caller is and
checks its role on the call's collection (PERMISSION_DENIED)."""

from __future__ import annotations

import grpc

from crossbit.server.core.exceptions import Unauthenticated
from crossbit.server.core.tokens import OPEN, Principal, TokenTable

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)


def _deny(message: str):
    def handler(request, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
    return handler


def authorization(metadata) -> list[str]:
    """Every value of the ``authorization`` header (a call carrying two is refused)."""
    return [v for k, v in metadata or () if k == "authorization"]


def principal(tokens: TokenTable | None, context) -> Principal:
    """Who made this call (Unauthenticated when the token is missing, repeated or unknown)."""
    if tokens is None or not tokens.enabled:
        return OPEN
    return tokens.authenticate(authorization(context.invocation_metadata()))


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Refuses a call without exactly one known bearer token before its handler runs."""

    def __init__(self, tokens: TokenTable):
        self.tokens = tokens

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        if method.startswith(OPEN_PREFIXES) or not self.tokens.enabled:
            return continuation(handler_call_details)
        try:
            self.tokens.authenticate(authorization(handler_call_details.invocation_metadata))
            return continuation(handler_call_details)
        except Unauthenticated as exc:
            message = str(exc)
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(
                lambda it, ctx: _deny(message)(None, ctx))
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(_deny(message))
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                lambda req, ctx: _deny(message)(req, ctx))
        return grpc.unary_unary_rpc_method_handler(_deny(message))
