"""``crossbit load``: a bounded load generator for a crossbit server on this machine, reporting like ghz.

Requests are bounded in count (-n) and time (-z), and only loopback targets are accepted.
Bodies are realistic: captions for Search and Encode, real photos for AddImages, random
codes for search by code.
"""

from __future__ import annotations

import ipaddress
import json
import random
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc
import numpy as np

from crossbit.v1 import crossbit_pb2 as pb
from crossbit.v1 import crossbit_pb2_grpc as pb_grpc

CAPTIONS = [
    "two dogs playing in the snow", "a child in a red coat climbs a rock",
    "a man rides a bicycle down a dirt path", "a black dog runs along the beach",
    "people walking on a busy city street", "a woman sits on a bench in the park",
    "a boy jumps into a swimming pool", "a brown horse in a green field",
    "a group of people standing in front of a building", "a cat sleeping on a sofa",
    "a surfer riding a large wave", "a girl with a pink umbrella in the rain",
    "a football player kicks the ball", "a cup of coffee on a wooden table",
    "mountains covered with snow under a blue sky", "a skateboarder does a trick on a ramp",
]
RPCS = ("search", "search-code", "search-batch", "encode", "add-images")


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


@dataclass
class Report:
    """What happened, in ghz's terms."""

    rpc: str
    concurrency: int
    count: int = 0
    total_s: float = 0.0
    latencies: list = field(default_factory=list)
    codes: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    items: int = 0  # images or queries carried (for add-images and search-batch)

    def summary(self) -> dict:
        lat = np.array(self.latencies) * 1000 if self.latencies else np.zeros(1)
        pct = {f"p{p}": float(np.percentile(lat, p)) for p in (10, 25, 50, 75, 90, 95, 99)}
        return {"rpc": self.rpc, "concurrency": self.concurrency, "count": self.count,
                "total_s": self.total_s, "rps": self.count / self.total_s if self.total_s else 0.0,
                "items_per_s": self.items / self.total_s if self.total_s else 0.0,
                "latency_ms": {"fastest": float(lat.min()), "slowest": float(lat.max()),
                               "average": float(lat.mean()), **pct},
                "status_codes": dict(self.codes), "errors": dict(self.errors.most_common(5))}


def _bodies(rpc: str, photos: list[bytes], bits: int, batch: int):
    rng = random.Random(0)

    def make():
        if rpc == "search":
            return pb.SearchRequest(text=rng.choice(CAPTIONS), top_k=10)
        if rpc == "search-code":
            return pb.SearchRequest(code=rng.randbytes(bits // 8), top_k=10, rerank=False)
        if rpc == "search-batch":
            return pb.SearchBatchRequest(queries=[
                pb.SearchRequest(code=rng.randbytes(bits // 8), top_k=10, rerank=False)
                for _ in range(batch)])
        if rpc == "encode":
            return pb.EncodeRequest(texts=[rng.choice(CAPTIONS)])
        raise ValueError(rpc)
    return make


def run_load(address: str, rpc: str = "search", concurrency: int = 8, total: int = 1000,
             duration: float = 30.0, token: str | None = None, batch: int = 32,
             stream_images: int = 32, photos: list[bytes] | None = None, bits: int = 64,
             timeout: float = 30.0) -> Report:
    """Send at most ``total`` requests, for at most ``duration`` seconds, from ``concurrency``
    threads (one channel each) and report the outcome.

    Raises:
        ValueError: for a target that is not on this machine's loopback, or an unknown rpc.
    """
    if not is_loopback(address):
        raise ValueError(f"{address} is not a loopback address: load only goes to this machine")
    if rpc not in RPCS:
        raise ValueError(f"unknown rpc {rpc!r}; choose one of {RPCS}")
    if total <= 0 or duration <= 0 or concurrency <= 0:
        raise ValueError("total, duration and concurrency must be positive")
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    if rpc == "add-images" and not photos:
        from crossbit.server.demo import sample_photos

        photos = list(sample_photos().values())
    report = Report(rpc, concurrency)
    lock = threading.Lock()
    sent = [0]
    deadline = time.monotonic() + duration
    make = _bodies(rpc, photos or [], bits, batch) if rpc != "add-images" else None

    def take() -> bool:
        with lock:
            if sent[0] >= total or time.monotonic() >= deadline:
                return False
            sent[0] += 1
            return True

    def worker(n: int) -> None:
        channel = grpc.insecure_channel(address)
        stub = pb_grpc.RetrievalStub(channel)
        counter = 0
        while take():
            counter += 1
            start = time.perf_counter()
            code, items = "OK", 1
            try:
                if rpc == "add-images":
                    items = stream_images
                    stream = (pb.ImageItem(key=f"load-{n}-{counter}-{i}",
                                           image=photos[(counter + i) % len(photos)])
                              for i in range(stream_images))
                    stub.AddImagesStream(stream, timeout=timeout, metadata=metadata)
                elif rpc == "search-batch":
                    items = batch
                    stub.SearchBatch(make(), timeout=timeout, metadata=metadata)
                elif rpc == "encode":
                    stub.Encode(make(), timeout=timeout, metadata=metadata)
                else:
                    stub.Search(make(), timeout=timeout, metadata=metadata)
            except grpc.RpcError as exc:
                code = exc.code().name
                with lock:
                    report.errors[f"{code}: {exc.details()}"] += 1
            elapsed = time.perf_counter() - start
            with lock:
                report.count += 1
                report.latencies.append(elapsed)
                report.codes[code] += 1
                if code == "OK":
                    report.items += items
        channel.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report.total_s = time.perf_counter() - start
    return report


def format_summary(s: dict) -> str:
    lat = s["latency_ms"]
    lines = [f"Summary ({s['rpc']}, concurrency {s['concurrency']}):",
             f"  Count:        {s['count']}", f"  Total:        {s['total_s']:.2f} s",
             f"  Requests/sec: {s['rps']:.1f}"]
    if s["items_per_s"] and s["rpc"] in ("add-images", "search-batch"):
        lines.append(f"  Items/sec:    {s['items_per_s']:.1f}")
    lines += [f"  Fastest: {lat['fastest']:.2f} ms  Slowest: {lat['slowest']:.2f} ms  "
              f"Average: {lat['average']:.2f} ms",
              "Latency distribution:"]
    lines += [f"  {p}% in {lat[f'p{p}']:.2f} ms" for p in (10, 25, 50, 75, 90, 95, 99)]
    lines.append("Status code distribution:")
    lines += [f"  [{code}] {n} responses" for code, n in s["status_codes"].items()]
    if s["errors"]:
        lines.append("Error distribution:")
        lines += [f"  [{n}] {err}" for err, n in s["errors"].items()]
    return "\n".join(lines)


def main_load(args) -> int:
    report = run_load(args.server, args.rpc, args.concurrency, args.total, args.duration,
                      args.token, args.batch, args.stream_images)
    summary = report.summary()
    print(format_summary(summary))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return 0 if set(summary["status_codes"]) <= {"OK"} else 1
