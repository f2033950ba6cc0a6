"""Benchmark the index layer: add throughput, search latency and throughput, recall, memory, reopen.

Codes are "realistic": drawn around the shipped model's codes of real Flickr8k photos (each
synthetic code is a real image code with every bit flipped with probability --flip), and
the queries are the model's codes of real Flickr8k dev captions. Without the dataset, the
centres are random codes (said in the output). Results go to bench/results/index_*.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def realistic_codes(n: int, bits: int, flickr: Path, flip: float, seed: int = 0):
    """(codes (n, bits/8), queries (1000, bits/8), description)."""
    codes, _, queries, source = realistic_items(n, bits, flickr, flip, seed, embeddings=False)
    return codes, queries, source


def realistic_items(n: int, bits: int, flickr: Path, flip: float, seed: int = 0,
                    embeddings: bool = True):
    """(codes, float embeddings or None, query codes (1000), description).

    Each item copies one Flickr8k photo's code with every bit flipped with probability
    ``flip``, and that photo's unit embedding plus Gaussian noise (norm about 0.3).
    """
    rng = np.random.default_rng(seed)
    centres = queries = centre_emb = None
    model_dir = None if bits == 64 else Path("runs") / f"flickr8k-{bits}"
    source = f"random centres (no Flickr8k at {flickr} or no {bits}-bit model in runs/)"
    if (flickr / "captions.csv").exists() and (model_dir is None or model_dir.exists()):
        from crossbit.encoders.model import HashModel
        from crossbit.encoders.runtime import use_image_runtime
        from crossbit.encoders.training.datasets import load_captions_csv
        from crossbit.encoders.training.evaluate import encode_pairs

        model = HashModel.load(model_dir)
        use_image_runtime(model)
        pairs = load_captions_csv(flickr / "captions.csv", flickr / "images")
        images, texts = encode_pairs(model, pairs, ".cache/features", progress=False)
        centres = np.unpackbits(images.codes, axis=1)
        centre_emb = images.embeddings
        pick = rng.choice(len(texts.codes), 1000, replace=False)
        queries = texts.codes[pick]
        source = (f"{model_dir or 'default model'}: codes of {len(centres)} Flickr8k photos, "
                  f"each bit flipped with p={flip}; queries: codes of 1,000 Flickr8k captions")
    if centres is None:
        centres = rng.integers(0, 2, size=(7000, bits), dtype=np.uint8)
        centre_emb = rng.normal(size=(7000, 64)).astype(np.float32)
        centre_emb /= np.linalg.norm(centre_emb, axis=1, keepdims=True)
        queries = np.packbits(centres[rng.integers(0, 7000, 1000)] ^
                              (rng.random((1000, bits)) < flip), axis=1)
    out = np.empty((n, bits // 8), np.uint8)
    emb = np.empty((n, centre_emb.shape[1]), np.float32) if embeddings else None
    step = 1_000_000
    for start in range(0, n, step):
        m = min(step, n - start)
        pick = rng.integers(0, len(centres), m)
        out[start:start + m] = np.packbits(centres[pick] ^ (rng.random((m, bits)) < flip), axis=1)
        if emb is not None:
            noise = rng.normal(scale=0.3 / np.sqrt(emb.shape[1]), size=(m, emb.shape[1]))
            emb[start:start + m] = centre_emb[pick] + noise.astype(np.float32)
    return out, emb, queries, source


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, repeat: int = 1):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, float(np.median(times))


def latency(search, queries, n: int = 200):
    times = []
    for q in queries[:n]:
        start = time.perf_counter()
        search(q[None, :])
        times.append(time.perf_counter() - start)
    return {"p50_ms": 1000 * float(np.percentile(times, 50)),
            "p99_ms": 1000 * float(np.percentile(times, 99))}


def throughput(search, queries, batch: int, repeat: int = 3) -> float:
    q = np.ascontiguousarray(queries[:batch]) if batch <= len(queries) else \
        np.ascontiguousarray(np.resize(queries, (batch, queries.shape[1])))
    _, median = timed(lambda: search(q), repeat)
    return batch / median


def interleaved(a, b, queries, batch: int, rounds: int = 9) -> tuple[float, float]:
    """Median seconds of a(q) and b(q), alternating runs so that machine noise hits both alike."""
    q = np.ascontiguousarray(np.resize(queries, (batch, queries.shape[1])))
    ta, tb = [], []
    for _ in range(rounds):
        for fn, out in ((a, ta), (b, tb)):
            start = time.perf_counter()
            fn(q)
            out.append(time.perf_counter() - start)
    return float(np.median(ta)), float(np.median(tb))


def recall_at_10(ids, distances_true_kth, true_dist_of):
    hits = [np.mean(true_dist_of(q, ids[q]) <= distances_true_kth[q]) for q in range(len(ids))]
    return float(np.mean(hits))


def bench_size(n: int, bits: int, args, out: dict) -> None:
    import faiss

    from crossbit.indexer import open_index

    codes, queries, source = realistic_codes(n, bits, Path(args.flickr8k), args.flip)
    key = f"{n}x{bits}"
    row = out.setdefault(key, {"codes": source, "n": n, "bits": bits})
    print(f"\n== {n:,} codes of {bits} bits: {source}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="crossbit-bench-", dir=args.workdir))
    try:
        # flat, through the index layer (SQLite + FAISS), adds in chunks of 100k
        flat = open_index(work / "flat", bits, "flat", snapshot_interval=0, threads=None)
        start = time.perf_counter()
        for s in range(0, n, 100_000):
            flat.add(codes[s:s + 100_000])
        add_s = time.perf_counter() - start
        raw = faiss.IndexBinaryFlat(bits)
        _, raw_add_s = timed(lambda: raw.add(codes))
        store_bytes = sum(f.stat().st_size for f in (work / "flat").glob("store.sqlite3*"))
        row["add_per_s"] = {"index (SQLite commit + FAISS)": n / add_s, "faiss only": n / raw_add_s}
        row["memory"] = {"faiss_bytes_per_item": bits / 8 + 8,
                         "store_bytes_per_item_on_disk": store_bytes / n,
                         "process_max_rss_mb": rss_mb()}
        print(f"add: {n / add_s:,.0f}/s through the index, {n / raw_add_s:,.0f}/s FAISS only; "
              f"store {store_bytes / n:.0f} B/item on disk", flush=True)
        # ground truth for recall: exact top 10 distances
        true_d, _ = raw.search(queries, 10)
        kth = true_d[:, 9]

        def true_dist(q, ids):
            ids = ids[ids >= 0]
            return np.bitwise_count(codes[ids] ^ queries[q]).sum(axis=1)

        faiss.omp_set_num_threads(1)
        row["flat"] = {
            "batch1": latency(lambda q: flat.search(q, 10), queries),
            "batch1_faiss_direct": latency(lambda q: raw.search(q, 10), queries),
        }
        faiss.omp_set_num_threads(os.cpu_count())
        for batch in (32, 1024):
            row["flat"][f"qps_batch{batch}"] = throughput(lambda q: flat.search(q, 10), queries,
                                                          batch)
            row["flat"][f"qps_batch{batch}_faiss_direct"] = throughput(
                lambda q: raw.search(q, 10), queries, batch)
        f = row["flat"]
        for batch in (1, 32):
            if batch == 1:
                faiss.omp_set_num_threads(1)
            t_index, t_faiss = interleaved(lambda q: flat.search(q, 10),
                                           lambda q: raw.search(q, 10), queries, batch,
                                           rounds=101 if batch == 1 else 15)
            faiss.omp_set_num_threads(os.cpu_count())
            f[f"overhead_ratio_batch{batch}"] = t_index / t_faiss
        print(f"flat: p50 {f['batch1']['p50_ms']:.2f} ms p99 {f['batch1']['p99_ms']:.2f} ms; "
              f"{f['qps_batch32']:,.0f} q/s @32, {f['qps_batch1024']:,.0f} q/s @1024; index/FAISS "
              f"time ratio {f['overhead_ratio_batch1']:.3f} @1, {f['overhead_ratio_batch32']:.3f} @32",
              flush=True)
        # reopen time (snapshot written on close)
        flat.close()
        start = time.perf_counter()
        again = open_index(work / "flat", bits, "flat", snapshot_interval=0)
        row["reopen_s"] = time.perf_counter() - start
        assert len(again) == n
        again.close()
        print(f"reopen with {n:,} items: {row['reopen_s']:.2f} s", flush=True)
        shutil.rmtree(work / "flat")
        raw.reset()
        if args.no_ivf:
            return
        # IVF: trained once on all codes
        from crossbit.indexer.backends_approx import IVFBackend

        ivf = IVFBackend(bits, train_size=n, nlist=args.nlist)
        _, train_s = timed(lambda: ivf.add(codes, np.arange(n, dtype=np.int64)))
        row["ivf"] = {"nlist": int(ivf.ivf.nlist), "train_and_add_s": train_s}
        for nprobe in (1, 8, 32):
            faiss.omp_set_num_threads(1)
            r = {"batch1": latency(lambda q, p=nprobe: ivf.search(q, 10, p), queries)}
            faiss.omp_set_num_threads(os.cpu_count())
            for batch in (32, 1024):
                r[f"qps_batch{batch}"] = throughput(lambda q, p=nprobe: ivf.search(q, 10, p), queries,
                                                    batch)
            ids, _ = ivf.search(queries, 10, nprobe)
            r["recall@10"] = recall_at_10(ids, kth, true_dist)
            row["ivf"][f"nprobe{nprobe}"] = r
            print(f"ivf{row['ivf']['nlist']} nprobe {nprobe}: p50 {r['batch1']['p50_ms']:.3f} ms, "
                  f"{r['qps_batch32']:,.0f} q/s @32, {r['qps_batch1024']:,.0f} q/s @1024, "
                  f"recall@10 {r['recall@10']:.3f}", flush=True)
        if n <= args.hnsw_max:
            from crossbit.indexer.backends_approx import HNSWBackend

            hnsw = HNSWBackend(bits)
            _, build_s = timed(lambda: hnsw.add(codes, np.arange(n, dtype=np.int64)))
            faiss.omp_set_num_threads(1)
            r = {"build_s": build_s, "batch1": latency(lambda q: hnsw.search(q, 10), queries)}
            faiss.omp_set_num_threads(os.cpu_count())
            for batch in (32, 1024):
                r[f"qps_batch{batch}"] = throughput(lambda q: hnsw.search(q, 10), queries, batch)
            ids, _ = hnsw.search(queries, 10)
            r["recall@10"] = recall_at_10(ids, kth, true_dist)
            row["hnsw"] = r
            print(f"hnsw M16 ef64: build {build_s:.0f} s, p50 {r['batch1']['p50_ms']:.3f} ms, "
                  f"{r['qps_batch32']:,.0f} q/s @32, recall@10 {r['recall@10']:.3f}", flush=True)
        else:
            row["hnsw"] = f"skipped above {args.hnsw_max:,} codes (build time on 2 cores)"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    p.add_argument("--bits", type=int, nargs="+", default=[64, 128])
    p.add_argument("--flickr8k", default=os.environ.get("CROSSBIT_FLICKR8K",
                                                        "../shared/datasets/flickr8k"))
    p.add_argument("--flip", type=float, default=0.1)
    p.add_argument("--nlist", type=int, default=4096)
    p.add_argument("--hnsw-max", type=int, default=1_000_000)
    p.add_argument("--workdir", default=None)
    p.add_argument("--no-ivf", action="store_true", help="flat only (quick overhead check)")
    p.add_argument("--out", default="bench/results/index_bench.json")
    args = p.parse_args(argv)
    out: dict = {}
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "python": sys.version.split()[0], "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                       time.gmtime()),
              "notes": "batch-1 latency with one OpenMP thread per call (the server's setting); "
                       "batch 32/1024 throughput with all cores; medians of 3 runs; recall@10: "
                       "share of returned ids within the true 10th distance", "results": out}
    for n in args.sizes:
        for bits in args.bits:
            bench_size(n, bits, args, out)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
