"""Text speed of the shipped models side by side: MiniLM (default) and MPNet (mpnet-64).

Per model, with its text runtime (auto: ONNX int8 for MiniLM, fp32 for MPNet): one caption at a time
(median ms over 200 Flickr8k dev captions), captions/s in batches of 64 (2,000 captions,
sorted by length as the server does), and text searches over gRPC with ghz (64 concurrent
calls, the 5,000 dev captions round-robin, 20 s) against a `crossbit serve --model NAME` in
its own process over 100,000 random codes (the encoder, not the index, is what differs).
Writes bench/results/text_models.json; the recall figures come from `crossbit evaluate` and
bench/rerank_bench.py (BENCHMARKS.md).
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
from grpc_bench import GHZ, ServeProcess, dev_captions, ghz_run  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="default,mpnet-64")
    p.add_argument("--flickr8k", default=os.environ.get("CROSSBIT_FLICKR8K",
                                                        "../shared/datasets/flickr8k"))
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--out", default="bench/results/text_models.json")
    args = p.parse_args(argv)
    from crossbit.encoders.model import HashModel
    from crossbit.encoders.runtime import use_text_runtime
    from crossbit.indexer import open_index

    captions = dev_captions(Path(args.flickr8k)) or ["two dogs playing in the snow"] * 2000
    rows = {}
    for name in args.models.split(","):
        model = HashModel.load(name)
        use_text_runtime(model, "auto")
        model.encode_texts(captions[:8])
        single = []
        for text in captions[:200]:
            start = time.perf_counter()
            model.encode_texts([text])
            single.append(time.perf_counter() - start)
        batch = sorted(captions[:2000], key=len)
        start = time.perf_counter()
        for s in range(0, len(batch), 64):
            model.encode_texts(batch[s:s + 64])
        row = {"text_model": model.config.text_model,
               "runtime": f"ONNX {getattr(model.text_runtime, 'precision', 'torch')}",
               "single_ms_p50": round(1000 * float(np.median(single)), 2),
               "captions_per_s_batch64": round(len(batch) / (time.perf_counter() - start), 1)}
        data = Path(tempfile.mkdtemp(prefix="crossbit-textbench-"))
        try:
            with open_index(data / "images", model.bits, "flat", snapshot_interval=0,
                            model=model.fingerprint()) as index:
                index.add(np.random.default_rng(0).integers(0, 256, (100_000, model.bits // 8),
                                                            dtype=np.uint8))
            del model
            if GHZ.exists():
                server = ServeProcess(data, "--model", name)
                try:
                    row["ghz_c64"] = ghz_run(server, captions, args.seconds, 64)
                finally:
                    server.stop()
        finally:
            shutil.rmtree(data, ignore_errors=True)
        rows[name] = row
        print(name, row, flush=True)
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
