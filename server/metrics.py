"""Prometheus metrics: calls and latencies per method, batch sizes, index sizes."""

from __future__ import annotations

import time

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class Metrics:
    """One registry per server (so tests can run several servers in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter("crossbit_calls_total", "RPCs by method and status code",
                             ["method", "code"], registry=self.registry)
        self.latency = Histogram("crossbit_call_seconds", "RPC latency by method", ["method"],
                                 registry=self.registry,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5))
        self.batch_size = Histogram("crossbit_batch_size", "items per encoder forward pass",
                                    ["encoder"], registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.index_items = Gauge("crossbit_index_items", "items in the index by modality",
                                 ["modality"], registry=self.registry)
        self.decoded_pixels = Gauge("crossbit_decoded_pixels", "pixels of decoded images held by "
                                    "calls in flight (at most --max-inflight-pixels)",
                                    registry=self.registry)

    def serve(self, port: int, host: str = "127.0.0.1"):
        """Expose /metrics over HTTP; returns the (server, thread) pair."""
        return start_http_server(port, addr=host, registry=self.registry)


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts every unary/stream-unary call with its final status and latency."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.response_streaming:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        metrics = self.metrics

        def wrap(inner):
            def call(request, context):
                start = time.perf_counter()
                code = "OK"
                try:
                    return inner(request, context)
                except Exception:
                    status = context.code() if hasattr(context, "code") else None
                    code = status.name if status is not None else "UNKNOWN"
                    raise
                finally:
                    metrics.calls.labels(method, code).inc()
                    metrics.latency.labels(method).observe(time.perf_counter() - start)
            return call

        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(
                wrap(handler.stream_unary), handler.request_deserializer,
                handler.response_serializer)
        return grpc.unary_unary_rpc_method_handler(
            wrap(handler.unary_unary), handler.request_deserializer, handler.response_serializer)
