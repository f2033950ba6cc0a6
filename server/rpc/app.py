"""Server startup: ``create_server(config) -> (server, port, core)``, ``serve(config)`` until SIGTERM."""

from __future__ import annotations

import gc
import logging
import signal
import socket
import ssl
import threading
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from crossbit.server.config import ServerConfig
from crossbit.server.core import RetrievalCore
from crossbit.server.core.collections import Registry
from crossbit.server.core.models import ModelPool, model_spec
from crossbit.server.core.service import observer
from crossbit.server.core.tokens import TokenTable
from crossbit.server.metrics import Metrics, MetricsInterceptor
from crossbit.server.rpc.auth import BearerTokenInterceptor
from crossbit.server.rpc.guard import GuardInterceptor
from crossbit.server.rpc.reflection import enable_reflection
from crossbit.server.rpc.servicer import RetrievalServicer
from crossbit.v1 import crossbit_pb2, crossbit_pb2_grpc

log = logging.getLogger(__name__)

STOP_SLACK_S = 3.0  # after the grace period, how long stop() waits for handlers to return
SERVICE = crossbit_pb2.DESCRIPTOR.services_by_name["Retrieval"].full_name


class HealthServicer(health.HealthServicer):
    """grpc's health service, with a message on NOT_FOUND (grpc's own leaves it empty)."""

    def Check(self, request, context):
        response = super().Check(request, context)
        if context.code() == grpc.StatusCode.NOT_FOUND:
            context.set_details(f"unknown service {request.service[:100]!r}: ask for '' (the "
                                f"server) or '{SERVICE}'")
        return response


def load_model(config: ServerConfig):
    """The model named by the config (the shipped default when none), ready to encode: a
    light model (no torch imported) or a full one on its ONNX runtimes (``encoders/serving.py``)."""
    from crossbit.encoders.serving import load_serving_model

    return load_serving_model(config.model, config.device, config.runtime, config.text_runtime,
                              config.text_threads)


def _load_warm(config: ServerConfig, spec: str):
    """Another model a collection names, loaded with the server's runtimes and warmed up."""
    import dataclasses

    model = load_model(dataclasses.replace(config, model=None if spec == "default" else spec))
    warm_up(model)
    return model


def milvus_catalog(config: ServerConfig):
    """Where collection records live when servers share a Milvus (None without a server URI)."""
    if config.index != "milvus" or not config.milvus_uri:
        return None
    from crossbit.indexer.milvus_catalog import MilvusCatalog

    return MilvusCatalog(config.milvus_uri, config.milvus_token, config.milvus_database)


def item_count(index):
    """The index's size, read when metrics are scraped (NaN while its backend is unreachable)."""
    def count() -> float:
        try:
            return float(len(index))
        except Exception:  # a scrape must not fail because Milvus is down
            return float("nan")
    return count


def warm_up(model) -> None:
    """One text and one image through the encoders, so the first caller does not pay for it."""
    from PIL import Image

    model.encode_texts(["warm up"])
    model.encode_images([Image.new("RGB", (32, 32))])


class Running:
    """A started server with what it needs to stop cleanly."""

    def __init__(self, server, port, core, health_servicer, metrics, extras, guard):
        self.server, self.port, self.core = server, port, core
        self.health, self.metrics, self.extras = health_servicer, metrics, extras
        self.guard = guard
        self._stopped = threading.Event()

    def stop(self, grace: float | None = 5.0) -> None:
        """Refuse new calls, let calls in flight finish within ``grace``, snapshot, close.

        Returns within ``grace`` plus a few seconds whatever the open calls do: client
        streams still open when the grace ends are cancelled, and a handler that still
        does not return is left behind (logged) so the final snapshot is always taken.
        """
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        done = self.server.stop(grace)
        if not done.wait((grace or 0) + 0.5):
            cancelled = self.guard.cancel_streams()
            if not done.wait(STOP_SLACK_S):
                log.warning("calls still running %.0fs after the grace period (%d streams "
                            "cancelled); closing without them", STOP_SLACK_S, cancelled)
        self.guard.close()
        for extra in self.extras:
            try:
                extra()
            except Exception:
                log.exception("stopping a helper failed")
        self.core.close()
        log.info("server on port %d stopped", self.port)


def create_server(config: ServerConfig, model=None) -> Running:
    """Build and start a server (binding ``config.port``; 0 picks a free port).

    Args:
        config: the settings.
        model: an already loaded model (tests share one); loaded from the config otherwise.
    """
    check_port_free(config.host, config.port)
    if config.web_port:
        check_port_free(config.host, config.web_port, "--web-port")
    if config.tls_cert:
        check_tls_pair(config.tls_cert, config.tls_key)
    model = model if model is not None else load_model(config)
    warm_up(model)
    metrics = Metrics()
    tokens = TokenTable(config.auth_token, config.tokens_file)
    models = ModelPool(config, lambda spec: _load_warm(config, spec), observer(metrics),
                       preloaded={model_spec(config.model): model})
    registry = Registry(config, models, milvus_catalog(config))
    registry.open_all()
    core = RetrievalCore(registry, config, metrics)
    metrics.decoded_pixels.set_function(lambda: core.checks.pool.used)
    for modality, index in core.indexes.items():
        metrics.index_items.labels(modality).set_function(item_count(index))
    for collection in registry.all():  # the search kernels compile (or load) now, not on a call
        for index in collection.indexes.values():
            if index.kind != "milvus":
                index.search(np.zeros((1, collection.bits // 8), np.uint8), 1)
    guard = GuardInterceptor(config.stream_slots, config.stream_idle_s)
    interceptors = [guard, MetricsInterceptor(metrics)]
    if tokens.enabled:
        interceptors.insert(1, BearerTokenInterceptor(tokens))
    options = [("grpc.max_receive_message_length", config.max_message_bytes),
               ("grpc.max_send_message_length", config.max_message_bytes),
               ("grpc.so_reuseport", 0)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=config.workers,
                                                    thread_name_prefix="crossbit-rpc"),
                         interceptors=interceptors, options=options,
                         maximum_concurrent_rpcs=config.workers * 8)
    crossbit_pb2_grpc.add_RetrievalServicer_to_server(RetrievalServicer(core, tokens), server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection([SERVICE, health.SERVICE_NAME, "grpc.reflection.v1alpha.ServerReflection"],
                      server)
    address = f"{config.host}:{config.port}"
    if config.tls_cert:
        credentials = grpc.ssl_server_credentials(
            [(Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())])
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        guard.close()
        core.close()
        raise OSError(f"could not listen on {address} (in use, or not an address of this "
                      "machine): pick another --port or --host")
    server.start()
    for name in ("", SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    extras = []
    if config.metrics_port is not None:  # on loopback unless --metrics-host says otherwise
        http_server, _ = metrics.serve(config.metrics_port, config.metrics_host)
        extras.append(http_server.shutdown)
        if not _loopback(config.metrics_host):
            log.warning("metrics on %s:%d answer anyone who reaches them (no token there)",
                        config.metrics_host, config.metrics_port)
    if config.web_port is not None:
        from crossbit.server.web import start_web

        stop_web, web_port = start_web(core, config, tokens)
        extras.append(stop_web)
    log.info("crossbit listening on %s:%d (%s, %d bits, index %s)", config.host, port,
             "TLS" if config.tls_cert else "plaintext", model.bits, core.stats()["index_kind"])
    log.info("collections: %s", ", ".join(c.name for c in registry.all()))
    running = Running(server, port, core, health_servicer, metrics, extras, guard)
    running.tokens = tokens
    running.web_port = web_port if config.web_port is not None else None
    return running


def _loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def check_port_free(host: str, port: int, flag: str = "--port") -> None:
    """Fail in one line, before the model loads, when a port is taken."""
    if not port:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (another "
                          f"server there? stop it or pick another {flag})") from None


def check_tls_pair(cert: str, key: str) -> None:
    """One clear line when the TLS files are missing, unreadable or do not belong together."""
    for what, path in (("certificate", cert), ("key", key)):
        if not Path(path).is_file():
            raise ValueError(f"TLS {what} {path} is not a readable file")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise ValueError(f"TLS key {key} does not match certificate {cert}, or one of them is "
                         f"not PEM ({exc.reason or exc})") from None


def settle_garbage_collector(young: int = 20_000) -> None:
    """Keep Python's cyclic collector off the request path of a long-running server.

    Everything alive after start-up (the model, the index, imported modules: about 235,000
    objects) moves to the permanent generation, so later full collections skip it, and the
    youngest generation is collected after ``young`` allocations instead of 700. Measured
    with 1M codes at concurrency 64: p99 249 -> 180 ms at the same throughput within noise
    (BENCHMARKS.md).
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(young, older, oldest)


def serve(config: ServerConfig, ready=None) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    running = create_server(config)
    settle_garbage_collector()
    scheme = "grpcs" if config.tls_cert else "grpc"
    print(f"crossbit serving {scheme}://{config.host}:{running.port}"
          + (f"  web http://{config.host}:{running.web_port}" if running.web_port else "")
          + (f"  metrics http://{config.metrics_host}:{config.metrics_port}/metrics"
             if config.metrics_port is not None else ""), flush=True)
    done = threading.Event()

    def on_signal(signum, frame):
        log.info("signal %d: shutting down (grace %.0fs)", signum, config.grace_s)
        done.set()

    def on_hangup(signum, frame):  # re-read the token file; a bad one keeps the old tokens
        log.warning("SIGHUP: %s", running.tokens.reload())

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    if ready is not None:
        ready(running)
    # wake every 0.2 s: a signal the kernel hands to one of gRPC's threads sets Python's flag
    # but cannot interrupt the main thread's lock wait, so an untimed wait() can miss it
    while not done.wait(0.2):
        pass
    running.stop(config.grace_s)
