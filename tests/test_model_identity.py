"""An index knows its model: another model's server refuses the data, and reindex re-encodes it."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from crossbit.client import Client
from crossbit.indexer import ModelMismatch, open_index


@pytest.fixture(scope="module")
def other_model(model, tmp_path_factory):
    """The shipped model with its heads nudged: same shapes, other codes."""
    from crossbit.encoders.model import HashModel
    from crossbit.encoders.runtime import use_image_runtime

    folder = tmp_path_factory.mktemp("model-b")
    b = HashModel.load()
    nudge = torch.Generator().manual_seed(0)  # the same model b whatever ran before
    with torch.no_grad():
        for head in (b.image_head, b.text_head):
            for p in head.parameters():
                p.add_(torch.randn(p.shape, generator=nudge, dtype=p.dtype) * 0.05, alpha=1.0)
    b.save(folder)
    b = HashModel.load(folder)
    use_image_runtime(b)
    return folder, b


def test_fingerprint_tells_models_apart(model, other_model):
    a, b = model.fingerprint(), other_model[1].fingerprint()
    assert a["fingerprint"] != b["fingerprint"] and a["bits"] == b["bits"] == 64
    assert model.fingerprint() == a  # stable


def test_another_model_is_refused_and_reindex_takes_it(model, other_model, tmp_path, photos):
    from crossbit.server.cli.reindex import reindex
    from crossbit.server.config import ServerConfig
    from crossbit.server.rpc.app import create_server

    data = tmp_path / "data"
    running = create_server(ServerConfig(port=0, data=str(data), index="flat",
                                         snapshot_interval=0), model=model)
    with Client(f"127.0.0.1:{running.port}") as c:
        c.add_images([photos["rocket"], photos["coffee"], photos["chelsea"]],
                     keys=["rocket", "coffee", "chelsea"])
        c.add_texts(["a rocket on its launch pad", "a cup of coffee"], keys=["t1", "t2"])
    running.stop(1.0)
    folder, b = other_model
    with pytest.raises(ModelMismatch) as info:
        create_server(ServerConfig(port=0, data=str(data), index="flat", snapshot_interval=0),
                      model=b)
    message = str(info.value)
    assert model.fingerprint()["fingerprint"] in message and b.fingerprint()["fingerprint"] in message
    assert "crossbit reindex" in message
    out = subprocess.run([sys.executable, "-m", "crossbit", "serve", "--data", str(data),
                          "--port", "0", "--model", str(folder)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "holds codes made by default" in out.stderr.strip().splitlines()[-1]

    reports = reindex(data, b)
    assert {r.modality: r.encoded for r in reports} == {"image": 3, "text": 2}
    running = create_server(ServerConfig(port=0, data=str(data), index="flat",
                                         snapshot_interval=0), model=b)
    try:
        with Client(f"127.0.0.1:{running.port}") as c:
            assert c.search(image=photos["rocket"], top_k=1, rerank=False)[0].key == "rocket"
            assert c.search(text="a cup of coffee", modality="text", top_k=1)[0].key == "t2"
            stored = running.core.indexes["image"].codes([0])[1][0]
        assert (stored == b.encode_images([photos["rocket"]]).codes[0]).mean() > 0.7
        assert running.core.indexes["image"].verify() == ""
    finally:
        running.stop(1.0)


def test_reindex_names_what_it_cannot_encode_and_drops_it_only_when_asked(model, other_model,
                                                                          tmp_path, photos):
    from crossbit.server.cli.reindex import reindex

    data = tmp_path / "data"
    fp = model.fingerprint()
    import io

    from PIL import Image

    buf = io.BytesIO()  # a small image: its thumbnail is all of it, and no preview is kept
    Image.open(io.BytesIO(photos["moon"])).convert("RGB").resize((120, 90)).save(buf, "JPEG")
    with open_index(data / "images", 64, "flat", snapshot_interval=0, model=fp) as index:
        enc = model.encode_images([photos["moon"], photos["coins"]])
        index.add(enc.codes, keys=["kept", "bare"], embeddings=enc.embeddings,
                  thumbnails=[buf.getvalue(), None])
    with pytest.raises(ValueError, match="1 items have nothing to encode again from .*bare"):
        reindex(data, other_model[1])
    with open_index(data / "images", 64, "flat", snapshot_interval=0, model=fp) as index:
        assert len(index) == 2  # nothing was changed
    reports = reindex(data, other_model[1], drop=True)
    assert reports[0].encoded == 1 and reports[0].dropped == 1
    with open_index(data / "images", 64, "flat", snapshot_interval=0,
                    model=other_model[1].fingerprint()) as index:
        assert index.ids_for_keys(["kept", "bare"]) == {"kept": 0} and index.verify() == ""
