"""Filtered search at 1M items: filter evaluation and filtered exact search against the unfiltered
exact scan, IVF and HNSW recall@10 and q/s per selectivity, Milvus, the attribute index's memory,
adds, open and scrolling. Prints its figures and writes bench/results/filter_bench.json and .png.

Codes: clustered like ``index_bench.py`` (7,000 random 64-bit centres, every bit flipped with
p = 0.1: the script's fallback without Flickr8k codes); queries: 1,000 codes around the same
centres. Attributes: a category of 100 values, a year of 25, a long-tailed price, a bool and
0 to 3 of 20 tags. One query at a time, one thread (the server's setting), medians of rounds.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from index_bench import realistic_codes  # noqa: E402

TARGETS = [1.0, 0.5, 0.1, 0.01, 0.001, 0.0001]


def attributes(n: int, rng) -> tuple[list[dict], dict]:
    cat = rng.integers(0, 100, n)
    year = rng.integers(2000, 2025, n)
    price = np.round(np.exp(rng.normal(3.2, 1.0, n)), 2)
    stock = rng.random(n) < 0.5
    pop = 1 / np.arange(1, 21)
    tags = [rng.choice(20, size=k, replace=False, p=pop / pop.sum()) for k in rng.integers(0, 4, n)]
    meta = [{"category": f"c{c}", "year": int(y), "price": float(p), "in_stock": bool(s),
             "tags": [f"t{t}" for t in tg]} for c, y, p, s, tg in zip(cat, year, price, stock, tags)]
    return meta, {"price": price}


def expressions(columns: dict) -> dict[float, list[str]]:
    """Two filters per selectivity: a plain one and a range or a compound."""
    q = [round(v, 2) for v in np.quantile(columns["price"], [0.001, 0.01, 0.1, 0.2, 0.5, 0.51])]
    ten = ", ".join(f'"c{i}"' for i in range(10))
    return {1.0: ["year >= 2000", "exists category"],
            0.5: ["in_stock == true", f"price < {q[4]}"],
            0.1: [f"category in [{ten}]", f"in_stock == true and price < {q[3]}"],
            0.01: ['category == "c7"', f"price >= {q[4]} and price < {q[5]}"],
            0.001: ['category == "c7" and year in [2001, 2002, 2003]', f"price < {q[0]}"],
            0.0001: ['category == "c7" and price < ' + str(q[1]),
                     'category == "c7" and year == 2010 and tags contains "t3"']}


def median_ms(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def clock(fn, *args, **kwargs) -> float:
    """Milliseconds of one call."""
    start = time.perf_counter()
    fn(*args, **kwargs)
    return 1000 * (time.perf_counter() - start)


def filled(folder: Path, kind: str, codes, meta, **options):
    from crossbit.indexer import open_index

    index = open_index(folder, 64, kind, snapshot_interval=0, synchronous="NORMAL", **options)
    start = time.perf_counter()
    for s in range(0, len(codes), 100_000):
        index.add(codes[s:s + 100_000], metadata=meta[s:s + 100_000])
    index.wait_retrained()
    return index, time.perf_counter() - start


def recall(res, exact) -> float | None:
    """recall@10 against the exact filtered answer (``exact``: its Results): the share of the
    exact hits' count that the answer's hits within the exact k-th distance make up (ties are
    equivalent); None when nothing matches."""
    want = (exact.ids >= 0).sum(axis=1)
    kth = np.where(want > 0, exact.distances[np.arange(len(want)), np.maximum(want - 1, 0)], -1)
    got = [(res.distances[q][res.ids[q] >= 0] <= kth[q]).sum() for q in range(len(want))]
    rows = [min(g, w) / w for g, w in zip(got, want) if w]
    return float(np.mean(rows)) if rows else None


def bench_flat(flat, queries, exprs, args, out):
    """Evaluation and exact filtered search against the unfiltered scan, round by round."""
    from crossbit.indexer.filters import parse

    attrs = flat.attributes
    rows = {}
    for target, texts in exprs.items():
        for text in texts:
            flt = parse(text)
            share = len(attrs.evaluate(flt.root)) / len(attrs)
            rows[text] = {"target": target, "selectivity": share, "flt": flt,
                          "times": {k: [] for k in ("base", "eval_cold", "eval_warm",
                                                    "search_cold", "search_warm")}}
    def block(times: list, fn, query: bool = True, fresh: bool = False, **kw) -> None:
        """Each operation timed in a block of its own after one call (its own cache state:
        the attribute index keeps its own copy of the codes, the backend another)."""
        fn(*((queries[:1],) if query else ()), **kw)
        for q in queries[:args.queries]:
            if fresh:
                attrs._changed()  # the cache emptied: the filter is evaluated again
            times.append(clock(fn, *((q[None, :],) if query else ()), **kw))

    for _ in range(args.rounds):
        for row in rows.values():
            flt, t = row["flt"], row["times"]
            block(t["base"], flat.search, k=10)
            block(t["eval_cold"], functools.partial(attrs.evaluate, flt.root), query=False)
            block(t["eval_warm"], functools.partial(attrs.select_slots, flt), query=False)
            block(t["search_cold"], flat.search, fresh=True, k=10, filter=flt)
            block(t["search_warm"], flat.search, k=10, filter=flt)
    for text, row in rows.items():
        med = {k: float(np.median(v)) for k, v in row.pop("times").items()}
        row.pop("flt")
        row.update({f"{k}_ms": v for k, v in med.items()})
        row.update({f"{k}_ratio": med[k] / med["base"] for k in med if k != "base"})
        out.setdefault("flat", {})[text] = row
        print(f"  {row['selectivity']:9.5f} {text[:58]:58} eval {row['eval_cold_ratio']:.3f}"
              f"/{row['eval_warm_ratio']:.3f}  search {row['search_cold_ratio']:.3f}"
              f"/{row['search_warm_ratio']:.3f} x the scan ({med['base']:.3f} ms)", flush=True)


def bench_approx(index, flat, queries, exprs, name, out):
    from crossbit.indexer.filters import parse

    q = queries[:200]
    base = flat.search(q, 10)
    res = index.search(q, 10)
    rows = {"unfiltered": {"selectivity": 1.0, "recall": recall(res, base),
                           "qps": 1000 / median_ms(lambda: [index.search(x[None], 10)
                                                            for x in q[:50]], 3) * 50}}
    for target, texts in exprs.items():
        for text in texts:
            flt = parse(text)
            kth = flat.search(q, 10, filter=flt)
            res = index.search(q, 10, filter=flt)
            qps = 1000 / median_ms(lambda flt=flt: [index.search(x[None], 10, filter=flt)
                                                    for x in q[:50]], 3) * 50
            rows[text] = {"target": target, "selectivity": flat.count(flt) / len(flat),
                          "recall": recall(res, kth), "qps": qps,
                          "short": int(((res.ids >= 0).sum(axis=1) < min(10, flat.count(flt))).sum())}
            print(f"  {name} {text[:58]:58} recall@10 {rows[text]['recall']}  "
                  f"{qps:,.0f} q/s", flush=True)
    out[name] = rows


def bench_scroll(flat, out):
    from crossbit.indexer.filters import parse

    rows = {}
    for label, flt in (("unfiltered", None), ("in_stock == true (50%)", parse("in_stock == true")),
                       ('category == "c7" (1%)', parse('category == "c7"'))):
        peak = 0.0
        for traced in (False, True):  # timed alone, then again for its memory (first 200 pages)
            if traced:
                tracemalloc.start()
            start, after, seen, pages = time.perf_counter(), None, 0, 0
            while not (traced and pages == 200):
                page = flat.scroll(after, 1000, flt)
                seen, pages = seen + len(page), pages + 1
                if len(page) < 1000:
                    break
                after = page[-1].id
            if traced:
                peak = tracemalloc.get_traced_memory()[1] / 1e6
                tracemalloc.stop()
            else:
                secs, total = time.perf_counter() - start, seen
        rows[label] = {"items": total, "seconds": secs, "items_per_s": total / secs,
                       "python_peak_mb_200_pages": peak}
        print(f"  scroll {label}: {total:,} items, {total / secs:,.0f} items/s, Python peak "
              f"{peak:.1f} MB over 200 pages", flush=True)
    out["scroll"] = rows


def bench_adds(folder, codes, meta, out):
    """What the attribute index adds to an add: its own share of 100k-item adds, and server-sized
    calls of 64 items."""
    from crossbit.indexer import open_index
    from crossbit.indexer.attributes import AttributeIndex, metadata_of

    attrs, blobs = AttributeIndex(64), [json.dumps(m) for m in meta]
    start = time.perf_counter()
    for s in range(0, len(codes), 100_000):
        attrs.add(np.arange(s, min(s + 100_000, len(codes))), [None] * len(blobs[s:s + 100_000]),
                  [metadata_of(b) for b in blobs[s:s + 100_000]], codes[s:s + 100_000])
    share = (time.perf_counter() - start) / len(codes)
    calls = {}
    with open_index(folder, 64, "flat", snapshot_interval=0, synchronous="NORMAL") as index:
        index.add(codes[:200_000], metadata=meta[:200_000])
        for label, m in (("with metadata", meta), ("without metadata", None)):
            calls[label] = median_ms(lambda m=m: index.add(codes[:64], metadata=None if m is None
                                                           else m[:64]), 200)
    out["adds"] = {"attribute_us_per_item": share * 1e6, "call_of_64_ms": calls}
    print(f"  the attribute index: {share * 1e6:.1f} us per item; a call of 64 items "
          f"{calls['with metadata']:.2f} ms with metadata, {calls['without metadata']:.2f} "
          "without", flush=True)


def bench_milvus(codes, meta, queries, exprs, args, out):
    from crossbit.indexer import open_index
    from crossbit.indexer.filters import parse
    from crossbit.indexer.milvus_standalone import MilvusStandalone

    n = args.milvus_items
    work = Path(tempfile.mkdtemp(prefix="crossbit-milvus-", dir=args.workdir))
    server = MilvusStandalone(work / "server", time_tick_ms=50, stop_timeout_s=3).start()
    rows = {"items": n}
    try:
        milvus = open_index(work / "m", 64, "milvus", uri=server.uri, collection="filter_bench")
        flat = open_index(work / "f", 64, "flat", snapshot_interval=0)
        start = time.perf_counter()
        for s in range(0, n, 20_000):
            ids = list(range(s, min(n, s + 20_000)))
            milvus.add(codes[s:s + len(ids)], ids=ids, metadata=meta[s:s + len(ids)])
            flat.add(codes[s:s + len(ids)], ids=ids, metadata=meta[s:s + len(ids)])
        rows["add_s"] = time.perf_counter() - start
        q = queries[:50]
        for texts in exprs.values():
            for text in texts:
                flt = parse(text)
                kth = flat.search(q, 10, filter=flt)
                res = milvus.search(q, 10, filter=flt)
                ms = median_ms(lambda flt=flt: [milvus.search(x[None], 10, filter=flt)
                                                for x in q[:20]], 3) / 20
                count_ms = median_ms(lambda flt=flt: milvus.count(flt), 3)
                rows[text] = {"selectivity": flat.count(flt) / n, "recall": recall(res, kth),
                              "search_ms": ms, "qps": 1000 / ms, "count_ms": count_ms,
                              "same_count": milvus.count(flt) == flat.count(flt)}
                print(f"  milvus {text[:58]:58} recall@10 {rows[text]['recall']} "
                      f"{1000 / ms:,.0f} q/s, count {count_ms:.0f} ms", flush=True)
        milvus.close()
        flat.close()
    finally:
        server.kill()
        shutil.rmtree(work, ignore_errors=True)
    out["milvus"] = rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=20, help="queries per filter per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--milvus-items", type=int, default=100_000)
    p.add_argument("--skip", nargs="*", default=[], choices=["ivf", "hnsw", "milvus", "scroll"])
    p.add_argument("--workdir", default=None)
    p.add_argument("--out", default="bench/results/filter_bench.json")
    args = p.parse_args(argv)
    from crossbit.indexer.backends import set_thread_omp

    set_thread_omp(1)
    rng = np.random.default_rng(0)
    codes, queries, source = realistic_codes(args.items, 64, Path("/nonexistent"), 0.1)
    meta, columns = attributes(args.items, rng)
    exprs = expressions(columns)
    out = {"date": time.strftime("%Y-%m-%d"), "items": args.items, "codes": source,
           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
           "threads": 1, "rounds": args.rounds, "queries_per_round": args.queries}
    work = Path(tempfile.mkdtemp(prefix="crossbit-filters-", dir=args.workdir))
    try:
        print(f"== {args.items:,} items: {source}", flush=True)
        flat, add_s = filled(work / "flat", "flat", codes, meta)
        stats = flat.stats()["attribute_index"]
        out["flat_add_us_per_item"] = add_s / args.items * 1e6
        out["attribute_index"] = stats
        print(f"  adds: {out['flat_add_us_per_item']:.1f} us per item (100k per call); attribute "
              f"index {stats['memory_bytes'] / 1e6:.1f} MB + codes {stats['code_bytes'] / 1e6:.1f} MB",
              flush=True)
        flat.close()
        for label, drop in (("loaded", False), ("rebuilt", True)):
            if drop:
                (work / "flat" / "attributes.snapshot").unlink()
            start = time.perf_counter()
            from crossbit.indexer import open_index

            flat = open_index(work / "flat", 64, "flat", snapshot_interval=0)
            out[f"open_{label}_s"] = time.perf_counter() - start
            print(f"  open ({label}): {out[f'open_{label}_s']:.2f} s", flush=True)
            if not drop:
                flat.close()
        bench_flat(flat, queries, exprs, args, out)
        if "scroll" not in args.skip:
            bench_scroll(flat, out)
        bench_adds(work / "adds", codes, meta, out)
        for kind, options in (("ivf", {"nlist": 4096, "train_size": 300_000, "nprobe": 16}),
                              ("hnsw", {})):
            if kind in args.skip:
                continue
            index, secs = filled(work / kind, kind, codes, meta, **options)
            print(f"  {kind}: built in {secs:.0f} s", flush=True)
            bench_approx(index, flat, queries, exprs, kind, out)
            index.close()
            shutil.rmtree(work / kind, ignore_errors=True)
        if "milvus" not in args.skip:
            bench_milvus(codes, meta, queries, exprs, args, out)
        flat.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    Path(args.out).write_text(json.dumps(out, indent=1, default=str))
    from filter_plot import plot

    plot(out, Path(args.out).with_suffix(".png"))
    print(f"wrote {args.out} and its plot", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
