"""A light model: a folder of ONNX graphs, a tokenizer and a manifest, serving a model's codes without torch.

``crossbit export-light`` (encoders/light_export.py, in the full install) writes one from a
model as the full install serves it on the CPU; :class:`LightModel` loads it with ONNX
Runtime, numpy, tokenizers and PIL only, and gives the same codes and embeddings to the
bit (tests/test_light.py, .ci/light_check) and the same fingerprint, so a store made by
either is served by the other.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from crossbit.encoders.codes import Encoded
from crossbit.encoders.config import ModelConfig
from crossbit.encoders.inputs import (
    ImageInput,
    concat,
    empty,
    image_array,
    image_list,
    load_image,
    text_list,
)
from crossbit.encoders.onnx_runs import HeadRun, OnnxBackbone, TokenStatesRun

log = logging.getLogger(__name__)

MANIFEST = "light.json"  # what makes a folder a light model
KIND = "crossbit-light-model"
FORMAT = 1
PACKAGE = "crossbit_light_model"  # the default model's light folder, as its wheel installs it
FILES = {  # role -> file name in the folder
    "image_backbone": "image_backbone.onnx", "image_head": "image_head.onnx",
    "text_model": "text_model.onnx", "text_head": "text_head.onnx",
    "tokenizer": "tokenizer.json",
}
# the libraries whose versions the codes depend on, besides the graphs: the same versions
# here as where the light model was exported give the same codes to the bit
SAME_VERSIONS = ("onnxruntime", "tokenizers", "pillow", "numpy")


class CpuDevice:
    """What a light model says of its device: the CPU (``device.type``, as torch's device)."""

    type = "cpu"

    def __str__(self) -> str:
        return "cpu"


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_light_model(path: str | os.PathLike | None) -> bool:
    """Whether ``path`` is a light model folder (it holds the manifest)."""
    return bool(path) and (Path(path).expanduser() / MANIFEST).is_file()


def read_manifest(directory: str | os.PathLike, check_files: bool = True) -> dict:
    """A light model's manifest, checked: its kind and format, and each file's SHA-256.

    Raises:
        ValueError: not a light model, a format this code does not read, or a file that
            is missing or not the one exported.
    """
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{directory}: not a light model ({MANIFEST}: {exc})") from None
    if manifest.get("kind") != KIND or manifest.get("format") != FORMAT:
        raise ValueError(f"{directory / MANIFEST}: not a crossbit light model of format {FORMAT} "
                         f"(kind {manifest.get('kind')!r}, format {manifest.get('format')!r})")
    if check_files:
        for name, expected in manifest["files"].items():
            path = directory / name
            if not path.is_file():
                raise ValueError(f"{directory}: {name} is missing from the light model")
            if file_digest(path) != expected:
                raise ValueError(f"{directory}: {name} is not the file exported with this "
                                 "manifest (its SHA-256 differs): export the light model again")
    return manifest


def installed_version(package: str) -> str | None:
    """The installed version of a distribution (None: not installed)."""
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def version_notes(manifest: dict) -> list[str]:
    """What differs between the libraries here and those the light model was exported with."""
    made = manifest.get("made_with", {})
    return [f"{p} {installed_version(p)} here, {made[p]} at export" for p in SAME_VERSIONS
            if made.get(p) and installed_version(p) != made[p]]


def torch_installed() -> bool:
    """Whether torch can be imported here (asked without importing it)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # a finder that refuses it: not importable either
        return False


def packaged_light_model() -> Path | None:
    """The folder of the light default model the ``crossbit-light-model`` wheel installed, or None."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except ModuleNotFoundError:
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    return folder if is_light_model(folder) else None


def light_model_dir(name: str | None) -> Path | None:
    """The light model folder that serves the model ``name``, or None for the full model.

    A folder holding a light model's manifest is one, wherever it is. Without torch, the
    default model (``None`` or ``default``) is the light model installed by the
    ``crossbit-light-model`` wheel; with torch, the full model serves it (the same codes).

    Raises:
        ValueError: without torch, for a model that only the full install can serve.
    """
    if name and is_light_model(name):
        return Path(name).expanduser().resolve()
    if torch_installed():
        return None
    if not name or name == "default":
        found = packaged_light_model()
        if found is not None:
            return found
        raise ValueError("the default model needs the light model without torch: install the "
                         "wheel `make light-model` writes (dist/crossbit_light_model-*.whl), or "
                         "give --model a light model folder (crossbit export-light --out DIR)")
    raise ValueError(f"model {name!r} needs torch (the full install: pip install '.[full]'), or "
                     f"a light model made from it: crossbit export-light --model {name} --out DIR "
                     "where torch is, then --model DIR here")


class LightModel:
    """A light model folder, ready to encode: HashModel's serving interface without torch.

    ``encode_texts``, ``encode_images``, ``bits``, ``fingerprint()``, ``name``,
    ``device.type`` (always ``cpu``) and ``config`` are HashModel's. Images are decoded and
    resized by PIL and normalised in numpy exactly as the full install does in torch; the
    image backbone, the class semantics with the image head, the text model (int8 or
    fp32, as the full install chose) and the text head run the full install's own ONNX
    graphs through the same code (``onnx_runs``).

    Args:
        directory: the light model folder.
        text_threads: ONNX Runtime threads of the text model (the server's ``--text-threads``).
    """

    light = True

    def __init__(self, directory: str | os.PathLike, text_threads: int | None = None):
        from tokenizers import Tokenizer

        self.directory = Path(directory)
        manifest = read_manifest(self.directory)
        self.manifest = manifest
        self.config = ModelConfig.from_json(json.dumps(manifest["config"]))
        self._fingerprint = dict(manifest["fingerprint"])
        self.name = self._fingerprint.get("name", str(self.directory))
        self.device = CpuDevice()
        image, text = manifest["image"], manifest["text"]
        self.image_size, self.mean, self.std = image["size"], image["mean"], image["std"]
        self.image_runtime = OnnxBackbone(self.directory / FILES["image_backbone"])
        tokenizer = Tokenizer.from_file(str(self.directory / FILES["tokenizer"]))
        self.text_runtime = TokenStatesRun(self.directory / FILES["text_model"], tokenizer,
                                           text["pad_id"], text["max_tokens"], text_threads,
                                           text["precision"])
        self.head_runtimes = {"image": HeadRun(self.directory / FILES["image_head"]),
                              "text": HeadRun(self.directory / FILES["text_head"])}
        notes = version_notes(manifest)
        if notes:
            log.warning("light model %s: %s; codes may differ from the full install's "
                        "(export it again with these versions)", self.directory, ", ".join(notes))

    @property
    def bits(self) -> int:
        return self.config.bits

    @property
    def embedding_dim(self) -> int:
        return self.config.embed_dim or self.config.bits

    def fingerprint(self) -> dict:
        """The full model's fingerprint, as recorded at export: a store made by either model
        is served by the other."""
        return dict(self._fingerprint)

    def encode_images(self, images: Iterable[ImageInput], batch_size: int = 32) -> Encoded:
        """Encode images (PIL images, encoded bytes or file paths), each on its own.

        Args:
            images: a list of images; empty in, empty out.
            batch_size: images decoded and held at once (the codes do not depend on it).

        Returns:
            :class:`Encoded` with codes (n, bits // 8) uint8 and embeddings (n, d) float32.
        """
        images = image_list(images)
        if not images:
            return empty(self.bits, self.embedding_dim)
        parts = []
        for start in range(0, len(images), batch_size):
            decoded = [load_image(item) for item in images[start : start + batch_size]]
            batch = image_array(decoded, self.image_size, self.mean, self.std)
            parts.append(self.head_runtimes["image"](self.image_runtime(batch)))
        return concat(parts)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> Encoded:
        """Encode texts, each on its own (its code is the same in any batch).

        Args:
            texts: a list of strings; empty in, empty out.
            batch_size: texts handed to the encoder at once (the codes do not depend on it).

        Returns:
            :class:`Encoded` with codes (n, bits // 8) uint8 and embeddings (n, d) float32.

        Raises:
            TypeError: for a bare string or non-string items.
        """
        texts = text_list(texts)
        if not texts:
            return empty(self.bits, self.embedding_dim)
        parts = [self.head_runtimes["text"](self.text_runtime(texts[start : start + batch_size]))
                 for start in range(0, len(texts), batch_size)]
        return concat(parts)
