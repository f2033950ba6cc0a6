"""What Python gRPC itself costs a search answer, with no search behind it.

A sync grpc server (as `crossbit serve` runs it: thread pool, loopback) whose Search and
SearchBatch return a prebuilt answer of 10 hits per query (ids, keys and a small metadata
map, like the service's), called by the bundled client, which turns each hit into a `Hit`.
The figures are the most queries/s any Python servicer can reach for answers of that size
on this machine; compare them with the index's own speed in `index_bench.json` or
`hamming_bench.json`. Writes bench/results/grpc_floor.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from concurrent import futures
from pathlib import Path

import grpc

from crossbit.client import Client
from crossbit.v1 import crossbit_pb2 as pb
from crossbit.v1 import crossbit_pb2_grpc as pb_grpc


def answer(n_hits: int) -> pb.SearchResponse:
    return pb.SearchResponse(bits=64, hits=[
        pb.Hit(id=1000 + i, key=f"/photos/{1000 + i:07d}.jpg", distance=10 + i, score=0.5,
               metadata={"path": f"/photos/{1000 + i:07d}.jpg", "w": "640"}, modality=pb.IMAGE)
        for i in range(n_hits)])


class Prebuilt(pb_grpc.RetrievalServicer):
    def __init__(self, build: bool):
        self.build = build
        self.one = answer(10)

    def Search(self, request, context):
        return answer(10) if self.build else self.one

    def SearchBatch(self, request, context):
        results = [answer(10) if self.build else self.one for _ in request.queries]
        return pb.SearchBatchResponse(results=results)


def rate(fn, seconds: float) -> float:
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        done += 1
    return done / (time.perf_counter() - start)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default="bench/results/grpc_floor.json")
    args = p.parse_args(argv)
    result = {"what": __doc__.split("\n")[0], "machine": f"{platform.machine()}, "
              f"{os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"), "cases": {}}
    for build in (False, True):
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        pb_grpc.add_RetrievalServicer_to_server(Prebuilt(build), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        with Client(f"127.0.0.1:{port}") as c:
            code = b"\0" * 8
            batch = [{"code": code, "top_k": 10, "rerank": False}] * 32
            calls = (("batch1", lambda c=c, code=code: c.search(code=code, top_k=10), 1),
                     ("batch32", lambda c=c, batch=batch: c.search_batch(batch), 32))
            for name, fn, per_call in calls:
                fn()
                qps = statistics.median(rate(fn, args.seconds) * per_call
                                        for _ in range(args.rounds))
                label = f"{name}_{'hits built per call' if build else 'prebuilt answer'}"
                result["cases"][label] = {"queries_per_s": qps, "ms_per_call": 1000 * per_call / qps}
                print(f"{label}: {qps:.0f} queries/s ({1000 * per_call / qps:.3f} ms a call)",
                      flush=True)
        server.stop(0)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
