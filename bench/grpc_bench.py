"""End-to-end service benchmarks over gRPC on loopback (issue 5's figures 1 to 3, and batching).

1. Text search against 1M indexed codes: queries/s and p50/p99 at concurrency 1, 8, 64.
2. Search by code over gRPC against the same index called in-process, batch 1 and 32.
3. Image ingestion through streaming AddImages (224x224 JPEGs): images/s.
4. Micro-batching on (max_batch 64) and off (max_batch 1) at concurrency 64.

The 1M codes are the index benchmark's realistic codes, written into the data directory
before the server starts. Writes bench/results/grpc_bench.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from index_bench import interleaved, realistic_codes  # noqa: E402


def jpegs_224(n: int) -> list[bytes]:
    from PIL import Image

    from crossbit.server.demo import sample_photos

    out = []
    for data in list(sample_photos().values()):
        image = Image.open(io.BytesIO(data)).convert("RGB").resize((224, 224))
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return [out[i % len(out)] for i in range(n)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--flickr8k", default=os.environ.get("CROSSBIT_FLICKR8K",
                                                        "../shared/datasets/flickr8k"))
    p.add_argument("--seconds", type=float, default=20.0, help="length of each load run")
    p.add_argument("--out", default="bench/results/grpc_bench.json")
    p.add_argument("--text-runtime", default="torch", choices=["torch", "int8"])
    p.add_argument("--only-text", action="store_true", help="text search only")
    args = p.parse_args(argv)

    from crossbit.client import Client
    from crossbit.indexer.index import open_index
    from crossbit.server.app import create_server, load_model
    from crossbit.server.config import ServerConfig
    from crossbit.server.load import run_load

    codes, queries, source = realistic_codes(args.n, 64, Path(args.flickr8k), 0.1)
    data = Path(tempfile.mkdtemp(prefix="crossbit-grpc-"))
    with open_index(data / "images", 64, "flat", snapshot_interval=0) as index:
        for s in range(0, args.n, 200_000):
            index.add(codes[s:s + 200_000])
    result: dict = {"codes": source, "n": args.n, "bits": 64, "index": "flat",
                    "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    config = ServerConfig(port=0, data=str(data), index="flat", snapshot_interval=0,
                          text_runtime=args.text_runtime)
    result["text_runtime"] = args.text_runtime
    model = load_model(config)
    running = create_server(config, model=model)
    address = f"127.0.0.1:{running.port}"
    try:
        # 1. text search end to end
        result["text_search"] = {}
        for c in (1, 8, 64):
            r = run_load(address, "search", concurrency=c, total=10**6, duration=args.seconds)
            result["text_search"][f"c{c}"] = s = r.summary()
            print(f"text search c={c}: {s['rps']:.0f} q/s, p50 {s['latency_ms']['p50']:.1f} ms, "
                  f"p99 {s['latency_ms']['p99']:.1f} ms, codes {s['status_codes']}", flush=True)
        if args.only_text:
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
            return 0
        # 2. search by code: gRPC vs in-process on the same index object
        index = running.core.indexes["image"]
        with Client(address) as client:
            for batch in (1, 32):
                qs = [{"code": q.tobytes(), "top_k": 10, "rerank": False}
                      for q in queries[:batch]]

                def over_grpc(_q, qs=qs, batch=batch):
                    if batch == 1:
                        client.search(**qs[0])
                    else:
                        client.search_batch(qs)

                def in_process(q, batch=batch):
                    index.search(q[:batch], 10)

                t_grpc, t_local = interleaved(over_grpc, in_process, queries, batch,
                                              rounds=101 if batch == 1 else 31)
                result[f"code_search_batch{batch}"] = {
                    "grpc_qps": batch / t_grpc, "in_process_qps": batch / t_local,
                    "ratio_grpc_to_in_process": t_local / t_grpc}
                r = result[f"code_search_batch{batch}"]
                print(f"search by code, batch {batch}: gRPC {r['grpc_qps']:.0f} q/s, in-process "
                      f"{r['in_process_qps']:.0f} q/s, ratio {r['ratio_grpc_to_in_process']:.2f}",
                      flush=True)
        # 3. streaming ingestion of 224x224 JPEGs
        photos = jpegs_224(32)
        r = run_load(address, "add-images", concurrency=2, total=10**6, duration=args.seconds,
                     stream_images=32, photos=photos)
        result["ingest"] = s = r.summary()
        print(f"ingestion: {s['items_per_s']:.1f} images/s ({s['status_codes']})", flush=True)
    finally:
        running.stop(2.0)
    # 4. micro-batching on and off at concurrency 64 (fresh servers on the same data)
    result["batching"] = {}
    for max_batch in (64, 1):
        cfg = ServerConfig(port=0, data=str(data), index="flat", snapshot_interval=0,
                           max_batch=max_batch)
        running = create_server(cfg, model=model)
        try:
            r = run_load(f"127.0.0.1:{running.port}", "search", concurrency=64, total=10**6,
                         duration=args.seconds)
            result["batching"][f"max_batch{max_batch}"] = s = r.summary()
            print(f"max_batch {max_batch}, c=64: {s['rps']:.0f} q/s, p99 "
                  f"{s['latency_ms']['p99']:.0f} ms", flush=True)
        finally:
            running.stop(2.0)
    on, off = (result["batching"][f"max_batch{b}"]["rps"] for b in (64, 1))
    result["batching"]["throughput_ratio_on_to_off"] = on / off
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
