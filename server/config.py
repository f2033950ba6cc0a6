"""Server configuration: defaults, then an optional JSON/TOML file, then CROSSBIT_* variables, then flags."""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from crossbit.encoders.config import IMAGE_RUNTIMES, TEXT_RUNTIMES
from crossbit.indexer import KINDS as INDEX_KINDS
from crossbit.indexer.milvus import CONSISTENCY as MILVUS_CONSISTENCY
from crossbit.indexer.milvus import INDEX_TYPES as MILVUS_INDEX_TYPES

MB = 1 << 20
LOG_FORMATS = ("auto", "json", "text")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass
class ServerConfig:
    """Every setting of ``crossbit serve`` (flag ``--max-batch`` <-> env ``CROSSBIT_MAX_BATCH``)."""

    host: str = "127.0.0.1"  # address to bind ("0.0.0.0" for all interfaces)
    port: int = 50051  # gRPC port; 0 picks a free one
    data: str = "data"  # directory for the stores and snapshots
    model: str | None = None  # model directory or shipped name (default, mpnet-64); None = default
    index: str = "auto"  # index kind: auto, flat, ivf, hnsw, gpu, milvus
    nprobe: int = 16  # default IVF lists visited per query
    embeddings_in_memory: bool = True  # re-rank from RAM (128 MB per 1M 64-d items); off: SQLite
    milvus_uri: str | None = None  # milvus kind: a server URI or a local milvus-lite file
    milvus_token: str | None = None  # milvus kind: credentials (user:password or an API key)
    milvus_database: str | None = None  # milvus kind: database (None = Milvus's default)
    milvus_index_type: str = "BIN_FLAT"  # milvus kind: BIN_FLAT (exact) or BIN_IVF_FLAT
    milvus_nlist: int = 1024  # milvus kind: BIN_IVF_FLAT lists, when the collection is created
    milvus_consistency: str = "Session"  # milvus kind: search consistency (Session: own writes seen)
    device: str | None = None  # torch device for the encoders; None = CUDA if visible, else CPU
    runtime: str = "auto"  # image backbone runtime: auto (ONNX on CPU), onnx, torch
    text_runtime: str = "auto"  # text encoder: auto (ONNX: int8 MiniLM, fp32 others), onnx, int8, torch
    workers: int = 32  # gRPC worker threads (concurrent calls served)
    max_streams: int = 0  # client streams open at once (each holds a worker); 0 = workers // 4
    stream_idle_s: float = 30.0  # a client stream that sends nothing for this long is cancelled
    faiss_threads: int = 1  # OpenMP threads per FAISS call (1: 2-thread OpenMP collapsed under load)
    text_threads: int = 1  # ONNX Runtime threads for the text encoder (1 is the most per core)
    text_workers: int = 2  # text batches encoded side by side (2 beat 1 by 1.15-1.46x on 2 cores)
    max_batch: int = 16  # micro-batching: most items per encode call (16 beat 32 and 64)
    max_wait_ms: float = 3.0  # micro-batching: longest wait for a batch to fill
    default_top_k: int = 10  # top_k when a request leaves it 0
    max_top_k: int = 1000  # largest top_k accepted
    rerank: bool = True  # re-rank the Hamming shortlist by float embeddings by default
    rerank_shortlist: int = 100  # shortlist size for re-ranking
    max_message_bytes: int = 64 * MB  # largest gRPC message received
    max_image_bytes: int = 20 * MB  # largest encoded image accepted
    max_pixels: int = 40_000_000  # largest decoded image (width * height); bombs refused before decoding
    max_request_pixels: int = 120_000_000  # most decoded pixels one request may cause (all its images)
    max_inflight_pixels: int = 160_000_000  # decoded pixels of all calls in flight at once
    max_response_bytes: int = 32 * MB  # most bytes of hits' keys and metadata in one answer
    max_text_chars: int = 2000  # longest text accepted
    max_batch_items: int = 1024  # most items or queries in one request
    thumbnails: bool = True  # keep a small JPEG thumbnail per image in the store
    thumbnail_size: int = 160  # longest side of thumbnails, pixels
    preview_size: int = 640  # longest side of the larger view kept per image (JPEG); 0 keeps none
    snapshot_interval: float = 30.0  # seconds between background index snapshots
    tls_cert: str | None = None  # PEM certificate file: enables TLS with tls_key
    tls_key: str | None = None  # PEM private key file
    auth_token: str | None = None  # bearer token for every RPC but health (admin on every collection)
    tokens_file: str | None = None  # TOML/JSON tokens with roles per collection; re-read on SIGHUP
    metrics_port: int | None = None  # Prometheus metrics over HTTP on this port
    metrics_host: str = "127.0.0.1"  # address of the metrics port (it takes no token: loopback)
    web_port: int | None = None  # the web page and JSON API on this port
    web_hosts: str | None = None  # extra Host names the web API answers to (comma-separated; * = any)
    web_body_timeout_s: float = 30.0  # a web request's body must arrive within this (else 408)
    grace_s: float = 10.0  # SIGTERM: time given to calls in flight
    log_format: str = "auto"  # auto (text on a terminal, JSON otherwise), json or text
    log_level: str = "INFO"  # least severe log lines written

    def __post_init__(self) -> None:
        for name, allowed in choices().items():
            value = getattr(self, name)
            if name == "log_level" and isinstance(value, str):
                value = self.log_level = value.upper()
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.auth_token is not None and not self.auth_token.strip():
            raise ValueError("auth_token is empty (an unset variable?): an empty token would let "
                             "everyone in; give a token, or leave the setting out for no auth")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("TLS needs both tls_cert and tls_key")
        if self.runtime not in IMAGE_RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(IMAGE_RUNTIMES)}, got {self.runtime!r}")
        if self.text_runtime not in TEXT_RUNTIMES:
            raise ValueError(f"text_runtime must be one of {', '.join(TEXT_RUNTIMES)}, "
                             f"got {self.text_runtime!r}")
        for name in ("max_batch", "max_top_k", "max_batch_items", "workers", "default_top_k",
                     "text_threads", "text_workers", "max_request_pixels", "max_response_bytes",
                     "stream_idle_s", "max_inflight_pixels", "web_body_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.max_inflight_pixels < self.max_pixels:
            raise ValueError(f"max_inflight_pixels ({self.max_inflight_pixels}) must be at least "
                             f"max_pixels ({self.max_pixels}), or the largest image could never "
                             "be decoded")
        if self.max_streams < 0:
            raise ValueError("max_streams must be >= 0 (0 = workers // 4)")
        for name in ("port", "web_port", "metrics_port"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 65535:
                raise ValueError(f"{name} must be between 0 and 65535, got {value}")

    @property
    def stream_slots(self) -> int:
        """Client streams served at once (the rest are refused with RESOURCE_EXHAUSTED)."""
        return self.max_streams or max(1, self.workers // 4)

    def public(self) -> dict:
        """The settings without secrets, for logs and stats."""
        data = dataclasses.asdict(self)
        for secret in ("auth_token", "milvus_token"):
            if data[secret]:
                data[secret] = "***"
        return data


def choices() -> dict[str, tuple[str, ...]]:
    """The settings that take one of a few names, with those names."""
    return {"index": INDEX_KINDS, "runtime": IMAGE_RUNTIMES, "text_runtime": TEXT_RUNTIMES,
            "log_format": LOG_FORMATS, "log_level": LOG_LEVELS,
            "milvus_index_type": MILVUS_INDEX_TYPES, "milvus_consistency": MILVUS_CONSISTENCY}


def field_help() -> dict[str, str]:
    """Each setting's one-line comment in the class above (the ``--help`` of its flag)."""
    import inspect
    import re

    out = {}
    for line in inspect.getsource(ServerConfig).splitlines():
        match = re.match(r"\s+(\w+): [^=]+= .*?  # (.+)$", line)
        if match:
            out[match.group(1)] = match.group(2).strip()
    return out


def _coerce(type_text: str, value: str):
    base = str(type_text).replace(" | None", "")
    if base == "bool":
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"not a boolean: {value!r}")
    if base == "int":
        return int(value)
    if base == "float":
        return float(value)
    return value


def load_config(file: str | os.PathLike | None = None, env: dict | None = None,
                overrides: dict | None = None) -> ServerConfig:
    """Build a config: defaults < file (JSON or TOML) < CROSSBIT_* environment < overrides.

    Raises:
        ValueError: for unknown keys or values of the wrong type, naming the source.
    """
    known = {f.name: f for f in fields(ServerConfig)}
    values: dict = {}
    if file:
        path = Path(file)
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"{path}: unknown settings {unknown}")
        values.update(data)
    env = os.environ if env is None else env
    for name, f in known.items():
        raw = env.get(f"CROSSBIT_{name.upper()}")
        if raw is not None and raw == "" and name == "auth_token":
            raise ValueError("CROSSBIT_AUTH_TOKEN is set but empty (an unset variable?): an empty "
                             "token would let everyone in; unset it for no auth")
        if raw is not None and raw != "":
            try:
                values[name] = _coerce(f.type, raw)
            except ValueError as exc:
                raise ValueError(f"CROSSBIT_{name.upper()}: {exc}") from None
    for name, value in (overrides or {}).items():
        if name not in known:
            raise ValueError(f"unknown setting {name!r}")
        if value is not None:
            values[name] = value
    return ServerConfig(**values)
