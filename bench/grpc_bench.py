"""End-to-end service benchmarks over gRPC on loopback (issue 5's figures 1 to 3, and batching).

1. Text search against 1M indexed codes (with their float embeddings, so re-ranking reads
   real vectors): queries/s and p50/p99 at concurrency 1, 8 and 64 (closed loop: each
   worker sends its next query when the last is answered, like ghz without --rps), and
   at a fixed 200 queries/s offered by 64 workers (like ghz --rps 200 -c 64). The server
   is `crossbit serve` in its own process, once per text runtime; the load generator is
   `crossbit load`'s asyncio engine in this process; queries are the 5,000 Flickr8k dev
   captions (the built-in 16 without the dataset).
2. Search by code over gRPC against the same index called in-process, batch 1 and 32.
3. Image ingestion through streaming AddImages (224x224 JPEGs): images/s.
4. Micro-batching on (max_batch 16) and off (max_batch 1) at concurrency 64.

Writes bench/results/grpc_bench.json.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from index_bench import interleaved, realistic_items  # noqa: E402


def jpegs_224(n: int) -> list[bytes]:
    from PIL import Image

    from crossbit.server.demo.sample_photos import sample_photos

    out = []
    for data in list(sample_photos().values()):
        image = Image.open(io.BytesIO(data)).convert("RGB").resize((224, 224))
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return [out[i % len(out)] for i in range(n)]


def dev_captions(flickr: Path) -> list[str] | None:
    if not (flickr / "captions.csv").exists() or not (flickr / "dev.txt").exists():
        return None
    dev = set((flickr / "dev.txt").read_text().split())
    with open(flickr / "captions.csv", newline="") as f:
        return [row["caption"] for row in csv.DictReader(f) if row["image"] in dev]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """`crossbit serve` in a child process; CPU seconds read from /proc around each run."""

    def __init__(self, data: Path, *flags: str):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "crossbit", "serve", "--data", str(data), "--port",
               str(self.port), "--snapshot-interval", "0", *flags]
        self.log = open(data / f"serve-{self.port}.log", "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        from crossbit.client import Client

        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: see {self.log.name}")
            try:
                with Client(self.address, timeout=2, retries=0) as c:
                    c.stats()
                return
            except Exception:
                time.sleep(1)
        raise RuntimeError("server did not start in 300 s")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def load_run(server: ServeProcess, captions, seconds: float, **kw) -> dict:
    from crossbit.server.load.generator import run_load

    cpu = server.cpu_seconds()
    s = run_load(server.address, "search", total=10**7, duration=seconds, captions=captions,
                 **kw).summary()
    s["server_cpu_ms_per_query"] = 1000 * (server.cpu_seconds() - cpu) / max(s["count"], 1)
    print(f"  c={kw['concurrency']}{' rps=' + str(kw['rps']) if kw.get('rps') else ''}: "
          f"{s['rps']:.0f} q/s, p50 {s['latency_ms']['p50']:.1f} ms, p99 "
          f"{s['latency_ms']['p99']:.1f} ms, server CPU {s['server_cpu_ms_per_query']:.1f} "
          f"ms/query, codes {s['status_codes']}", flush=True)
    return s


GHZ = Path(__file__).resolve().parent.parent.parent / "shared" / "tools" / "ghz"


def ghz_run(server: ServeProcess, captions, seconds: float, concurrency: int,
            rps: int = 0) -> dict | None:
    """The same load with ghz (the operators' tool), one caption per call round-robin; None
    where ghz is not at hand. Reads the status codes from -O json (ghz exits 0 on errors)."""
    if not GHZ.exists():
        return None
    body = [{"text": t, "top_k": 10} for t in (captions or ["two dogs playing in the snow"])[:2000]]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(body, f)
    cpu = server.cpu_seconds()
    n = int(seconds * (rps or 400))
    args = [str(GHZ), "--insecure", "--cpus", "1", "-O", "json", "--call",
            "crossbit.v1.Retrieval.Search", "-D", f.name, "-c", str(concurrency), "-n", str(n),
            "--connections", "1", server.address]
    if rps:
        args[1:1] = ["--rps", str(rps)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=seconds * 10 + 120)
    os.unlink(f.name)
    report = json.loads(done.stdout)
    lat = {d["percentage"]: d["latency"] / 1e6 for d in report.get("latencyDistribution") or []}
    s = {"tool": "ghz v0.121.0", "count": report["count"], "rps": report["rps"],
         "latency_ms": {"average": report["average"] / 1e6, "p50": lat.get(50), "p99": lat.get(99)},
         "status_codes": report["statusCodeDistribution"],
         "server_cpu_ms_per_query": 1000 * (server.cpu_seconds() - cpu) / max(report["count"], 1)}
    print(f"  ghz c={concurrency}{' rps=' + str(rps) if rps else ''}: {s['rps']:.0f} q/s, p50 "
          f"{s['latency_ms']['p50']:.1f} ms, p99 {s['latency_ms']['p99']:.1f} ms, codes "
          f"{s['status_codes']}", flush=True)
    return s


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--flickr8k", default=os.environ.get("CROSSBIT_FLICKR8K",
                                                        "../shared/datasets/flickr8k"))
    p.add_argument("--seconds", type=float, default=20.0, help="length of each load run")
    p.add_argument("--out", default="bench/results/grpc_bench.json")
    p.add_argument("--text-runtimes", default="auto,int8",
                   help="comma-separated text runtimes to serve in turn (auto, onnx, int8, torch)")
    p.add_argument("--index", default="auto",
                   help="index kind for the text search runs (auto: the server's default, "
                        "IVF at 1M on a CPU; flat: exact)")
    p.add_argument("--parts", default="text,code,ingest,batching",
                   help="comma-separated parts to run: text, code, ingest, batching")
    p.add_argument("--data", help="reuse the 1M-item data folder of an earlier run "
                                  "(printed at the start) instead of building one")
    args = p.parse_args(argv)
    parts = set(args.parts.split(","))

    from crossbit.indexer import open_index
    from crossbit.server.config import ServerConfig
    from crossbit.server.load.generator import run_load
    from crossbit.server.rpc.app import create_server

    flickr = Path(args.flickr8k)
    captions = dev_captions(flickr)
    codes, embeddings, queries, source = realistic_items(args.n, 64, flickr, 0.1)
    if args.data:
        data = Path(args.data)
    else:
        data = Path(tempfile.mkdtemp(prefix="crossbit-grpc-"))
        with open_index(data / "images", 64, args.index, snapshot_interval=0,
                        synchronous="OFF") as index:
            for s in range(0, args.n, 100_000):
                index.add(codes[s:s + 100_000], embeddings=embeddings[s:s + 100_000])
    print(f"data: {data}", flush=True)
    del codes, embeddings
    result: dict = {
        "codes": source + "; each with its photo's float embedding plus noise", "n": args.n,
        "bits": 64, "index": args.index,
        "queries": "5,000 Flickr8k dev captions" if captions else "16 built-in captions",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "how": "server: crossbit serve in its own process (default settings: re-ranking of a "
               "100-item Hamming shortlist, max_batch 16, 2 text workers); load: crossbit "
               "load's asyncio engine in this process, one HTTP/2 connection, top_k 10"}

    out = Path(args.out)
    if out.exists():  # parts not run keep their earlier figures
        result = {**json.loads(out.read_text()), **result}

    def save() -> None:
        out.write_text(json.dumps(result, indent=2) + "\n")

    def in_process_server(kind: str):
        return create_server(ServerConfig(port=0, data=str(data), index=kind,
                                          snapshot_interval=0))

    result.setdefault("runs", []).append({"parts": sorted(parts), "date": result["date"]})

    # 1. text search end to end, one server process per text runtime
    runtimes = args.text_runtimes.split(",") if "text" in parts else []
    if runtimes:
        result["text_search"] = {}
    for runtime in runtimes:
        print(f"text search, --text-runtime {runtime}, index {args.index}:", flush=True)
        server = ServeProcess(data, "--index", args.index, "--text-runtime", runtime)
        runs = result["text_search"][runtime] = {}
        try:
            for c in (1, 8, 64):
                runs[f"c{c}"] = load_run(server, captions, args.seconds, concurrency=c)
            runs["c64_rps200"] = load_run(server, captions, args.seconds, concurrency=64,
                                          rps=200)
            # the same two loads with ghz, on the same server in the same run
            runs["ghz_c64"] = ghz_run(server, captions, args.seconds, 64)
            runs["ghz_c64_rps200"] = ghz_run(server, captions, args.seconds, 64, rps=200)
        finally:
            server.stop()
    save()
    if "code" in parts:
        # 2. search by code: gRPC vs in-process on the same index object; flat (exact) is
        # the issue's comparison, the text runs' index kind beside it when it differs
        for kind in dict.fromkeys(["flat", args.index]):
            running = in_process_server(kind)
            try:
                code_search(running, queries, result, "" if kind == "flat" else f"{kind}_")
            finally:
                running.stop(2.0)
        save()
    if "ingest" in parts:
        # 3. streaming ingestion of 224x224 JPEGs
        running = in_process_server(args.index)
        try:
            r = run_load(f"127.0.0.1:{running.port}", "add-images", concurrency=2,
                         total=10**6, duration=args.seconds, stream_images=32,
                         photos=jpegs_224(32))
            result["ingest"] = s = r.summary()
            print(f"ingestion: {s['items_per_s']:.1f} images/s ({s['status_codes']})",
                  flush=True)
        finally:
            running.stop(2.0)
        save()
    if "batching" not in parts:
        return 0

    # 4. micro-batching on and off at concurrency 64 (server processes, default runtime)
    result["batching"] = {}
    for max_batch in (16, 1):
        print(f"max_batch {max_batch}:", flush=True)
        server = ServeProcess(data, "--index", args.index, "--max-batch", str(max_batch))
        try:
            result["batching"][f"max_batch{max_batch}"] = load_run(
                server, captions, args.seconds, concurrency=64)
        finally:
            server.stop()
    on, off = (result["batching"][f"max_batch{b}"]["rps"] for b in (16, 1))
    result["batching"]["throughput_ratio_on_to_off"] = on / off
    save()
    print(f"written to {args.out}")
    return 0


def code_search(running, queries, result: dict, prefix: str) -> None:
    """Search by code over gRPC and in-process on the served index, batch 1 and 32."""
    from crossbit.client import Client

    index = running.core.indexes["image"]
    kind = index.stats()["kind"]
    with Client(f"127.0.0.1:{running.port}") as client:
        for batch in (1, 32):
            qs = [{"code": q.tobytes(), "top_k": 10, "rerank": False} for q in queries[:batch]]

            def over_grpc(_q, qs=qs, batch=batch):
                if batch == 1:
                    client.search(**qs[0])
                else:
                    client.search_batch(qs)

            def in_process(q, batch=batch):
                index.search(q[:batch], 10)

            t_grpc, t_local = interleaved(over_grpc, in_process, queries, batch,
                                          rounds=101 if batch == 1 else 31)
            result[f"code_search_{prefix}batch{batch}"] = r = {
                "index": kind, "grpc_qps": batch / t_grpc, "in_process_qps": batch / t_local,
                "ratio_grpc_to_in_process": t_local / t_grpc}
            print(f"search by code ({kind}), batch {batch}: gRPC {r['grpc_qps']:.0f} q/s, "
                  f"in-process {r['in_process_qps']:.0f} q/s, ratio "
                  f"{r['ratio_grpc_to_in_process']:.2f}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
