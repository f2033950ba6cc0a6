"""Peak memory of a ``crossbit serve`` process under concurrent worst-case image calls.

Each caller sends one Encode of 3 images of about 36 M pixels each (108 M, under the
120 M per-request limit), of one kind per caller, in turn: a 651-byte JPEG whose header
claims 6000x6000 with the bytes FF C9 in a comment (the bypass of the old byte search), a
header-only JPEG whose real frame is arithmetic-coded (SOF9, exempt from the byte floor),
a uniform 6000x6000 PNG (about 105 KB) and an honest 6000x6000 photo. The server's resident
memory (``/proc/PID/status``) is sampled every 20 ms; its peak (VmHWM, reset after start-up
through ``/proc/PID/clear_refs``), the memory before and 5 s after the calls, and each
call's status are written to ``bench/results/pixel_memory_<label>.json``.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

SIDE = 6000  # pixels per side of every worst-case image


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def header_only_jpeg(side: int, frame: bytes | None = None, comment: bytes = b"") -> bytes:
    """A JPEG of ``side`` x ``side`` cut after 20 bytes of its scan; ``frame`` replaces the
    SOF0 marker (b"\\xff\\xc9": arithmetic), ``comment`` goes in a COM segment."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (side, side), (10, 200, 30)).save(buf, format="JPEG", quality=10)
    data = buf.getvalue()
    sos = data.index(b"\xff\xda")
    length = int.from_bytes(data[sos + 2:sos + 4], "big")
    data = data[:sos + 2 + length + 20] + b"\xff\xd9"
    if frame:
        data = data.replace(b"\xff\xc0", frame, 1)
    if comment:
        data = data[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + data[2:]
    return data


def uniform_png(side: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (side, side), (120, 80, 40)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def big_photo(side: int) -> bytes:
    """scikit-image's cat, enlarged to side x side with a little noise, as a JPEG (quality 85)."""
    from PIL import Image, ImageChops

    from crossbit.server.demo.sample_photos import sample_photos

    cat = Image.open(io.BytesIO(sample_photos()["chelsea"])).convert("RGB")
    big = cat.resize((side, side), Image.BICUBIC)
    noise = Image.effect_noise((side, side), 12).convert("RGB")
    big = ImageChops.add(big, noise, scale=1.0, offset=-12)
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def payloads(side: int) -> dict[str, bytes]:
    return {"jpeg_com_ffc9": header_only_jpeg(side, comment=b"\xff\xc9"),
            "jpeg_sof9_header_only": header_only_jpeg(side, frame=b"\xff\xc9"),
            "png_uniform": uniform_png(side),
            "photo": big_photo(side)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--callers", type=int, default=32, help="concurrent Encode calls")
    p.add_argument("--per-call", type=int, default=3, help="images per call")
    p.add_argument("--deadline", type=float, default=300.0, help="each call's deadline, s")
    p.add_argument("--label", default="after")
    p.add_argument("--serve-args", default="", help="extra crossbit serve flags")
    p.add_argument("--kill-above-mb", type=float, default=0.0,
                   help="kill the server when its memory passes this (a safety stop), 0: never")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    from crossbit.v1 import crossbit_pb2 as pb
    from crossbit.v1 import crossbit_pb2_grpc as pb_grpc

    images = payloads(SIDE)
    kinds = list(images)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tempfile.mkdtemp(prefix="crossbit-pixels-")
    server = subprocess.Popen([sys.executable, "-m", "crossbit", "serve", "--data", data,
                               "--port", str(port), "--index", "flat", "--log-level", "ERROR",
                               *args.serve_args.split()],
                              stdout=subprocess.PIPE, text=True)
    server.stdout.readline()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[
        ("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)])
    stub = pb_grpc.RetrievalStub(channel)
    stub.Encode(pb.EncodeRequest(images=[_small()]), timeout=60)
    time.sleep(1.0)
    before_kb = status_kb(server.pid, "VmRSS")
    Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    samples: list[int] = []
    done = threading.Event()
    killed: list[int] = []

    def sample():
        while not done.wait(0.02) and not killed:
            samples.append(status_kb(server.pid, "VmRSS"))
            if args.kill_above_mb and samples[-1] > args.kill_above_mb * 1024:
                killed.append(samples[-1])
                server.kill()

    results: list[tuple[str, str, float]] = []

    def call(n: int):
        kind = kinds[n % len(kinds)]
        t0 = time.monotonic()
        try:
            stub.Encode(pb.EncodeRequest(images=[images[kind]] * args.per_call),
                        timeout=args.deadline)
            code = "OK"
        except grpc.RpcError as exc:
            code = exc.code().name
        results.append((kind, code, time.monotonic() - t0))

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.monotonic()
    callers = [threading.Thread(target=call, args=(n,)) for n in range(args.callers)]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    wall = time.monotonic() - start
    time.sleep(5.0)
    done.set()
    sampler.join()
    peak_kb = max(samples) if killed else status_kb(server.pid, "VmHWM")
    after_kb = 0 if killed else status_kb(server.pid, "VmRSS")
    server.terminate()
    server.wait(timeout=60)
    codes = collections.Counter(f"{kind}:{code}" for kind, code, _ in results)
    report = {
        "label": args.label, "callers": args.callers, "images_per_call": args.per_call,
        "image_side": SIDE, "payload_bytes": {k: len(v) for k, v in images.items()},
        "serve_args": args.serve_args, "rss_before_mb": round(before_kb / 1024),
        "peak_rss_mb": round(peak_kb / 1024), "peak_sampled_mb": round(max(samples) / 1024),
        "growth_mb": round((peak_kb - before_kb) / 1024),
        "rss_5s_after_mb": round(after_kb / 1024), "wall_s": round(wall, 1),
        "slowest_call_s": round(max(t for _, _, t in results), 1), "codes": dict(codes),
        "killed_at_mb": round(killed[0] / 1024) if killed else None,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(report, indent=1))
    out = Path(args.out or f"bench/results/pixel_memory_{args.label}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


def _small() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, format="JPEG")
    return buf.getvalue()


if __name__ == "__main__":
    raise SystemExit(main())
