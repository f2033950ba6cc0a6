"""Light models: exported from the shipped model, they give the full install's served codes and
embeddings to the bit and its fingerprint, load and serve where torch cannot be imported, and
ship as a wheel that a torch-less install finds as its default model."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from crossbit.encoders.backbones import get_spec, list_backbones, preprocess
from crossbit.encoders.inputs import image_array
from crossbit.encoders.light import LightModel, light_model_dir, read_manifest
from crossbit.encoders.light_export import export_light, write_wheel
from crossbit.encoders.model import HashModel
from crossbit.encoders.serving import load_serving_model

from helpers import free_port

# what a torch-less install lacks: importing any of it fails, as there
BLOCK = textwrap.dedent("""
    import sys

    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision", "transformers", "safetensors",
                                      "skimage", "matplotlib"):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked)")
            return None

    sys.meta_path.insert(0, NoTorch())
""")
HEAVY = ("torch", "torchvision", "transformers", "safetensors")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """`crossbit export-light --wheel`: the shipped model's light model folder and its wheel."""
    import contextlib

    from crossbit.server.cli import main

    where = tmp_path_factory.mktemp("light")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["export-light", "--out", str(where / "default"), "--wheel",
                     str(where / "dist")]) == 0
    assert "its codes checked against the full model's" in out.getvalue()
    (wheel,) = (where / "dist").iterdir()
    return where / "default", wheel


@pytest.fixture(scope="module")
def light_dir(exported):
    return exported[0]


@pytest.fixture(scope="module")
def light(light_dir):
    return LightModel(light_dir)


@pytest.fixture(scope="module")
def full():
    """The shipped model exactly as the server loads it on the CPU."""
    model = load_serving_model(None, device="cpu")
    assert isinstance(model, HashModel) and model.text_runtime.precision == "int8"
    return model


def _image(seed: int, width: int, height: int, mode: str) -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    return image.convert(mode)


images = st.builds(_image, st.integers(0, 2**32 - 1), st.integers(1, 400), st.integers(1, 400),
                   st.sampled_from(["RGB", "L", "RGBA", "P", "CMYK"]))


@settings(max_examples=25, deadline=None)
@given(batch=st.lists(images, min_size=1, max_size=3), backbone=st.sampled_from(list_backbones()),
       flip=st.booleans())
def test_numpy_preprocessing_is_torchs_to_the_bit(batch, backbone, flip):
    spec = get_spec(backbone)  # resnet18's means and deviations are not powers of two
    ours = image_array(batch, 224, spec.mean, spec.std, flip=flip)
    theirs = preprocess(batch, spec, flip=flip).numpy()
    assert ours.dtype == np.float32 and ours.shape == theirs.shape
    assert ours.tobytes() == np.ascontiguousarray(theirs).tobytes()


texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(texts, min_size=1, max_size=12),
       photos=st.lists(images, min_size=1, max_size=4))
def test_light_codes_and_embeddings_are_the_full_installs(light, full, batch, photos):
    for a, b in ((light.encode_texts(batch), full.encode_texts(batch)),
                 (light.encode_images(photos), full.encode_images(photos))):
        assert a.codes.dtype == np.uint8 and a.codes.tobytes() == b.codes.tobytes()
        assert a.embeddings.dtype == np.float32 and a.embeddings.tobytes() == b.embeddings.tobytes()


def test_light_model_has_the_full_models_interface_and_fingerprint(light, light_dir):
    shipped = HashModel.load()
    assert light.fingerprint() == shipped.fingerprint()
    assert light.fingerprint()["name"] == light.name == "default"
    assert light.bits == shipped.bits and light.device.type == "cpu"
    assert light.config.text_model == "minilm-l6" and light.config.semantics
    assert light.encode_texts([]).codes.shape == (0, 8)
    assert light.encode_images([]).embeddings.shape == (0, light.embedding_dim)
    with pytest.raises(TypeError, match="wrap a single text"):
        light.encode_texts("a dog")
    with pytest.raises(TypeError, match="wrap a single image"):
        light.encode_images(b"\x89PNG")
    manifest = read_manifest(light_dir)
    assert manifest["text"]["precision"] == "int8" and manifest["made_with"]["torch"]
    assert light_model_dir(str(light_dir)) == light_dir.resolve()
    assert light_model_dir(None) is None  # with torch the full model serves the default


def test_light_settings_and_files_are_checked(light_dir, tmp_path):
    with pytest.raises(ValueError, match="CPU only"):
        load_serving_model(str(light_dir), device="cuda")
    with pytest.raises(ValueError, match="not torch"):
        load_serving_model(str(light_dir), runtime="torch")
    with pytest.raises(ValueError, match="ONNX int8"):
        load_serving_model(str(light_dir), text_runtime="onnx")
    assert load_serving_model(str(light_dir), text_runtime="int8").light
    broken = tmp_path / "broken"
    shutil.copytree(light_dir, broken)
    with open(broken / "text_head.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ValueError, match="text_head.onnx is not the file exported"):
        LightModel(broken)
    shutil.copyfile(light_dir / "text_head.onnx", broken / "text_head.onnx")
    (broken / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match="tokenizer.json is missing"):
        LightModel(broken)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and not a light model"):
        export_light(None, tmp_path / "other")


def test_other_library_versions_are_said_at_load(light_dir, tmp_path, caplog):
    moved = tmp_path / "moved"
    shutil.copytree(light_dir, moved)
    manifest = json.loads((moved / "light.json").read_text())
    manifest["made_with"]["onnxruntime"] = "1.0.0"
    (moved / "light.json").write_text(json.dumps(manifest))
    with caplog.at_level("WARNING", logger="crossbit.encoders.light"):
        LightModel(moved)
    assert "onnxruntime" in caplog.text and "1.0.0 at export" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="crossbit.encoders.light"):
        LightModel(light_dir)
    assert caplog.text == ""


def test_a_store_of_the_full_model_is_served_by_the_light_one(full, light, tmp_path):
    from crossbit.client import Client
    from crossbit.server.config import ServerConfig
    from crossbit.server.rpc.app import create_server

    captions = ["two dogs playing in the snow", "a bowl of soup", "a man on a red bicycle"]
    config = ServerConfig(port=0, data=str(tmp_path / "data"), index="flat", snapshot_interval=0)
    answers = []
    for model in (full, light):  # the same data directory: no ModelMismatch
        running = create_server(config, model=model)
        try:
            with Client(f"127.0.0.1:{running.port}") as client:
                if model is full:
                    client.add_texts(captions, keys=["d", "s", "b"])
                hits = client.search(text="dogs in the snow", modality="text", top_k=3)
                answers.append([(h.key, h.distance, h.score) for h in hits])
                assert client.stats()["texts"] == 3
        finally:
            running.stop(1.0)
    assert answers[0] == answers[1] and answers[0][0][0] == "d"


def _encode_script(light_dir) -> str:
    return BLOCK + textwrap.dedent(f"""
        import json, sys
        import crossbit.server.cli.main, crossbit.server.rpc.app, crossbit.server.web.app
        from crossbit.encoders.serving import load_serving_model
        from PIL import Image

        model = load_serving_model({str(light_dir)!r})
        texts = json.loads(sys.stdin.read())
        enc = [model.encode_texts(texts), model.encode_images([Image.new("RGB", (31, 47), "red")])]
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
        print(json.dumps({{"heavy": heavy, "type": type(model).__name__,
                          "fingerprint": model.fingerprint(),
                          "codes": [e.codes.tobytes().hex() for e in enc],
                          "embeddings": [e.embeddings.tobytes().hex() for e in enc]}}))
    """)


def test_light_model_serves_where_torch_cannot_be_imported(full, light_dir):
    texts = ["two dogs playing in the snow", "", "café ü " * 100]
    done = subprocess.run([sys.executable, "-c", _encode_script(light_dir)], input=json.dumps(texts),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert out["heavy"] == [] and out["type"] == "LightModel"
    assert out["fingerprint"] == full.fingerprint()
    expected = [full.encode_texts(texts), full.encode_images([Image.new("RGB", (31, 47), "red")])]
    assert out["codes"] == [e.codes.tobytes().hex() for e in expected]
    assert out["embeddings"] == [e.embeddings.tobytes().hex() for e in expected]


def _relabelled(light_dir, tmp_path, name: str):
    copy = tmp_path / name
    shutil.copytree(light_dir, copy)
    manifest = json.loads((copy / "light.json").read_text())
    manifest["fingerprint"]["name"] = name
    (copy / "light.json").write_text(json.dumps(manifest))
    return copy


def _record_ok(wheel: zipfile.ZipFile) -> None:
    rows = [line.split(",") for line in wheel.read(
        next(n for n in wheel.namelist() if n.endswith(".dist-info/RECORD"))).decode().splitlines()]
    assert {r[0] for r in rows} == set(wheel.namelist())
    for name, digest, size in rows:
        if digest:
            data = wheel.read(name)
            b64 = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert digest == f"sha256={b64}" and int(size) == len(data), name


def test_the_wheel_is_the_default_model_of_a_torchless_install(full, exported, tmp_path):
    wheel_path = exported[1]
    fingerprint = full.fingerprint()["fingerprint"]
    assert wheel_path.name == f"crossbit_light_model-0.1.0+{fingerprint}-py3-none-any.whl"
    with zipfile.ZipFile(wheel_path) as wheel:
        _record_ok(wheel)
        assert "crossbit_light_model/light.json" in wheel.namelist()
    with pytest.raises(ValueError, match="the default model only"):
        write_wheel(_relabelled(exported[0], tmp_path, "mpnet-64"), tmp_path / "other")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--target", str(site), str(wheel_path)], check=True, timeout=300)
    script = BLOCK + textwrap.dedent("""
        import sys
        from crossbit.encoders.serving import load_serving_model
        from crossbit.server.cli import main

        model = load_serving_model("default")
        print(type(model).__name__, model.directory.name, model.fingerprint()["fingerprint"])
        try:
            load_serving_model("mpnet-64")
        except ValueError as exc:
            print("refused:", exc)
        sys.exit(main(["train", "--captions", "x.csv", "--images", ".", "--out", "m"]))
    """)
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    lines = done.stdout.splitlines()
    assert lines[0] == f"LightModel crossbit_light_model {fingerprint}", done.stderr[-3000:]
    assert lines[1].startswith("refused: model 'mpnet-64' needs torch")
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        "crossbit train: error: needs torch, which this serving install does not have: run "
        "`crossbit train` from the full install (pip install '.[full]', or make setup)"]


def test_crossbit_serve_on_a_light_model_without_torch(full, light_dir, tmp_path):
    """`crossbit serve --model LIGHT` where torch cannot be imported answers Encode as a
    server of the full model does (the same decoding, batching and encoders' calls)."""
    from crossbit.client import Client
    from crossbit.server.config import ServerConfig
    from crossbit.server.rpc.app import create_server

    port = free_port()
    script = BLOCK + (f"from crossbit.server.cli import main\nmain(['serve', '--model', "
                      f"{str(light_dir)!r}, '--data', {str(tmp_path / 'light')!r}, '--port', "
                      f"'{port}', '--index', 'flat', '--web-port', '0', '--log-format', 'text'])\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    reference = create_server(ServerConfig(port=0, data=str(tmp_path / "full"), index="flat",
                                           snapshot_interval=0), model=full)
    try:
        line = proc.stdout.readline()
        assert f":{port}" in line, (line, proc.poll())
        photos = []
        for seed, size in ((7, (120, 90)), (8, (640, 480))):
            buf = io.BytesIO()
            _image(seed, *size, "RGB").save(buf, format="JPEG")
            photos.append(buf.getvalue())
        texts = ["a dog on a beach", "two people sit on a bench", "x"]
        answers = []
        for address in (f"127.0.0.1:{port}", f"127.0.0.1:{reference.port}"):
            with Client(address) as client:
                answers.append(client.encode(texts=texts, images=photos, embeddings=True))
                assert client.add_images(photos, keys=["p", "q"]).added == 2
                assert client.search(text="a dog", top_k=2)[0].key in ("p", "q")
        light_answer, full_answer = answers
        assert light_answer.texts.tobytes() == full_answer.texts.tobytes()
        assert light_answer.images.tobytes() == full_answer.images.tobytes()
        assert light_answer.text_embeddings.tobytes() == full_answer.text_embeddings.tobytes()
        assert light_answer.image_embeddings.tobytes() == full_answer.image_embeddings.tobytes()
    finally:
        reference.stop(1.0)
        proc.terminate()
        proc.wait(timeout=60)
    assert proc.returncode == 0, proc.stderr.read()[-3000:]
