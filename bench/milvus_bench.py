"""A real Milvus server (2.3 standalone, on this machine) against crossbit's FAISS kinds, on the same codes.

Data: N realistic 64-bit codes (the trained model's Flickr8k codes, each copied with 10% of
its bits flipped; see index_bench.realistic_codes) and 1,000 query codes.
Measured, in one run:
- adds/s into Milvus through the milvus kind (keyless, and with keys: the path that reads
  before it writes), and into the FAISS flat kind;
- search p50/p99 at batch 1 and per call at batch 32, BIN_FLAT, at the consistency levels
  Bounded, Session and Strong (Milvus's default 200 ms time tick), next to FAISS flat;
- BIN_IVF_FLAT recall@10 and latency at nprobe 8/16/32 next to the FAISS ivf kind with the
  same nlist (recall against the exact distances of the flat kind);
- ghz (the operators' tool) against one and two crossbit servers in front of the Milvus
  collection: code queries (no encoder), top 10, Bounded. Everything shares this machine's
  cores: the servers, Milvus and ghz.
Writes bench/results/milvus_bench.json.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from grpc_bench import GHZ, ServeProcess  # noqa: E402

from index_bench import realistic_codes  # noqa: E402


def percentiles(times: list[float]) -> dict:
    return {"p50_ms": round(1000 * float(np.percentile(times, 50)), 2),
            "p99_ms": round(1000 * float(np.percentile(times, 99)), 2), "calls": len(times)}


def timings(search, queries: np.ndarray, batch: int, calls: int) -> dict:
    times = []
    for n in range(calls):
        q = np.ascontiguousarray(np.resize(np.roll(queries, -n * batch, axis=0),
                                           (batch, queries.shape[1])))
        start = time.perf_counter()
        search(q)
        times.append(time.perf_counter() - start)
    out = percentiles(times)
    out["queries_per_s"] = round(batch / float(np.median(times)), 1)
    return out


def recall_at_10(res_ids, res_dist, true_kth) -> float:
    return float(np.mean((res_dist <= true_kth[:, None]) & (res_ids >= 0)))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_indexed(milvus, n: int, timeout: float = 1800) -> float:
    """Flush, wait until Milvus has indexed every row, and load the indexed segments."""
    start = time.perf_counter()
    client = milvus._client
    client.flush(milvus.collection)
    while time.perf_counter() - start < timeout:
        if client.describe_index(milvus.collection, "code").get("indexed_rows", 0) >= n:
            break
        time.sleep(1)
    client.release_collection(milvus.collection)
    client.load_collection(milvus.collection, timeout=timeout)
    return time.perf_counter() - start


def ghz(address: str, queries: np.ndarray, seconds: float, concurrency: int) -> dict:
    body = [{"code": base64.b64encode(q.tobytes()).decode(), "top_k": 10, "rerank": False}
            for q in queries[:500]]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(body, f)
    args = [str(GHZ), "--insecure", "--cpus", "1", "-O", "json", "--call",
            "crossbit.v1.Retrieval.Search", "-D", f.name, "-c", str(concurrency), "-n",
            str(int(seconds * 300)), "--connections", "1", address]  # -z would cancel the
    # calls in flight when its time is up, and count them as Unavailable
    done = subprocess.run(args, capture_output=True, text=True, timeout=seconds * 5 + 60)
    os.unlink(f.name)
    report = json.loads(done.stdout)
    lat = {d["percentage"]: d["latency"] / 1e6 for d in report.get("latencyDistribution") or []}
    return {"rps": round(report["rps"], 1), "p50_ms": lat.get(50), "p99_ms": lat.get(99),
            "count": report["count"], "status_codes": report["statusCodeDistribution"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, default=20_000, help="items per add call")
    p.add_argument("--nlist", type=int, default=1024, help="IVF lists, Milvus and FAISS alike")
    p.add_argument("--seconds", type=float, default=15.0, help="length of each ghz run")
    p.add_argument("--flickr8k", default=os.environ.get("CROSSBIT_FLICKR8K",
                                                        "../shared/datasets/flickr8k"))
    p.add_argument("--out", default="bench/results/milvus_bench.json")
    args = p.parse_args(argv)
    try:
        import milvus  # noqa: F401
    except ImportError:
        print("skipped: no local Milvus server (pip install 'crossbit[milvus-server]')")
        return 0
    from crossbit.indexer import open_index
    from crossbit.indexer.milvus_standalone import MilvusStandalone

    codes, queries, source = realistic_codes(args.n, 64, Path(args.flickr8k), 0.1)
    work = Path(tempfile.mkdtemp(prefix="crossbit-milvus-"))
    row: dict = {"n": args.n, "bits": 64, "codes": source, "nlist": args.nlist}
    server = MilvusStandalone(work / "milvus").start()  # Milvus's default 200 ms time tick
    try:
        m = open_index(work / "images", 64, "milvus", uri=server.uri, timeout_s=120,
                       collection="crossbit_images", consistency="Bounded")
        start = time.perf_counter()
        for s in range(0, args.n, args.batch):
            m.add(codes[s:s + args.batch])
        row["milvus_add_per_s"] = round(args.n / (time.perf_counter() - start))
        print(f"milvus add (no keys, {args.batch} per call): {row['milvus_add_per_s']:,}/s",
              flush=True)
        keyed = open_index(work / "keyed", 64, "milvus", uri=server.uri, collection="bench_keyed")
        start = time.perf_counter()
        for s in range(0, 20_000, 1000):
            keyed.add(codes[s:s + 1000], keys=[f"/photos/{i}.jpg" for i in range(s, s + 1000)])
        row["milvus_keyed_add_per_s"] = round(20_000 / (time.perf_counter() - start))
        keyed._client.drop_collection("bench_keyed")
        keyed.close()
        row["milvus_flat_ready_s"] = round(wait_indexed(m, args.n), 1)

        flat = open_index(work / "flat", 64, "flat", snapshot_interval=0, threads=1)
        start = time.perf_counter()
        for s in range(0, args.n, 100_000):
            flat.add(codes[s:s + 100_000])
        row["faiss_flat_add_per_s"] = round(args.n / (time.perf_counter() - start))
        exact = flat.search(queries, 10)
        true_kth = exact.distances[:, -1]

        first = m.search(queries[:50], 10)
        row["milvus_bin_flat_same_top10_distances"] = bool(
            np.array_equal(first.distances, exact.distances[:50]))
        for level, calls in (("Bounded", 200), ("Session", 100), ("Strong", 30)):
            m.consistency = level
            row[f"milvus_bin_flat_{level}_batch1"] = timings(lambda q: m.search(q, 10), queries,
                                                             1, calls)
            row[f"milvus_bin_flat_{level}_batch32"] = timings(lambda q: m.search(q, 10),
                                                              queries, 32, calls // 4)
            print(f"milvus BIN_FLAT {level}: batch 1 {row[f'milvus_bin_flat_{level}_batch1']}, "
                  f"batch 32 {row[f'milvus_bin_flat_{level}_batch32']}", flush=True)
        m.consistency = "Bounded"
        row["faiss_flat_batch1"] = timings(lambda q: flat.search(q, 10), queries, 1, 200)
        row["faiss_flat_batch32"] = timings(lambda q: flat.search(q, 10), queries, 32, 50)
        print(f"faiss flat: {row['faiss_flat_batch1']}, {row['faiss_flat_batch32']}", flush=True)
        row["milvus_rss_mb"] = round(rss_mb(server.proc.pid))
        row["milvus_disk_mb"] = round(sum(f.stat().st_size for f in (work / "milvus" / "data")
                                          .rglob("*") if f.is_file()) / 2**20)
        flat.close()

        # BIN_IVF_FLAT on the same collection, next to the FAISS ivf kind with the same nlist
        client = m._client
        client.release_collection(m.collection)
        client.drop_index(m.collection, "code")
        params = client.prepare_index_params()
        params.add_index(field_name="code", index_type="BIN_IVF_FLAT", metric_type="HAMMING",
                         params={"nlist": args.nlist})
        start = time.perf_counter()
        client.create_index(m.collection, params, timeout=1800)
        m.index_type = "BIN_IVF_FLAT"
        row["milvus_ivf_build_s"] = round(time.perf_counter() - start + wait_indexed(m, args.n), 1)
        ivf = open_index(work / "ivf", 64, "ivf", snapshot_interval=0, threads=1,
                         nlist=args.nlist)
        start = time.perf_counter()
        ivf.add(codes)
        row["faiss_ivf_add_and_train_s"] = round(time.perf_counter() - start, 1)
        for nprobe in (8, 16, 32):
            res = m.search(queries, 10, nprobe=nprobe)
            ours = ivf.search(queries, 10, nprobe=nprobe)
            row[f"ivf_nprobe{nprobe}"] = {
                "milvus_recall_at_10": round(recall_at_10(res.ids, res.distances, true_kth), 3),
                "faiss_recall_at_10": round(recall_at_10(ours.ids, ours.distances, true_kth), 3),
                "milvus_batch1": timings(lambda q, p=nprobe: m.search(q, 10, nprobe=p), queries, 1,
                                         200),
                "faiss_batch1": timings(lambda q, p=nprobe: ivf.search(q, 10, nprobe=p), queries, 1,
                                        200),
                "milvus_batch32": timings(lambda q, p=nprobe: m.search(q, 10, nprobe=p), queries, 32,
                                          50),
                "faiss_batch32": timings(lambda q, p=nprobe: ivf.search(q, 10, nprobe=p), queries, 32,
                                         50)}
            print(f"IVF nprobe {nprobe}: {row[f'ivf_nprobe{nprobe}']}", flush=True)
        ivf.close()
        m.close()

        # crossbit servers in front of the collection, loaded with ghz
        if GHZ.exists():
            flags = ("--index", "milvus", "--milvus-uri", server.uri, "--milvus-index-type",
                     "BIN_IVF_FLAT", "--nprobe", "16", "--milvus-consistency", "Bounded")
            servers = []
            try:
                for n in range(2):
                    (work / f"serve{n}").mkdir()
                    servers.append(ServeProcess(work / f"serve{n}", *flags))
                row["ghz_one_server"] = ghz(servers[0].address, queries, args.seconds, 16)
                print(f"ghz, one server: {row['ghz_one_server']}", flush=True)
                both: list = [None, None]

                def run(n):
                    both[n] = ghz(servers[n].address, queries, args.seconds, 16)

                threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                row["ghz_two_servers"] = {"rps_total": round(both[0]["rps"] + both[1]["rps"], 1),
                                          "each": both}
                print(f"ghz, two servers: {row['ghz_two_servers']}", flush=True)
            finally:
                for s in servers:
                    s.stop()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "milvus": "2.3.5 standalone (PyPI milvus), pymilvus 2.5",
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "result": row}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
