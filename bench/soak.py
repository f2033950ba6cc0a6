"""Sustained load: 64 concurrent searches and 16 ingestion streams against one server for 60 s.

The server runs as its own process (``crossbit serve``) on loopback; its resident memory is
sampled every second. Reports errors, latency percentiles, and memory growth after warm-up
(the first 15 s). Writes bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--searchers", type=int, default=64)
    p.add_argument("--streams", type=int, default=16)
    p.add_argument("--warmup", type=float, default=15.0)
    p.add_argument("--out", default="bench/results/soak.json")
    args = p.parse_args(argv)
    from crossbit.server.load.generator import run_load

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tempfile.mkdtemp(prefix="crossbit-soak-")
    server = subprocess.Popen([sys.executable, "-m", "crossbit", "serve", "--data", data,
                               "--port", str(port), "--index", "flat", "--log-level", "WARNING"],
                              stdout=subprocess.PIPE, text=True)
    server.stdout.readline()
    address = f"127.0.0.1:{port}"
    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def sample():
        start = time.monotonic()
        while not done.wait(1.0):
            samples.append((time.monotonic() - start, rss_mb(server.pid)))

    reports = {}

    def load(name, **kw):
        reports[name] = run_load(address, duration=args.seconds, total=10**7, **kw).summary()

    threads = [threading.Thread(target=sample),
               threading.Thread(target=load, args=("search",),
                                kwargs={"rpc": "search", "concurrency": args.searchers}),
               threading.Thread(target=load, args=("ingest",),
                                kwargs={"rpc": "add-images", "concurrency": args.streams,
                                        "stream_images": 8})]
    for t in threads:
        t.start()
    for t in threads[1:]:
        t.join()
    done.set()
    threads[0].join()
    server.terminate()
    server.wait(timeout=60)
    # resident size jitters by a few percent from one second to the next (allocator arenas of
    # 32+ threads): compare the median of the first 10 s after warm-up with the last 10 s
    after_warmup = [m for t, m in samples if t >= args.warmup]
    first, last = statistics.median(after_warmup[:10]), statistics.median(after_warmup[-10:])
    growth = (last - first) / first
    errors = sum(n for r in reports.values() for code, n in r["status_codes"].items()
                 if code != "OK")
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "seconds": args.seconds, "searchers": args.searchers, "streams": args.streams,
              "errors": errors, "memory_mb_median_first_last_10s_after_warmup": [first, last],
              "memory_growth_after_warmup": growth, "rss_samples": samples, "load": reports}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for name, r in reports.items():
        print(f"{name}: {r['count']} calls, {r['rps']:.1f}/s, items/s {r['items_per_s']:.1f}, "
              f"p50 {r['latency_ms']['p50']:.0f} ms, p99 {r['latency_ms']['p99']:.0f} ms, "
              f"codes {r['status_codes']}")
    print(f"errors {errors}; server memory growth after {args.warmup:.0f} s warm-up: "
          f"{100 * growth:.1f}%")
    return 0 if errors == 0 and growth < 0.10 else 1


if __name__ == "__main__":
    raise SystemExit(main())
