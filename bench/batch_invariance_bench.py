"""What codes that do not depend on the batch cost: builds A (before) and B (after), alternating.

Each build is a PYTHONPATH whose ``crossbit`` package is that build's code (see
bench/ab_servers.py). Per round, A then B or B then A (ABBA, so neither always goes
second), each in fresh processes:

1. The encoders in process, loaded as each build's server loads them (``load_model``:
   ONNX int8 MiniLM on one thread, ONNX EfficientNet-Lite0; the build's torch threads):
   texts/s and CPU time per text over the captions in batches of 16 (the micro-batcher's
   largest) and of 64 (``crossbit reindex``), and images/s and CPU time per image over 64
   photos (224x224 JPEG bytes, decoded in the call) in batches of 16. On a shared machine
   the CPU times move less than the rates.
2. Text search over gRPC as in BENCHMARKS.md (2026-12-01): ``crossbit serve --index flat``
   with its default settings in its own process over ``--n`` 64-bit codes with float
   embeddings (index_bench's clustered codes around 7,000 random centres, 10% of bits
   flipped: the index's work is the same for both builds); ghz v0.121.0 ``--cpus 1
   -c 64`` closed loop, one caption per call round-robin (2,000 captions), ``-n`` 8,000
   calls after a 500-call warm-up.
3. Once (round 0): each build's int8 codes and embeddings of the captions, each alone,
   against ONNX fp32's: the share of identical code bits and the embeddings' cosine.

Captions: the Flickr8k dev captions, else MS-COCO val2017 captions, else built-in ones.
Figures are medians over rounds. Writes bench/results/batch_invariance.json.

    python bench/batch_invariance_bench.py --a /tmp/ab/A --b /tmp/ab/B --rounds 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from grpc_bench import ServeProcess, dev_captions  # noqa: E402

ENCODER_SCRIPT = r"""
import io, json, sys, time
import numpy as np
from PIL import Image
import torch
from crossbit.server.app import load_model
from crossbit.server.config import ServerConfig
from crossbit.server.sample_photos import sample_photos

captions = json.load(open(sys.argv[1]))
model = load_model(ServerConfig())  # as this build's server loads it (runtimes, threads)
out = {"text_runtime": getattr(model.text_runtime, "precision", "torch"),
       "torch_threads": torch.get_num_threads()}
model.encode_texts(captions[:64], batch_size=16)  # warm-up
for batch in (16, 64):
    t, cpu = time.perf_counter(), time.process_time()
    for s in range(0, len(captions), batch):
        model.encode_texts(captions[s:s + batch], batch_size=batch)
    out[f"texts_per_s_batch{batch}"] = len(captions) / (time.perf_counter() - t)
    out[f"cpu_ms_per_text_batch{batch}"] = 1000 * (time.process_time() - cpu) / len(captions)
jpegs = []
for data in sample_photos().values():
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").resize((224, 224)).save(buf, "JPEG", quality=90)
    jpegs.append(buf.getvalue())
photos = [jpegs[i % len(jpegs)] for i in range(64)]
model.encode_images(photos[:16], batch_size=16)  # warm-up
t, cpu = time.perf_counter(), time.process_time()
for s in range(0, 64, 16):
    model.encode_images(photos[s:s + 16], batch_size=16)
out["images_per_s_batch16"] = 64 / (time.perf_counter() - t)
out["cpu_ms_per_image_batch16"] = 1000 * (time.process_time() - cpu) / 64
if sys.argv[2] != "-":  # each caption's code and embedding alone, int8 then ONNX fp32
    from crossbit.encoders.runtime import use_text_runtime
    runs = {}
    for runtime in ("int8", "onnx"):
        use_text_runtime(model, runtime, 1)
        encoded = [model.encode_texts([c]) for c in captions]
        runs[f"{runtime}_codes"] = np.concatenate([e.codes for e in encoded])
        runs[f"{runtime}_embeddings"] = np.concatenate([e.embeddings for e in encoded])
    np.savez(sys.argv[2], **runs)
print(json.dumps(out))
"""

FALLBACK = ["two dogs playing in the snow", "a man rides a bike down a city street",
            "a bowl of soup on a wooden table", "children play football in a park"]


def load_captions(flickr8k: str, coco: str, n: int) -> tuple[list[str], str]:
    """The first ``n`` Flickr8k dev captions (what grpc_bench.py's ghz runs send), else ``n``
    spread over a COCO captions file, else the built-in four; and where they came from."""
    found = dev_captions(Path(flickr8k))
    if found:
        return found[:n], f"Flickr8k dev captions ({flickr8k})"
    if Path(coco).exists():
        notes = json.loads(Path(coco).read_text())["annotations"]
        step = max(1, len(notes) // n)
        return [a["caption"].strip() for a in notes[::step]][:n], f"COCO val2017 captions ({coco})"
    return [FALLBACK[i % len(FALLBACK)] for i in range(n)], "built-in captions"


def shared(relative: str) -> str:
    """A path under the shared folder beside the project (../shared from the main checkout,
    ../../shared from a worktree under wt/); the first form where neither exists."""
    root = Path(__file__).resolve().parent.parent
    for base in (root.parent, root.parent.parent):
        if (base / "shared" / relative).exists():
            return str(base / "shared" / relative)
    return f"../shared/{relative}"


def find_ghz(given: str | None) -> Path:
    path = Path(given or shared("tools/ghz"))
    if not path.exists():
        raise SystemExit(f"ghz not found at {path}: pass --ghz PATH")
    return path


def ghz(path: Path, address: str, body: str, calls: int) -> dict:
    """One closed-loop ghz run at c=64; its summary (ghz exits 0 on failed calls: the status
    codes are read from -O json)."""
    done = subprocess.run([str(path), "--insecure", "--cpus", "1", "-O", "json", "--call",
                           "crossbit.v1.Retrieval.Search", "-D", body, "-c", "64", "-n",
                           str(calls), "--connections", "1", address],
                          capture_output=True, text=True, timeout=900)
    report = json.loads(done.stdout)
    lat = {d["percentage"]: d["latency"] / 1e6 for d in report.get("latencyDistribution") or []}
    return {"count": report["count"], "rps": report["rps"], "p50_ms": lat.get(50),
            "p99_ms": lat.get(99), "status_codes": report["statusCodeDistribution"]}


def build_data(folder: Path, n: int) -> None:
    from crossbit.indexer import open_index

    from index_bench import realistic_items

    codes, embeddings, _, source = realistic_items(n, 64, Path("/nonexistent"), 0.1)
    with open_index(folder / "images", 64, "flat", snapshot_interval=0,
                    synchronous="OFF") as index:
        for s in range(0, n, 100_000):
            index.add(codes[s:s + 100_000], embeddings=embeddings[s:s + 100_000])
    (folder / "source.txt").write_text(source)


def run_side(side: str, pythonpath: str, args, data: Path, captions_file: str, body: str,
             ghz_path: Path, codes_file: str = "-") -> dict:
    env = {**os.environ, "PYTHONPATH": pythonpath}
    out: dict = {}
    if "encoder" in args.parts:
        done = subprocess.run([sys.executable, "-c", ENCODER_SCRIPT, captions_file, codes_file],
                              env=env, capture_output=True, text=True, check=True)
        out["encoder"] = json.loads(done.stdout.strip().splitlines()[-1])
    if "ghz" in args.parts:
        old = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = pythonpath  # ServeProcess's child inherits it
        try:
            server = ServeProcess(data, "--index", "flat", "--log-level", "WARNING")
        finally:
            os.environ.pop("PYTHONPATH") if old is None else os.environ.update(PYTHONPATH=old)
        try:
            ghz(ghz_path, server.address, body, 500)  # warm-up
            cpu = server.cpu_seconds()
            out["ghz_c64"] = g = ghz(ghz_path, server.address, body, args.calls)
            g["server_cpu_ms_per_query"] = 1000 * (server.cpu_seconds() - cpu) / max(g["count"], 1)
        finally:
            server.stop()
    print(f"  {side}: {json.dumps(out)}", flush=True)
    return out


def agreement(work: Path) -> dict:
    """Each build's int8 codes and embeddings (each caption alone) against ONNX fp32 (the
    features the heads were trained on; B's fp32, equal to A's to float rounding)."""
    a, b = np.load(work / "codes-A.npz"), np.load(work / "codes-B.npz")
    out = {}
    for side, z in (("A", a), ("B", b)):
        same = np.unpackbits(z["int8_codes"]) == np.unpackbits(b["onnx_codes"])
        cosine = (z["int8_embeddings"] * b["onnx_embeddings"]).sum(1)
        out[side] = {"identical_bits": float(same.mean()), "embedding_cosine_mean":
                     float(cosine.mean()), "embedding_cosine_min": float(cosine.min())}
    fp32 = np.unpackbits(a["onnx_codes"]) == np.unpackbits(b["onnx_codes"])
    out["fp32_A_vs_B_identical_bits"] = float(fp32.mean())
    return out


def median_of(runs: list[dict], *path: str) -> float:
    values = []
    for r in runs:
        for key in path:
            r = r[key]
        values.append(r)
    return statistics.median(values)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", required=True, help="PYTHONPATH of build A (before)")
    p.add_argument("--b", required=True, help="PYTHONPATH of build B (after)")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--n", type=int, default=1_000_000, help="codes in the flat index")
    p.add_argument("--calls", type=int, default=8000, help="ghz calls per measured run")
    p.add_argument("--flickr8k", default=os.environ.get("CROSSBIT_FLICKR8K",
                                                        shared("datasets/flickr8k")))
    p.add_argument("--captions", default=os.environ.get(
        "CROSSBIT_COCO_CAPTIONS", shared("datasets/coco-captions/captions_val2017.json")),
        help="COCO captions, used where Flickr8k is not found")
    p.add_argument("--ghz", help="path of ghz (default: ../shared/tools/ghz)")
    p.add_argument("--parts", default="encoder,ghz")
    p.add_argument("--data", help="reuse a data folder of an earlier run")
    p.add_argument("--out", default="bench/results/batch_invariance.json")
    args = p.parse_args(argv)
    ghz_path = find_ghz(args.ghz) if "ghz" in args.parts else None
    work = Path(tempfile.mkdtemp(prefix="crossbit-inv-"))
    captions, source = load_captions(args.flickr8k, args.captions, 2000)
    print(f"{len(set(captions))} distinct captions: {source}", flush=True)
    captions_file, body = str(work / "captions.json"), str(work / "body.json")
    Path(captions_file).write_text(json.dumps(captions))
    Path(body).write_text(json.dumps([{"text": t, "top_k": 10} for t in captions]))
    data = Path(args.data) if args.data else work / "data"  # --data is kept
    if "ghz" in args.parts and not args.data:
        print(f"building {args.n} codes in {data} ...", flush=True)
        build_data(data, args.n)
    runs: dict = {"A": [], "B": []}
    for round_no in range(args.rounds):
        order = [("A", args.a), ("B", args.b)]
        for side, path in (order if round_no % 2 == 0 else order[::-1]):
            print(f"round {round_no} {side}", flush=True)
            codes = str(work / f"codes-{side}.npz") if round_no == 0 else "-"
            runs[side].append(run_side(side, path, args, data, captions_file, body, ghz_path,
                                       codes))
    summary: dict = {}
    for side in ("A", "B"):
        s = summary[side] = {}
        if "encoder" in args.parts:
            for key in ("texts_per_s_batch16", "texts_per_s_batch64", "images_per_s_batch16",
                        "cpu_ms_per_text_batch16", "cpu_ms_per_text_batch64",
                        "cpu_ms_per_image_batch16"):
                s[key] = median_of(runs[side], "encoder", key)
        if "ghz" in args.parts:
            for key in ("rps", "p50_ms", "p99_ms", "server_cpu_ms_per_query"):
                s[f"ghz_c64_{key}"] = median_of(runs[side], "ghz_c64", key)
    summary["B/A"] = {k: round(summary["B"][k] / summary["A"][k], 3) for k in summary["A"]}
    if "encoder" in args.parts:
        summary["int8_against_fp32"] = agreement(work)
    print(json.dumps(summary, indent=2), flush=True)
    result = {"what": "each item encoded alone (B) against batched runs (A); medians over "
                      "ABBA rounds", "a": args.a, "b": args.b, "rounds": args.rounds,
              "n_codes": args.n, "calls": args.calls,
              "captions": source,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "summary": summary, "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)  # not --data
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
