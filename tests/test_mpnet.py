"""The mpnet-base text model's loader: pieces joined, unzipped and checked (on a small fake split zip),
missing parts named, and the real model where its parts are installed."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile

import numpy as np
import pytest

from crossbit.encoders import mpnet


def split_zip(tmp_path, files: dict[str, bytes], pieces: int = 3) -> list:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    data = buf.getvalue()
    size = -(-len(data) // pieces)
    out = []
    for n in range(pieces):
        path = tmp_path / f"model.zip.{n + 1:03d}"
        path.write_bytes(data[n * size:(n + 1) * size])
        out.append(path)
    return out


def test_pieces_joined_unzipped_and_checked(tmp_path):
    weights = np.random.default_rng(0).bytes(50_000)
    files = {"fake/config.json": b"{}", "fake/1_Pooling/config.json": b"{}",
             "fake/model.safetensors": weights, "fake/vocab.txt": b"[PAD]\n"}
    pieces = split_zip(tmp_path, files)
    dest = mpnet.assemble(pieces, tmp_path / "cache" / "model",
                          hashlib.sha256(weights).hexdigest())
    assert (dest / "model.safetensors").read_bytes() == weights
    assert (dest / "1_Pooling" / "config.json").exists() and (dest / "vocab.txt").exists()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["model"]  # no leftovers


def test_damaged_parts_refused_and_nothing_left(tmp_path):
    pieces = split_zip(tmp_path, {"fake/config.json": b"{}", "fake/model.safetensors": b"w"})
    with pytest.raises(ValueError, match="SHA-256"):
        mpnet.assemble(pieces, tmp_path / "cache" / "model", "0" * 64)
    assert list((tmp_path / "cache").iterdir()) == []
    evil = split_zip(tmp_path, {"../escape.txt": b"x", "fake/config.json": b"{}"})
    with pytest.raises(ValueError, match="unsafe path"):
        mpnet.assemble(evil, tmp_path / "cache" / "model", "0" * 64)
    assert not (tmp_path / "cache" / "escape.txt").exists()


def test_missing_parts_named(monkeypatch):
    monkeypatch.setattr(mpnet, "PARTS", ["crossbit-no-such-part-001", "crossbit-no-such-part-002"])
    with pytest.raises(ValueError, match="no-such-part-001, crossbit-no-such-part-002.*--no-deps"):
        mpnet.part_files()


def test_the_real_model(tmp_path, monkeypatch):
    try:
        mpnet.part_files()
    except ValueError as exc:
        pytest.skip(f"mpnet-base parts not installed ({exc})")
    monkeypatch.setenv("CROSSBIT_CACHE", str(tmp_path))
    import torch

    from crossbit.encoders.onnx_text import onnx_text_encoder
    from crossbit.encoders.text_models import TextEncoder

    texts = ["a dog runs on the beach", "a puppy running along the shore", "a plate of spaghetti"]
    encoder = TextEncoder("mpnet-base")
    assert encoder.feature_dim == 768 and encoder.model.config.num_hidden_layers == 12
    with torch.no_grad():
        f = torch.nn.functional.normalize(encoder(texts), dim=1).numpy()
    assert float(f[0] @ f[1]) > float(f[0] @ f[2]) + 0.2
    assert os.path.exists(tmp_path / "all-mpnet-base-v2" / "model.safetensors")
    # ONNX, as MiniLM has; int8 is much rougher for MPNet (0.89 measured), so auto uses fp32
    for precision, least in (("fp32", 0.9999), ("int8", 0.8)):
        g = onnx_text_encoder("mpnet-base", precision)(texts)
        g = g / np.linalg.norm(g, axis=1, keepdims=True)
        assert min(float(a @ b) for a, b in zip(f, g)) > least, (precision, (f * g).sum(1))


def test_shipped_by_name():
    from crossbit.encoders.model import HashModel

    mpnet_64, default = HashModel.load("mpnet-64"), HashModel.load()
    assert mpnet_64.name == "mpnet-64" and default.name == "default"
    assert mpnet_64.config.text_model == "mpnet-base" and mpnet_64.bits == 64
    assert mpnet_64.fingerprint()["fingerprint"] != default.fingerprint()["fingerprint"]


def test_auto_text_runtime_is_int8_for_minilm_only():
    from crossbit.encoders.model import HashModel
    from crossbit.encoders.runtime import use_text_runtime

    default = HashModel.load()
    use_text_runtime(default, "auto")
    assert default.text_runtime.precision == "int8"
    try:
        mpnet.part_files()
    except ValueError as exc:
        pytest.skip(f"mpnet-base parts not installed ({exc})")
    mpnet_64 = HashModel.load("mpnet-64")
    use_text_runtime(mpnet_64, "auto")
    assert mpnet_64.text_runtime.precision == "fp32"
