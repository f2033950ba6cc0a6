"""GPU benchmark: exact Hamming search in torch on CUDA against FAISS's CPU flat, and the encoders on CUDA.

Runs where torch sees a CUDA device; says so and exits otherwise. The search backend is
crossbit's ``gpu`` kind as used when faiss has no GPU build (``TorchHammingBackend``:
codes as +-1 float16, one matrix product, top-k). Its distances are checked against
FAISS ``IndexBinaryFlat`` on the same codes before anything is timed.

The text encoder is timed with MiniLM-L6's architecture; pass --text-model DIR to use real
weights (speed does not depend on the weight values; random weights are used otherwise and
the output says so).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np


def sync():
    import torch

    torch.cuda.synchronize()


def items_per_s(fn, items: int, warmup: int = 3, reps: int = 10) -> float:
    """Items per second of ``fn()`` (one batch of ``items``) over ``reps`` synced calls."""
    for _ in range(warmup):
        fn()
    sync()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    sync()
    return reps * items / (time.perf_counter() - start)


def codes_around_centres(n, bits, rng, flip=0.1, centres=7000):
    c = rng.integers(0, 2, size=(centres, bits), dtype=np.uint8)
    out = np.empty((n, bits // 8), np.uint8)
    for s in range(0, n, 1_000_000):
        m = min(1_000_000, n - s)
        out[s:s + m] = np.packbits(c[rng.integers(0, centres, m)] ^ (rng.random((m, bits)) < flip),
                                   axis=1)
    return out


def time_calls(fn, queries, batch, repeat, gpu):
    times = []
    for r in range(repeat):
        q = queries[(r * batch) % len(queries):][:batch]
        if len(q) < batch:
            q = queries[:batch]
        start = time.perf_counter()
        fn(q)
        if gpu:
            sync()
        times.append(time.perf_counter() - start)
    return times


def bench_search(n, bits, results, faiss_threads):
    import torch

    from crossbit.indexer.backends_gpu import TorchHammingBackend

    rng = np.random.default_rng(bits)
    codes = codes_around_centres(n, bits, rng)
    queries = codes_around_centres(4096, bits, rng)
    backend = TorchHammingBackend(bits, device="cuda", chunk=1 << 22)
    start = time.perf_counter()
    backend.add(codes, np.arange(n, dtype=np.int64))
    sync()
    add_s = time.perf_counter() - start
    row = {"n": n, "bits": bits, "gpu_add_s": add_s,
           "gpu_memory_gb": torch.cuda.memory_allocated() / 1e9}
    try:
        import faiss

        faiss.omp_set_num_threads(faiss_threads)
        flat = faiss.IndexBinaryFlat(bits)
        flat.add(codes)
        d_ref, _ = flat.search(queries[:64], 10)
        _, d_gpu = backend.search(queries[:64], 10)
        row["exact_vs_faiss"] = bool(np.array_equal(d_ref, d_gpu))
        if not row["exact_vs_faiss"]:
            raise SystemExit("torch Hamming distances differ from FAISS: not timing")
    except ImportError:
        flat = None
        row["exact_vs_faiss"] = "faiss not installed here"
    backend.search(queries[:32], 10)  # warm-up
    sync()
    for batch, repeat in ((1, 200), (32, 50), (1024, 10)):
        t = time_calls(lambda q: backend.search(q, 10), queries, batch, repeat, True)
        row[f"gpu_batch{batch}"] = {"p50_ms": 1000 * float(np.median(t)),
                                    "p99_ms": 1000 * float(np.percentile(t, 99)),
                                    "qps": batch / float(np.median(t))}
        if flat is not None:
            rep = max(3, repeat // (10 if n >= 10_000_000 else 2))
            if batch == 1:
                faiss.omp_set_num_threads(1)
            t = time_calls(lambda q: flat.search(q, 10), queries, batch, rep, False)
            faiss.omp_set_num_threads(faiss_threads)
            row[f"cpu_faiss_batch{batch}"] = {"p50_ms": 1000 * float(np.median(t)),
                                              "qps": batch / float(np.median(t))}
            row[f"speedup_batch{batch}"] = row[f"gpu_batch{batch}"]["qps"] / \
                row[f"cpu_faiss_batch{batch}"]["qps"]
        print(json.dumps({k: v for k, v in row.items() if str(batch) in k}), flush=True)
    results.append(row)
    torch.cuda.empty_cache()


def bench_encoders(text_model_dir, out):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from crossbit.encoders.backbones import create_backbone

    device = torch.device("cuda")
    net, _ = create_backbone("efficientnet-lite0")
    net.to(device).eval()
    x = torch.randn(128, 3, 224, 224, device=device)
    with torch.no_grad():
        out["image_backbone_images_per_s_batch128_fp32"] = items_per_s(lambda: net(x), 128)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        out["image_backbone_images_per_s_batch128_fp16"] = items_per_s(lambda: net(x), 128,
                                                                       warmup=1)
    cfg_dir = Path(text_model_dir)
    config = BertConfig.from_pretrained(cfg_dir)
    if (cfg_dir / "model.safetensors").exists():
        model = BertModel.from_pretrained(cfg_dir)
        out["text_weights"] = "real MiniLM-L6 weights"
    else:
        model = BertModel(config)
        out["text_weights"] = "random weights, MiniLM-L6 architecture (speed only)"
    model.to(device).eval()
    tok = AutoTokenizer.from_pretrained(cfg_dir)
    texts = ["two dogs are playing in the snow near a red fence"] * 256
    batch = {k: v.to(device) for k, v in tok(texts, return_tensors="pt", padding=True).items()}
    with torch.no_grad():
        out["text_encoder_texts_per_s_batch256"] = items_per_s(lambda: model(**batch), 256)
        one = {k: v[:1] for k, v in batch.items()}
        times = []
        for _ in range(50):
            start = time.perf_counter()
            model(**one)
            sync()
            times.append(time.perf_counter() - start)
        out["text_encoder_single_query_ms_p50"] = 1000 * float(np.median(times))
    print(json.dumps(out), flush=True)


def bench_text_e2e(text_model_dir, out, n_codes=1_000_000, bits=64):
    """In-process text query path on the GPU: tokenize, MiniLM-L6 architecture, hash head,
    sign, torch Hamming top-10 over ``n_codes`` codes. No gRPC (the service's dependencies
    were not carried to the GPU machine)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from crossbit.encoders.codes import pack_signs
    from crossbit.encoders.heads import HashHead
    from crossbit.indexer.backends_gpu import TorchHammingBackend

    device = torch.device("cuda")
    cfg_dir = Path(text_model_dir)
    model = BertModel(BertConfig.from_pretrained(cfg_dir)).to(device).eval()
    tok = AutoTokenizer.from_pretrained(cfg_dir)
    head = HashHead(384, bits).to(device).eval()
    rng = np.random.default_rng(0)
    index = TorchHammingBackend(bits, device="cuda")
    index.add(codes_around_centres(n_codes, bits, rng), np.arange(n_codes, dtype=np.int64))
    captions = ["two dogs playing in the snow", "a man rides a bicycle down a dirt path",
                "a child in a red coat climbs a rock", "people walking on a busy street"]

    def query(texts):
        with torch.no_grad():
            batch = {k: v.to(device) for k, v in tok(texts, return_tensors="pt",
                                                     padding=True).items()}
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            tanh, _ = head(pooled)
            return index.search(pack_signs(tanh.cpu().numpy()), 10)

    for batch in (1, 32, 256):
        texts = [captions[i % len(captions)] for i in range(batch)]
        query(texts)
        sync()
        times = []
        for _ in range(20 if batch < 256 else 5):
            start = time.perf_counter()
            query(texts)
            sync()
            times.append(time.perf_counter() - start)
        out[f"text_queries_per_s_batch{batch}"] = batch / float(np.median(times))
        out[f"text_query_ms_p50_batch{batch}"] = 1000 * float(np.median(times))
    out["text_e2e_note"] = (f"in-process, no gRPC; MiniLM-L6 architecture with random weights, "
                            f"random hash head, {n_codes:,} x {bits}-bit codes on the GPU")
    print(json.dumps(out), flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--bits", type=int, nargs="+", default=[64, 128])
    p.add_argument("--text-model", default=".gpu/minilm")
    p.add_argument("--out", default=os.path.join(os.environ.get("OUT", "bench/results"),
                                                 "gpu_bench.json"))
    p.add_argument("--faiss-threads", type=int, default=os.cpu_count())
    p.add_argument("--only-text-e2e", action="store_true")
    args = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("skipped: torch sees no CUDA device")
        return 0
    result = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
              "cpu": f"{platform.machine()}, {os.cpu_count()} cores",
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "python": sys.version.split()[0], "search": [], "encoders": {}}
    if args.only_text_e2e:
        bench_text_e2e(args.text_model, result["encoders"])
        Path(args.out).write_text(json.dumps(result, indent=2))
        return 0
    for n in args.sizes:
        for bits in args.bits:
            bench_search(n, bits, result["search"], args.faiss_threads)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=2))
    try:
        bench_encoders(args.text_model, result["encoders"])
    except Exception as exc:  # report, keep the search figures
        result["encoders"]["error"] = repr(exc)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
