"""``crossbit export-light``: a model as the full install serves it, as a light model folder and wheel."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from crossbit.encoders.light import (
    FILES,
    FORMAT,
    KIND,
    MANIFEST,
    PACKAGE,
    SAME_VERSIONS,
    LightModel,
    file_digest,
)

log = logging.getLogger(__name__)

WHEEL_NAME = "crossbit_light_model"  # the distribution crossbit-light-model
CHECK_TEXTS = ["two dogs playing in the snow", "a man rides a bicycle down a busy street", "",
               "café ü " * 40]


def _runtimes(model) -> None:
    """The model's ONNX Runtime encoders and heads, chosen as the server chooses them on the CPU."""
    from crossbit.encoders.runtime import use_head_runtime, use_image_runtime, use_text_runtime

    use_image_runtime(model, "onnx")
    use_text_runtime(model, "auto")  # int8 for MiniLM, fp32 for the others: the server's choice
    use_head_runtime(model)
    missing = [what for what, runtime in (("the image backbone", model.image_runtime),
                                          ("the text model", model.text_runtime),
                                          ("the image head", model.head_runtimes.get("image")),
                                          ("the text head", model.head_runtimes.get("text")))
               if runtime is None]
    if missing:
        raise ValueError(f"ONNX Runtime could not run {', '.join(missing)} here (see the "
                         "warnings above): no light model can be made from this install")


def _source_config(name: str | None) -> dict:
    """The model's config as its folder holds it (relative paths, not this machine's)."""
    from crossbit.encoders.model import CONFIG_FILE, SHIPPED_MODELS

    directory = Path(SHIPPED_MODELS.get(str(name or "default"), name or ""))
    return json.loads((directory / CONFIG_FILE).read_text())


def export_light(name: str | None, out: str | os.PathLike) -> Path:
    """Write the light model of ``name`` (a shipped name or a model folder) into ``out``.

    The graphs are the ONNX files the full install serves on the CPU (exported into the
    cache first if needed), copied byte for byte; the tokenizer is the one its text
    encoder runs; the manifest holds the config, the fingerprint and each file's SHA-256.
    Before ``out`` is written, the light model is loaded and must give the full model's
    codes and embeddings, to the bit, for a few texts and images.

    Args:
        name: the model (None: the shipped default).
        out: the folder to write (replaced if it holds a light model; refused if it holds
            anything else).

    Returns:
        ``out``.

    Raises:
        ValueError: ``out`` holds something else, ONNX Runtime cannot run the model, or
            the light model's codes differ from the full model's.
    """
    from crossbit.encoders.backbones import IMAGE_SIZE, get_spec
    from crossbit.encoders.model import HashModel
    from crossbit.encoders.text_models import MAX_TOKENS

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ValueError(f"{out} is not empty and not a light model: give a new folder")
    model = HashModel.load(name, device="cpu")
    _runtimes(model)
    spec = get_spec(model.config.image_backbone)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp's is the owner's alone; a model folder is for every user
    try:
        shutil.copyfile(model.image_runtime.path, tmp / FILES["image_backbone"])
        shutil.copyfile(model.head_runtimes["image"].path, tmp / FILES["image_head"])
        shutil.copyfile(model.text_runtime.path, tmp / FILES["text_model"])
        shutil.copyfile(model.head_runtimes["text"].path, tmp / FILES["text_head"])
        (tmp / FILES["tokenizer"]).write_text(model.text_runtime.tokenizer.to_str())
        manifest = {
            "kind": KIND, "format": FORMAT,
            "fingerprint": model.fingerprint(),
            "config": {**dataclasses.asdict(model.config), **_source_config(name)},
            "image": {"size": IMAGE_SIZE, "mean": list(spec.mean), "std": list(spec.std)},
            "text": {"precision": model.text_runtime.precision, "pad_id": model.text_runtime.pad_id,
                     "max_tokens": MAX_TOKENS},
            "files": {f: file_digest(tmp / f) for f in sorted(FILES.values())},
            "made_with": _versions(),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        check_same_codes(model, LightModel(tmp))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("light model of %s written to %s", model.name, out)
    return out


def _versions() -> dict:
    from crossbit.encoders.light import installed_version

    return {p: installed_version(p) for p in ("crossbit", "torch", "transformers", *SAME_VERSIONS)}


def check_same_codes(full, light) -> None:
    """Refuse a light model whose codes or embeddings differ at all from the full model's
    for a few texts (one empty, one cut at the token limit) and generated images.

    Raises:
        ValueError: naming what differs.
    """
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
              for h, w in ((224, 224), (97, 301), (480, 360))]
    for what, a, b in (("texts", full.encode_texts(CHECK_TEXTS), light.encode_texts(CHECK_TEXTS)),
                       ("images", full.encode_images(images), light.encode_images(images))):
        if not np.array_equal(a.codes, b.codes) or not np.array_equal(a.embeddings, b.embeddings):
            raise ValueError(f"the light model's {what} differ from the full model's (max "
                             f"embedding difference {np.abs(a.embeddings - b.embeddings).max():g})")


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def write_wheel(folder: str | os.PathLike, dist: str | os.PathLike) -> Path:
    """A wheel of a light model folder: ``crossbit-light-model``, whose package
    ``crossbit_light_model`` is the folder; a torch-less install serves it as the default model.

    The version is crossbit's with the fingerprint as local label (0.1.0+3f2a...), so two
    wheels of other weights never share a name. No dependencies: it is data.

    Args:
        folder: a light model folder of the shipped default model.
        dist: where to write the wheel.

    Returns:
        the wheel's path.
    """
    from crossbit.encoders.light import read_manifest

    folder = Path(folder)
    manifest = read_manifest(folder)
    fingerprint = manifest["fingerprint"]
    if fingerprint.get("name") != "default":
        raise ValueError(f"{folder} is the light model of {fingerprint.get('name')!r}: the wheel "
                         "ships the default model only (give other light models with --model)")
    version = f"{manifest['made_with'].get('crossbit') or '0.1.0'}+{fingerprint['fingerprint']}"
    info = f"{WHEEL_NAME}-{version}.dist-info"
    init = ('"""The shipped default model as a light model folder (crossbit export-light): '
            'this package\'s folder."""\n\nfrom pathlib import Path\n\n'
            'FOLDER = Path(__file__).parent\n')
    entries = [(f"{PACKAGE}/__init__.py", init.encode())]
    entries += [(f"{PACKAGE}/{name}", (folder / name).read_bytes())
                for name in sorted([MANIFEST, *FILES.values()])]
    entries += [
        (f"{info}/METADATA", (
            "Metadata-Version: 2.1\nName: crossbit-light-model\n"
            f"Version: {version}\n"
            "Summary: crossbit's default model for serving without torch (ONNX graphs, "
            "tokenizer, manifest)\nLicense: Apache-2.0\nRequires-Python: >=3.11\n").encode()),
        (f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: crossbit export-light\n"
                          b"Root-Is-Purelib: true\nTag: py3-none-any\n"),
    ]
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in entries)
    record += f"{info}/RECORD,,\n"
    entries.append((f"{info}/RECORD", record.encode()))
    dist = Path(dist)
    dist.mkdir(parents=True, exist_ok=True)
    path = dist / f"{WHEEL_NAME}-{version}-py3-none-any.whl"
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in entries:
            entry = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(entry, data)
    os.replace(tmp, path)
    return path
