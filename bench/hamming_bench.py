"""The exact Hamming scan: crossbit's kernel against FAISS IndexBinaryFlat and the XOR+POPCNT floor.

On random codes (n, bits), k=10, exact: queries/s at batch 1 and 32 on one thread and at
batch 1,024 on all cores, each engine timed in turn, interleaved, the median of the rounds;
the floor is the same XOR+POPCNT loop with no top-k at all (the sum of every distance),
i.e. what the machine allows for the comparisons alone. Every run checks that both engines
give the same top-k distances. Writes bench/results/hamming_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def timed(fn, rounds: int) -> float:
    fn()  # warm (compilation, caches)
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> int:
    import faiss

    from crossbit.indexer.hamming import HAVE_NUMBA, scan_floor, top_k, word_major, words

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="codes in the index")
    p.add_argument("--bits", default="64,128", help="code lengths to run")
    p.add_argument("--rounds", type=int, default=7, help="timed rounds per case (median)")
    p.add_argument("--out", default="bench/results/hamming_bench.json")
    args = p.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    rng = np.random.default_rng(0)
    result = {"what": __doc__.split("\n")[0], "n": args.n, "k": 10, "numba": HAVE_NUMBA,
              "machine": f"{platform.machine()}, {cores} cores", "date": time.strftime("%Y-%m-%d"),
              "cases": []}
    for bits in (int(b) for b in args.bits.split(",")):
        codes = rng.integers(0, 256, size=(args.n, bits // 8), dtype=np.uint8)
        db = word_major(codes)
        flat = faiss.IndexBinaryFlat(bits)
        flat.add(codes)
        for batch, threads in ((1, 1), (32, 1), (1024, cores)):
            q = rng.integers(0, 256, size=(batch, bits // 8), dtype=np.uint8)
            qw = words(q)
            faiss.omp_set_num_threads(threads)
            fd, _ = flat.search(q, 10)
            _, cd = top_k(qw, db, 10, threads)
            assert np.array_equal(fd, cd), "the two engines disagree on top-k distances"

            def floor(qw=qw, threads=threads, db=db):
                bounds = np.linspace(0, args.n, threads + 1).astype(int)
                with ThreadPoolExecutor(threads) as pool:
                    list(pool.map(lambda part, qw=qw, db=db: scan_floor(qw, db, *part),
                                  zip(bounds[:-1], bounds[1:])))

            rounds = args.rounds if batch < 1024 else max(3, args.rounds // 2)
            t = {"faiss": [], "crossbit": [], "floor": []}
            for _ in range(rounds):  # interleaved: the engines share the machine's moods
                t["faiss"].append(timed(lambda q=q, flat=flat: flat.search(q, 10), 1))
                t["crossbit"].append(timed(lambda qw=qw, th=threads, db=db: top_k(qw, db, 10, th), 1))
                t["floor"].append(timed(floor, 1))
            med = {k: statistics.median(v) for k, v in t.items()}
            case = {"bits": bits, "batch": batch, "threads": threads,
                    "faiss_qps": batch / med["faiss"], "crossbit_qps": batch / med["crossbit"],
                    "floor_qps": batch / med["floor"],
                    "crossbit_over_faiss": med["faiss"] / med["crossbit"],
                    "crossbit_over_floor_time": med["crossbit"] / med["floor"],
                    "crossbit_g_comparisons_s": batch * args.n / med["crossbit"] / 1e9,
                    "floor_g_comparisons_s": batch * args.n / med["floor"] / 1e9,
                    "same_top10_distances": True}
            result["cases"].append(case)
            print(f"{bits} bits, batch {batch}, {threads} thread(s): FAISS {case['faiss_qps']:.0f} "
                  f"q/s, crossbit {case['crossbit_qps']:.0f} q/s ({case['crossbit_over_faiss']:.1f}x), "
                  f"floor {case['floor_qps']:.0f} q/s (crossbit takes "
                  f"{case['crossbit_over_floor_time']:.2f}x the floor's time; "
                  f"{case['crossbit_g_comparisons_s']:.1f} G comparisons/s)", flush=True)
    faiss.omp_set_num_threads(cores)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
