"""Milvus (milvus-lite, BIN_FLAT) against crossbit's FAISS flat kind on the same codes.

Add throughput, search latency (batch 1) and throughput (batch 32), memory (resident size of
the milvus-lite server process vs this process's FAISS index) and disk. Writes
bench/results/milvus_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from index_bench import interleaved, latency, realistic_codes  # noqa: E402


def child_rss_mb() -> float:
    """Resident memory of this process's children (the milvus-lite server), in MB."""
    me, total = os.getpid(), 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields.get("PPid", "0").strip()) == me:
            total += int(fields.get("VmRSS", "0 kB").split()[0])
    return total / 1024


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, default=20_000)
    p.add_argument("--flickr8k", default=os.environ.get("CROSSBIT_FLICKR8K",
                                                        "../shared/datasets/flickr8k"))
    p.add_argument("--out", default="bench/results/milvus_bench.json")
    args = p.parse_args(argv)
    try:
        import milvus_lite  # noqa: F401
    except ImportError:
        print("skipped: milvus-lite not installed (pip install 'crossbit[milvus]')")
        return 0
    from crossbit.indexer.index import open_index

    codes, queries, source = realistic_codes(args.n, 64, Path(args.flickr8k), 0.1)
    work = Path(tempfile.mkdtemp(prefix="crossbit-milvus-"))
    row: dict = {"n": args.n, "bits": 64, "codes": source}
    try:
        milvus = open_index(work / "m", 64, "milvus")
        start = time.perf_counter()
        for s in range(0, args.n, args.batch):
            milvus.add(codes[s:s + args.batch])
        row["milvus_add_per_s"] = args.n / (time.perf_counter() - start)
        print(f"milvus-lite add: {row['milvus_add_per_s']:,.0f}/s", flush=True)
        flat = open_index(work / "f", 64, "flat", snapshot_interval=0, threads=1)
        start = time.perf_counter()
        for s in range(0, args.n, 100_000):
            flat.add(codes[s:s + 100_000])
        row["faiss_flat_add_per_s"] = args.n / (time.perf_counter() - start)
        row["milvus_batch1"] = latency(lambda q: milvus.search(q, 10), queries, 100)
        row["faiss_flat_batch1"] = latency(lambda q: flat.search(q, 10), queries, 100)
        t_m, t_f = interleaved(lambda q: milvus.search(q, 10), lambda q: flat.search(q, 10),
                               queries, 32, rounds=7)
        row["milvus_qps_batch32"], row["faiss_flat_qps_batch32"] = 32 / t_m, 32 / t_f
        same = np.array_equal(milvus.search(queries[:50], 10).distances,
                              flat.search(queries[:50], 10).distances)
        row["same_top10_distances"] = bool(same)
        row["milvus_server_rss_mb"] = child_rss_mb()
        row["faiss_flat_index_mb"] = args.n * (8 + 8) / 2**20
        row["milvus_disk_mb"] = sum(f.stat().st_size for f in (work / "m").rglob("*")
                                    if f.is_file()) / 2**20
        row["crossbit_store_disk_mb"] = sum(f.stat().st_size for f in (work / "f").rglob("*")
                                            if f.is_file()) / 2**20
        milvus.close()
        flat.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for k, v in row.items():
        print(f"{k}: {v}")
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "result": row}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
