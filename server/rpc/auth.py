"""Bearer-token auth: a server interceptor refusing every RPC but health without the token."""

from __future__ import annotations

import hmac

import grpc

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)


def _deny(message: str):
    def handler(request, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
    return handler


def token_ok(header: str | list[str] | None, token: str) -> bool:
    """True when exactly one ``authorization`` header holds ``Bearer <token>`` (constant-time
    compare). Given every value of the header: a call carrying it twice is refused, whatever
    the order (a proxy and the client, or two parsers, could each read a different one)."""
    if isinstance(header, list):
        if len(header) != 1:
            return False
        header = header[0]
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer "):].encode(), token.encode())


class BearerTokenInterceptor(grpc.ServerInterceptor):
    def __init__(self, token: str):
        if not token:
            raise ValueError("an empty auth token would let everyone in")
        self.token = token

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        if method.startswith(OPEN_PREFIXES):
            return continuation(handler_call_details)
        headers = [v for k, v in handler_call_details.invocation_metadata or ()
                   if k == "authorization"]
        if token_ok(headers, self.token):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        message = "missing or wrong bearer token (send 'authorization: Bearer <token>')" \
            if len(headers) < 2 else \
            f"{len(headers)} authorization headers: send exactly one, 'Bearer <token>'"
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
