"""``crossbit load``: a bounded load generator for a crossbit server on this machine, reporting like ghz.

Requests are bounded in count (-n) and time (-z), and only loopback targets are accepted.
Bodies are realistic: captions for Search and Encode (built in, or ``--captions FILE``),
real photos for AddImages, random codes for search by code.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import random
import socket
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


def read_captions(path: str) -> list[str]:
    """Query texts from a file: a captions CSV (its ``caption`` column) or one text per line."""
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        head = f.readline()
        f.seek(0)
        if "caption" in [c.strip() for c in head.split(",")]:
            texts = [row["caption"].strip() for row in csv.DictReader(f)]
        else:
            texts = [line.strip() for line in f]
    texts = [t for t in texts if t]
    if not texts:
        raise ValueError(f"{path}: no query texts in it")
    return texts


def _bodies(rpc: str, bits: int, batch: int, captions: list[str]):
    rng = random.Random(0)

    def make():
        if rpc == "search":
            return pb.SearchRequest(text=rng.choice(captions), top_k=10)
        if rpc == "search-code":
            return pb.SearchRequest(code=rng.randbytes(bits // 8), top_k=10, rerank=False)
        if rpc == "search-batch":
            return pb.SearchBatchRequest(queries=[
                pb.SearchRequest(code=rng.randbytes(bits // 8), top_k=10, rerank=False)
                for _ in range(batch)])
        if rpc == "encode":
            return pb.EncodeRequest(texts=[rng.choice(captions)])
        raise ValueError(rpc)
    return make


def run_load(address: str, rpc: str = "search", concurrency: int = 8, total: int = 1000,
             duration: float = 30.0, token: str | None = None, batch: int = 32,
             stream_images: int = 32, photos: list[bytes] | None = None, bits: int = 64,
             timeout: float = 30.0, rps: float = 0.0, connections: int = 1,
             captions: list[str] | None = None) -> Report:
    """Send at most ``total`` requests, for at most ``duration`` seconds, from ``concurrency``
    workers and report the outcome.

    Like ghz: the workers share ``connections`` HTTP/2 connections (one by default) and,
    with ``rps`` > 0, requests start on a fixed schedule of ``rps`` per second (the workers
    bound how many are in flight); otherwise each worker sends its next request as soon as
    the last one is answered. Runs on one asyncio loop (grpc.aio), so the generator costs
    little CPU beside the server it measures.

    Raises:
        ValueError: for a target that is not on this machine's loopback, or an unknown rpc.
    """
    if not is_loopback(address):
        raise ValueError(f"{address} is not a loopback address: load only goes to this machine")
    if rpc not in RPCS:
        raise ValueError(f"unknown rpc {rpc!r}; choose one of {RPCS}")
    if total <= 0 or duration <= 0 or concurrency <= 0 or connections <= 0 or rps < 0:
        raise ValueError("total, duration, concurrency and connections must be positive")
    if rpc == "add-images" and not photos:
        from crossbit.server.demo.sample_photos import sample_photos

        photos = list(sample_photos().values())
    make = _bodies(rpc, bits, batch, captions or CAPTIONS) if rpc != "add-images" else None
    return asyncio.run(_run(address, rpc, concurrency, total, duration, token, batch,
                            stream_images, photos or [], timeout, rps, connections, make))


async def _run(address, rpc, concurrency, total, duration, token, batch, stream_images, photos,
               timeout, rps, connections, make) -> Report:
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    report = Report(rpc, concurrency)
    channels = [grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(connections)]
    stubs = [pb_grpc.RetrievalStub(c) for c in channels]
    sent = 0
    start = time.perf_counter()
    deadline = start + duration

    async def worker(n: int) -> None:
        nonlocal sent
        stub = stubs[n % len(stubs)]
        counter = 0
        while sent < total and time.perf_counter() < deadline:
            slot = sent
            sent += 1
            if rps:
                wait = start + slot / rps - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                if time.perf_counter() >= deadline:
                    sent -= 1
                    return
            counter += 1
            begin = time.perf_counter()
            code, items = "OK", 1
            try:
                if rpc == "add-images":
                    items = stream_images
                    stream = [pb.ImageItem(key=f"load-{n}-{counter}-{i}",
                                           image=photos[(counter + i) % len(photos)])
                              for i in range(stream_images)]
                    await stub.AddImagesStream(iter(stream), timeout=timeout, metadata=metadata)
                elif rpc == "search-batch":
                    items = batch
                    await stub.SearchBatch(make(), timeout=timeout, metadata=metadata)
                elif rpc == "encode":
                    await stub.Encode(make(), timeout=timeout, metadata=metadata)
                else:
                    await stub.Search(make(), timeout=timeout, metadata=metadata)
            except grpc.RpcError as exc:
                code = exc.code().name
                report.errors[f"{code}: {exc.details()}"] += 1
            report.count += 1
            report.latencies.append(time.perf_counter() - begin)
            report.codes[code] += 1
            if code == "OK":
                report.items += items

    try:
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
    finally:
        report.total_s = time.perf_counter() - start
        for channel in channels:
            await channel.close()
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
    captions = read_captions(args.captions) if args.captions else None
    report = run_load(args.server, args.rpc, args.concurrency, args.total, args.duration,
                      args.token, args.batch, args.stream_images, rps=args.rps,
                      connections=args.connections, captions=captions)
    summary = report.summary()
    print(format_summary(summary))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return 0 if set(summary["status_codes"]) <= {"OK"} else 1
