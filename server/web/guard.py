"""The web API's ASGI guards: a strict Host check, security headers on every answer, body limits."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import time

from starlette.responses import JSONResponse

from crossbit.server.config import ServerConfig
from crossbit.server.core.exceptions import LimitError

SECURITY_HEADERS = [(b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer")]
# the page brings its own policy; every other answer (JSON, images, errors) runs nothing
API_POLICY = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_PORT = re.compile(r":[0-9]{1,5}")


def host_name(header: str) -> str | None:
    """The host of a Host header a browser could send: a DNS name, an IPv4 address or an
    IPv6 address in brackets, then an optional ``:port``; None for anything else
    (``localhost:1@attacker.example``, ``localhost:evil``, ``a b``, ``[::1``, ``999.0.0.1``).

    Args:
        header: the Host header's value.

    Returns:
        The host, lower case and without brackets, or None.
    """
    header = header.lower()
    if header.startswith("["):
        end = header.find("]")
        if end < 0:
            return None
        host, rest = header[1:end], header[end + 1:]
        if "%" in host:  # no zone ids: a browser never sends one
            return None
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
    else:
        host, colon, port = header.partition(":")
        rest = colon + port
        if len(host) > 253 or not _NAME.fullmatch(host):
            return None
        if re.fullmatch(r"[0-9.]+", host):  # all digits and dots: it must be an IPv4 address
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                return None
    if rest and not (_PORT.fullmatch(rest) and int(rest[1:]) <= 65535):
        return None
    return host


def allowed_hosts(config: ServerConfig) -> set[str]:
    """Host names the API answers to: the bound address, loopback names, and --web-hosts.

    Checking Host stops DNS rebinding (a page on another site whose name resolves here).
    """
    hosts = {"localhost", "127.0.0.1", "::1", config.host.lower().strip("[]")}
    if config.host in ("0.0.0.0", "::", ""):
        hosts |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    hosts |= {h.strip().lower() for h in (config.web_hosts or "").split(",") if h.strip()}
    return hosts


def _error(status: int, code: str, message: str, **headers) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                        headers=headers or None)


class SecurityHeaders:
    """ASGI middleware: refuse Host headers that are not well formed or not ours (421), and
    add the security headers to every answer, that one included."""

    def __init__(self, app, hosts: set[str]):
        self.app, self.hosts = app, hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                message["headers"] = headers + [h for h in (*SECURITY_HEADERS, API_POLICY)
                                                if h[0] not in names]
            await send(message)

        values = [v for k, v in scope.get("headers") or [] if k == b"host"]
        host = values[0].decode("latin-1") if len(values) == 1 else ""
        name = host_name(host)
        if name is None or ("*" not in self.hosts and name not in self.hosts):
            why = "unknown Host" if name is not None else "a malformed Host header"
            response = _error(421, "INVALID_ARGUMENT", f"{why} {host[:100]!r}: add the name "
                              "with --web-hosts to serve it")
            return await response(scope, receive, with_headers)
        await self.app(scope, receive, with_headers)


class BodyTooLarge(LimitError):
    """A request body over the limit (HTTP 413), found while it streams in."""


class BodyTimeout(TimeoutError):
    """A request body that did not arrive within the time limit (HTTP 408)."""


def body_timeout_response(exc: BodyTimeout) -> JSONResponse:
    """408, and the connection closed: the rest of the body is not waited for."""
    return _error(408, "DEADLINE_EXCEEDED", str(exc), connection="close")


class BodyLimit:
    """ASGI middleware: no request body is read past ``limit`` bytes (413 as soon as it
    passes) or for longer than ``timeout`` seconds from the request's start (408)."""

    def __init__(self, app, limit: int, timeout: float):
        self.app, self.limit, self.timeout = app, limit, timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            return await _error(413, "RESOURCE_EXHAUSTED", f"the request body is "
                                f"{int(declared)} bytes; the limit is {self.limit}")(
                scope, receive, send)
        seen, whole, deadline = 0, False, time.monotonic() + self.timeout

        async def counted():
            nonlocal seen, whole
            if whole:  # the body is in: what follows is the disconnect, however late
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise BodyTimeout(f"the request body did not arrive within {self.timeout:g} s "
                                  f"({seen} bytes came)") from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                whole = not message.get("more_body", False)
                if seen > self.limit:
                    raise BodyTooLarge(f"the request body is over {self.limit} bytes, the limit")
            return message

        await self.app(scope, counted, send)
