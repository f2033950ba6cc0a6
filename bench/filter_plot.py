"""The plot of bench/filter_bench.py: time against the unfiltered exact scan, and the approximate
kinds' recall and speed, per selectivity."""

from __future__ import annotations

from pathlib import Path


def plot(out: dict, path: Path) -> None:
    """Write the PNG of a filter_bench result dict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, mid, right) = plt.subplots(1, 3, figsize=(17, 5))
    rows = sorted(out["flat"].values(), key=lambda r: -r["selectivity"])
    x = [max(r["selectivity"], 1e-5) for r in rows]
    for key, style, label in (("eval_cold_ratio", "o", "filter evaluation, cold"),
                              ("eval_warm_ratio", "x", "filter evaluation, cached"),
                              ("search_cold_ratio", "s", "filtered exact search, cold"),
                              ("search_warm_ratio", "D", "filtered exact search, cached filter")):
        left.plot(x, [r[key] for r in rows], style, label=label, alpha=0.8)
    for y, label in ((1.1, "target: search <= 1.1x"), (0.2, "target at 1%: < 0.2x"),
                     (0.1, "target: evaluation < 0.1x")):
        left.axhline(y, color="grey", lw=0.8, ls="--")
        left.text(x[-1], y * 1.05, label, fontsize=7, color="grey")
    left.set(xscale="log", yscale="log", xlabel="selectivity (share of items matching)",
             ylabel="time / unfiltered exact scan (one query)",
             title=f"{out['items']:,} items, 64-bit codes, 1 thread (2 filters per selectivity)")
    left.invert_xaxis()
    left.legend(fontsize=7)
    for name, marker in (("ivf", "o"), ("hnsw", "s"), ("milvus", "^")):
        data = {k: v for k, v in out.get(name, {}).items()
                if isinstance(v, dict) and v.get("recall") is not None}
        if not data:
            continue
        pts = sorted(data.values(), key=lambda r: -r["selectivity"])
        xs = [max(r["selectivity"], 1e-5) for r in pts]
        label = name if name != "milvus" else f"milvus ({out['milvus']['items']:,} items)"
        mid.plot(xs, [r["recall"] for r in pts], marker + "-", label=label)
        right.plot(xs, [r["qps"] for r in pts], marker + "-", label=label)
    flat_qps = [1000 / r["search_warm_ms"] for r in rows]
    right.plot(x, flat_qps, "k.-", label="flat (exact), cached filter")
    mid.axhline(0.95, color="grey", lw=0.8, ls="--")
    mid.set(xscale="log", xlabel="selectivity", ylabel="recall@10 against the exact filtered answer",
            title="approximate kinds under a filter", ylim=(0.8, 1.01))
    right.set(xscale="log", yscale="log", xlabel="selectivity", ylabel="queries/s (one at a time)",
              title="speed per selectivity")
    for ax in (mid, right):
        ax.invert_xaxis()
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
