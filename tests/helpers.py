"""Helpers shared by the tests: free ports, server processes, certificates, code generators."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

RESULTS = os.environ.get("CROSSBIT_RELIABILITY_JSON")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def record(name: str, **figures) -> None:
    """Append figures for RELIABILITY.md when make reliability asks for them."""
    if RESULTS:
        with open(RESULTS, "a") as f:
            f.write(json.dumps({"test": name, **figures}) + "\n")


def start_server(data: Path, port: int, *extra: str) -> subprocess.Popen:
    """``crossbit serve`` in its own process; its log is drained into ``proc.log`` as it comes."""
    proc = subprocess.Popen([sys.executable, "-m", "crossbit", "serve", "--data", str(data),
                             "--port", str(port), "--index", "flat", "--snapshot-interval", "0.5",
                             *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"})
    proc.log = []
    threading.Thread(target=lambda: proc.log.extend(iter(proc.stderr.readline, "")),
                     daemon=True).start()
    line = proc.stdout.readline()
    if f":{port}" not in line:
        proc.kill()
        proc.wait()
        time.sleep(0.2)
        raise RuntimeError("server did not start: " + line + "".join(proc.log)[-3000:])
    return proc


def stop_server(proc: subprocess.Popen, timeout: float = 90) -> str:
    """SIGTERM, wait; on a hang, dump every thread (faulthandler) into the failure message."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        proc.wait(timeout=30)
        time.sleep(0.5)
        log = "".join(proc.log)[-6000:]
        raise AssertionError(f"server ignored SIGTERM for {timeout}s:\n{log}") from None
    time.sleep(0.2)
    return "".join(proc.log)


def self_signed(folder: Path, name: str = "") -> tuple[Path, Path]:
    """A fresh self-signed key and certificate for localhost (openssl)."""
    key, cert = folder / f"key{name}.pem", folder / f"cert{name}.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return key, cert


def header_only(width: int, height: int, keep: int, frame: bytes = b"\xff\xc0") -> bytes:
    """A real small JPEG whose frame header is made to claim width x height, cut ``keep``
    bytes into its scan (EOI appended): what a decompression bomb looks like. ``frame``
    replaces the SOF0 marker (b"\\xff\\xc9": an arithmetic-coded frame)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.effect_noise((16, 16), 60).convert("RGB").save(buf, format="JPEG", quality=50)
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    data[sof:sof + 2] = frame
    sos = data.index(b"\xff\xda")
    length = int.from_bytes(data[sos + 2:sos + 4], "big")
    return bytes(data[:sos + 2 + length + keep]) + b"\xff\xd9"


def popcount_distances(queries, codes):
    return np.bitwise_count(queries[:, None, :] ^ codes[None, :, :]).sum(axis=2)


def clustered_codes(n, bits, rng, centers=20, flip=0.08):
    """Codes around a few centres, so that IVF and HNSW see realistic structure and ties."""
    c = rng.integers(0, 2, size=(centers, bits), dtype=np.uint8)
    pick = c[rng.integers(0, centers, size=n)]
    noise = (rng.random((n, bits)) < flip).astype(np.uint8)
    return np.packbits(pick ^ noise, axis=1)


COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220),
           "yellow": (235, 215, 40), "white": (245, 245, 245), "black": (15, 15, 15)}
SHAPES = ("circle", "square", "triangle")


def make_synthetic(directory, n_images: int = 60, seed: int = 0, size: int = 96):
    """Draw shapes on coloured backgrounds with captions saying what is drawn, for tests.

    Writes ``images/NNNN.png``, ``captions.csv`` and ``labels.csv`` (multi-label layout)
    under ``directory``; labels are the shape and both colours.
    """
    from PIL import Image, ImageDraw

    from crossbit.encoders.training.datasets import load_captions_csv

    rng = np.random.default_rng(seed)
    directory = Path(directory)
    (directory / "images").mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    caption_rows, label_rows = [], []
    for i in range(n_images):
        shape = SHAPES[rng.integers(len(SHAPES))]
        fg, bg = rng.choice(len(names), size=2, replace=False)
        image = Image.new("RGB", (size, size), COLOURS[names[bg]])
        draw = ImageDraw.Draw(image)
        lo, hi = int(size * rng.uniform(0.1, 0.3)), int(size * rng.uniform(0.7, 0.9))
        if shape == "circle":
            draw.ellipse([lo, lo, hi, hi], fill=COLOURS[names[fg]])
        elif shape == "square":
            draw.rectangle([lo, lo, hi, hi], fill=COLOURS[names[fg]])
        else:
            draw.polygon([(lo, hi), (hi, hi), ((lo + hi) // 2, lo)], fill=COLOURS[names[fg]])
        file = f"{i:04d}.png"
        image.save(directory / "images" / file)
        caption_rows += [(file, f"a {names[fg]} {shape} on a {names[bg]} background"),
                         (file, f"{names[bg]} picture with a {names[fg]} {shape}")]
        label_rows.append((file, f"{names[fg]} {shape} {names[bg]}",
                           ";".join([shape, f"fg-{names[fg]}", f"bg-{names[bg]}"])))
    with open(directory / "captions.csv", "w", newline="") as f:
        csv.writer(f).writerows([("image", "caption"), *caption_rows])
    with open(directory / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("image", "text", "labels"), *label_rows])
    return load_captions_csv(directory / "captions.csv", directory / "images")
