"""Guards on every RPC: undecodable messages are INVALID_ARGUMENT, client streams are capped and
ended when the client stays silent, and floods of bad calls log a line a second, not a traceback
each."""

from __future__ import annotations

import logging
import queue
import threading
import time

import grpc

log = logging.getLogger(__name__)

# methods whose servicer takes an undecodable stream message as one refused item (the other
# messages of the stream proceed); elsewhere such a message ends the call
PER_ITEM_STREAMS = frozenset({"/crossbit.v1.Retrieval/AddImagesStream"})


class Malformed:
    """Stands in for a request message that did not parse, so the handler can refuse it."""

    __slots__ = ("error", "size")

    def __init__(self, error: str, size: int):
        self.error, self.size = error, size

    def __str__(self) -> str:
        return f"the message ({self.size} bytes) is not a valid protobuf of this method ({self.error})"


def _safe(deserialize):
    """A deserializer that never raises (grpc would answer INTERNAL and log a traceback)."""
    if deserialize is None:
        return None

    def parse(data: bytes):
        try:
            return deserialize(data)
        except Exception as exc:
            return Malformed(f"{type(exc).__name__}: {exc}"[:200], len(data))
    return parse


class RateLimitedLog:
    """At most one log line per ``interval`` seconds per kind; the lines in between are counted."""

    def __init__(self, interval: float = 1.0):
        self.interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._dropped: dict[str, int] = {}

    def warning(self, kind: str, message: str, *args) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(kind, -1e9) < self.interval:
                self._dropped[kind] = self._dropped.get(kind, 0) + 1
                return
            dropped = self._dropped.pop(kind, 0)
            self._last[kind] = now
        log.warning(message + (f" (and {dropped} more like it)" if dropped else ""), *args)


class _Stream:
    """One open client stream: when it last sent a message, whether it was timed out or cut
    off at shutdown, and whether its handler has finished."""

    __slots__ = ("context", "method", "last", "timed_out", "done")

    def __init__(self, context, method: str):
        self.context, self.method = context, method
        self.last = time.monotonic()
        self.timed_out = False
        self.done = False


class StreamIdle(TimeoutError):
    """A client stream sent nothing for longer than the idle limit (DEADLINE_EXCEEDED)."""


class GuardInterceptor(grpc.ServerInterceptor):
    """Wraps every method handler (crossbit's, health, reflection).

    - Request messages that do not parse reach the handler as :class:`Malformed`; unary
      calls and most streams answer INVALID_ARGUMENT, the methods in
      :data:`PER_ITEM_STREAMS` refuse that one item.
    - At most ``max_streams`` client streams are served at once (each holds a worker thread
      while open); more are refused with RESOURCE_EXHAUSTED, so idle streams cannot take
      every worker from searches and health checks.
    - A stream whose handler waits more than ``idle_s`` seconds for the client's next
      message ends with DEADLINE_EXCEEDED (:class:`StreamIdle` reaches the handler, which
      can still say what it committed). Only that waiting counts: the time the handler
      spends on what it was sent (encoding, writing) is the server's, not the client's
      silence. A reader thread per stream takes the messages off the wire into a short
      queue, so the handler can stop waiting without cancelling the call.
    """

    def __init__(self, max_streams: int, idle_s: float):
        self.max_streams, self.idle_s = max_streams, idle_s
        self.log = RateLimitedLog()
        self._lock = threading.Lock()
        self._open: set[_Stream] = set()

    def close(self) -> None:
        """Nothing runs in the background any more (the readers end with their streams)."""

    def cancel_streams(self) -> int:
        """Cancel every open client stream (shutdown); returns how many there were."""
        with self._lock:
            streams = list(self._open)
        for stream in streams:
            stream.timed_out = True
            stream.context.cancel()
        return len(streams)

    @property
    def open_streams(self) -> int:
        with self._lock:
            return len(self._open)

    # -- wrapping ------------------------------------------------------------------------------
    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        parse = _safe(handler.request_deserializer)
        out = handler.response_serializer
        if handler.request_streaming:
            inner = handler.stream_unary or handler.stream_stream
            behavior = self._streaming(inner, method, handler.response_streaming)
            if handler.response_streaming:
                return grpc.stream_stream_rpc_method_handler(behavior, parse, out)
            return grpc.stream_unary_rpc_method_handler(behavior, parse, out)
        inner = handler.unary_unary or handler.unary_stream
        behavior = self._unary(inner, method, handler.response_streaming)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(behavior, parse, out)
        return grpc.unary_unary_rpc_method_handler(behavior, parse, out)

    def _refuse(self, context, method: str, bad: Malformed) -> None:
        self.log.warning("malformed", "%s: INVALID_ARGUMENT: %s", method, bad)
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(bad))

    def _unary(self, inner, method: str, streams_out: bool):
        if streams_out:
            def behavior(request, context):
                if isinstance(request, Malformed):
                    self._refuse(context, method, request)
                yield from inner(request, context)
            return behavior

        def behavior(request, context):
            if isinstance(request, Malformed):
                self._refuse(context, method, request)
            return inner(request, context)
        return behavior

    def _open_stream(self, context, method: str) -> _Stream:
        stream = _Stream(context, method)
        with self._lock:
            full = len(self._open) >= self.max_streams
            if not full:
                self._open.add(stream)
        if full:
            self.log.warning("streams", "%s: RESOURCE_EXHAUSTED: %d client streams open",
                             method, self.max_streams)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"{self.max_streams} client streams are open, the most this server "
                          "serves at once; retry later, or send the items with a unary call")
        return stream

    def _close_stream(self, stream: _Stream) -> None:
        stream.done = True
        with self._lock:
            self._open.discard(stream)

    def _messages(self, requests, context, stream: _Stream, method: str):
        """The stream's messages as the handler asks for them, read off the wire by a thread of
        their own; StreamIdle when the handler has waited ``idle_s`` for the next one."""
        per_item = method in PER_ITEM_STREAMS
        inbox: queue.Queue = queue.Queue(maxsize=4)  # read ahead a little, no more

        def reader() -> None:
            try:
                for message in requests:
                    if not _put(inbox, ("message", message), stream):
                        return
                _put(inbox, ("end", None), stream)
            except Exception as exc:  # the call was cancelled, or ended by the handler
                _put(inbox, ("error", exc), stream)

        threading.Thread(target=reader, daemon=True, name="crossbit-stream-reader").start()
        while True:
            try:
                what, value = inbox.get(timeout=self.idle_s)
            except queue.Empty:
                stream.timed_out = True
                self.log.warning("idle", "%s: client stream silent for over %.1fs; ended",
                                 stream.method, self.idle_s)
                raise StreamIdle(f"the stream sent nothing for {self.idle_s:g}s") from None
            if what == "end":
                break
            if what == "error":
                if stream.timed_out:  # cut off at shutdown
                    raise StreamIdle("the stream was cut off by the server's shutdown")
                raise value
            stream.last = time.monotonic()
            if isinstance(value, Malformed) and not per_item:
                self._refuse(context, method, value)
            yield value
        if stream.timed_out:  # cancelled: what arrived was cut short, not a whole stream
            raise StreamIdle("the stream was cut off by the server's shutdown")

    def _streaming(self, inner, method: str, streams_out: bool):
        def ended(context, exc: StreamIdle) -> None:  # a handler that did not answer it itself
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc))

        if streams_out:
            def behavior(requests, context):
                stream = self._open_stream(context, method)
                try:
                    yield from inner(self._messages(requests, context, stream, method), context)
                except StreamIdle as exc:
                    ended(context, exc)
                finally:
                    self._close_stream(stream)
            return behavior

        def behavior(requests, context):
            stream = self._open_stream(context, method)
            try:
                return inner(self._messages(requests, context, stream, method), context)
            except StreamIdle as exc:
                ended(context, exc)
            finally:
                self._close_stream(stream)
        return behavior


def _put(inbox: queue.Queue, entry: tuple, stream: _Stream) -> bool:
    """Hand one entry to the handler, waiting while it is busy; False once it has finished."""
    while not stream.done:
        try:
            inbox.put(entry, timeout=0.5)
            return True
        except queue.Full:
            continue
    return False
