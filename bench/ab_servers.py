"""A/B: the same load against two builds of crossbit serve on copies of one data directory.

Each build is a PYTHONPATH that puts its ``crossbit`` package first (a worktree mapped into
the namespace, see --help). Runs alternate A, B, B, A, A, B... so both see the same machine
state and neither always goes second;
the figures are medians over the rounds, and B/A ratios come from the same run.

    python bench/ab_servers.py --a /tmp/oldpkg --b /tmp/newpkg --items 200000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LOADS = [  # (name, crossbit load arguments)
    ("search-code c=16", ["--rpc", "search-code", "-c", "16", "-n", "4000"]),
    ("search-batch x32 c=4", ["--rpc", "search-batch", "--batch", "32", "-c", "4", "-n", "400"]),
    ("text search c=32", ["--rpc", "search", "-c", "32", "-n", "1500"]),
]


def build_data(folder: Path, items: int, bits: int = 64) -> None:
    """``items`` image entries with keys, small metadata and float embeddings."""
    from crossbit.encoders.model import HashModel
    from crossbit.indexer import open_index

    model = HashModel.load()
    rng = np.random.default_rng(0)
    with open_index(folder / "images", bits, "flat", snapshot_interval=0,
                    model=model.fingerprint()) as index:
        for start in range(0, items, 50_000):
            n = min(50_000, items - start)
            codes = rng.integers(0, 256, size=(n, bits // 8), dtype=np.uint8)
            emb = rng.standard_normal((n, model.embedding_dim)).astype(np.float32)
            index.add(codes, keys=[f"/photos/{start + i:07d}.jpg" for i in range(n)],
                      metadata=[{"path": f"/photos/{start + i:07d}.jpg", "w": "640"}
                                for i in range(n)],
                      embeddings=emb)
        index.snapshot()


def serve(pythonpath: str, data: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": pythonpath, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "crossbit", "serve", "--data", str(data),
                             "--port", str(port), "--index", "flat", "--snapshot-interval", "0",
                             "--log-level", "WARNING"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    line = proc.stdout.readline()
    if f":{port}" not in line:
        proc.kill()
        raise RuntimeError(f"server did not start: {line}")
    return proc


def load(port: int, args: list[str]) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run([sys.executable, "-m", "crossbit", "load", "--server",
                        f"127.0.0.1:{port}", "-z", "60", "--json", out.name, *args],
                       check=True, capture_output=True, text=True)
        return json.loads(Path(out.name).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", required=True, help="PYTHONPATH of build A (the baseline)")
    parser.add_argument("--b", required=True, help="PYTHONPATH of build B")
    parser.add_argument("--items", type=int, default=200_000, help="items in the index")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds")
    parser.add_argument("--port", type=int, default=50071, help="gRPC port to use")
    parser.add_argument("--json", default="bench/results/ab_servers.json", help="output file")
    parser.add_argument("--loads", default=",".join(n for n, _ in LOADS),
                        help="comma-separated names of the loads to run")
    args = parser.parse_args()
    loads = [(n, a) for n, a in LOADS if n in args.loads.split(",")]
    work = Path(tempfile.mkdtemp(prefix="crossbit-ab-"))
    print(f"building {args.items} items in {work} ...", flush=True)
    build_data(work / "base", args.items)
    runs: dict = {name: {"A": [], "B": []} for name, _ in loads}
    for round_no in range(args.rounds):
        order = (("A", args.a), ("B", args.b))
        for side, path in (order if round_no % 2 == 0 else order[::-1]):  # ABBA: no side always second
            data = work / f"{side}{round_no}"
            shutil.copytree(work / "base", data)
            proc = serve(path, data, args.port)
            try:
                for name, load_args in loads:
                    load(args.port, load_args[:2] + ["-n", "50"] + load_args[2:4])  # warm up
                    report = load(args.port, load_args)
                    runs[name][side].append(report)
                    print(f"round {round_no} {side} {name}: {report['rps']:.0f} rps, "
                          f"p50 {report['latency_ms']['p50']:.1f} ms, "
                          f"p99 {report['latency_ms']['p99']:.1f} ms, {report['status_codes']}",
                          flush=True)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
            shutil.rmtree(data)
    summary = {}
    for name, sides in runs.items():
        med = {s: {"rps": statistics.median(r["rps"] for r in sides[s]),
                   "p50_ms": statistics.median(r["latency_ms"]["p50"] for r in sides[s]),
                   "p99_ms": statistics.median(r["latency_ms"]["p99"] for r in sides[s])}
               for s in ("A", "B")}
        med["B/A rps"] = round(med["B"]["rps"] / med["A"]["rps"], 3)
        summary[name] = med
        print(f"{name}: A {med['A']['rps']:.0f} rps, B {med['B']['rps']:.0f} rps, "
              f"B/A {med['B/A rps']:.3f}; p99 A {med['A']['p99_ms']:.1f} B {med['B']['p99_ms']:.1f} ms")
    out = {"what": "the same crossbit load against builds A and B, alternating, medians",
           "items": args.items, "rounds": args.rounds, "machine": platform.node(),
           "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"), "a": args.a, "b": args.b,
           "loads": {n: a for n, a in loads}, "summary": summary}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    shutil.rmtree(work)
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
