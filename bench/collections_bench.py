"""What collections cost: one ``crossbit serve`` process holding 1, 10 and 100 small collections on
the default model (resident memory and start-up time, restarted on the filled data directory),
against one server per collection; and text search through 10 collections against one.

Each collection holds ``--texts`` texts. Memory is the server's VmRSS once it answers health
checks (and VmHWM, its peak); the figure per extra collection is (RSS(N) - RSS(1)) / (N - 1).
Search speed: closed-loop text searches from ``--clients`` threads for ``--seconds``, spread over
the collections, alternating the 1- and 10-collection servers ``--rounds`` times (medians).
Writes bench/results/collections_bench.json.
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

from crossbit.client import Client


def status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(data: str) -> tuple[subprocess.Popen, int, float]:
    port = free_port()
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "crossbit", "serve", "--data", data, "--port",
                             str(port), "--index", "flat", "--log-level", "WARNING"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if f":{port}" not in line:
        raise RuntimeError(f"server did not start: {line}")
    with Client(f"127.0.0.1:{port}", retries=0) as c:
        while c.health() != "SERVING":
            time.sleep(0.05)
    return proc, port, time.perf_counter() - start


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(60)


def filled(n: int, texts: int, root: str) -> str:
    """A data directory with ``n`` collections (default and n - 1 others) of ``texts`` texts."""
    data = os.path.join(root, f"c{n}")
    proc, port, _ = serve(data)
    try:
        with Client(f"127.0.0.1:{port}", timeout=120) as c:
            for k in range(n):
                name = "default" if k == 0 else f"c{k:03d}"
                if k:
                    c.create_collection(name)
                c.add_texts([f"a photo of thing {i} in catalog {k}" for i in range(texts)],
                            collection=name)
    finally:
        stop(proc)
    return data


def measure(data: str) -> dict:
    proc, port, started = serve(data)
    time.sleep(2.0)  # background threads settle
    out = {"start_s": round(started, 2), "rss_mb": round(status_mb(proc.pid, "VmRSS"), 1),
           "peak_mb": round(status_mb(proc.pid, "VmHWM"), 1),
           "threads": len(os.listdir(f"/proc/{proc.pid}/task"))}
    stop(proc)
    return out


def search_rate(port: int, collections: list[str], clients: int, seconds: float) -> float:
    done, counts = threading.Event(), [0] * clients

    def loop(n):
        with Client(f"127.0.0.1:{port}") as c:
            k = n
            while not done.is_set():
                c.search(text="a photo of thing 7", modality="text", top_k=10,
                         collection=collections[k % len(collections)])
                counts[n] += 1
                k += 1

    threads = [threading.Thread(target=loop, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    done.set()
    for t in threads:
        t.join()
    return sum(counts) / seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 100])
    p.add_argument("--texts", type=int, default=50)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="bench/results/collections_bench.json")
    args = p.parse_args(argv)
    root = tempfile.mkdtemp(prefix="crossbit-collections-")
    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, "
              f"{os.cpu_count()} cores", "texts_per_collection": args.texts, "servers": {}}
    dirs = {}
    for n in args.sizes:
        dirs[n] = filled(n, args.texts, root)
        result["servers"][n] = measure(dirs[n])
        print(f"{n:4d} collections: {result['servers'][n]}", flush=True)
    base = result["servers"][min(args.sizes)]
    for n in args.sizes:
        if n > 1:
            s = result["servers"][n]
            s["mb_per_extra_collection"] = round((s["rss_mb"] - base["rss_mb"]) / (n - 1), 1)
            s["one_server_each_mb"] = round(n * base["rss_mb"], 1)
            print(f"{n} collections: {s['mb_per_extra_collection']} MB per extra collection; one "
                  f"server each would take {s['one_server_each_mb']} MB", flush=True)
    if 10 in dirs:
        rates = {"1": [], "10": []}
        procs = {}
        for name, data in (("1", dirs[1]), ("10", dirs[10])):
            procs[name] = serve(data)
        for _ in range(args.rounds):
            for name in ("1", "10"):
                colls = ["default"] if name == "1" else ["default"] + [f"c{k:03d}" for k in
                                                                       range(1, 10)]
                rates[name].append(search_rate(procs[name][1], colls, args.clients,
                                               args.seconds))
        for proc, _, _ in procs.values():
            stop(proc)
        med = {k: statistics.median(v) for k, v in rates.items()}
        result["search_qps"] = {"runs": rates, "median": med,
                                "ratio_10_to_1": round(med["10"] / med["1"], 3),
                                "clients": args.clients, "seconds": args.seconds}
        print(f"text search, {args.clients} clients: 1 collection {med['1']:.0f} q/s, 10 "
              f"collections {med['10']:.0f} q/s (ratio {med['10'] / med['1']:.3f})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
