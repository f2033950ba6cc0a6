"""An item's code and embedding depend on that item and the model alone: generated batches.

For every text runtime (torch, ONNX fp32, ONNX int8 on one and on two threads) and both
image runtimes (ONNX, torch), each item of a generated batch (sizes 1 to 40, any order,
repeats, short, long past the 128-token truncation and arbitrary Unicode texts; images of
random sizes, colours and noise, and real photos) must get bit for bit the code and the
embedding it gets alone. Through the service core too: a text added among others is found
by its own text at distance 0 (radius 0) and adding it again among others is "unchanged".

``make test`` runs these small; ``make reliability`` runs them long (CROSSBIT_FUZZ_EXAMPLES).
"""

from __future__ import annotations

import io
import itertools
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from crossbit.encoders.model import HashModel
from crossbit.encoders.runtime import use_head_runtime, use_image_runtime, use_text_runtime

from helpers import record

FUZZ = int(os.environ.get("CROSSBIT_FUZZ_EXAMPLES", "60"))
LONG = FUZZ >= 200  # make reliability: larger batches on the slow torch runtimes too
checked: dict[str, int] = {}  # items compared per case, recorded at the end


@pytest.fixture(scope="module", autouse=True)
def _record_checks():
    yield
    if checked:
        record("batch_invariance", fuzz_examples=FUZZ, **checked)


WORDS = ["a", "dog", "photo", "of", "number", "7", "two", "children", "play", "in", "the",
         "snow", "red", "bus", "on", "street", "café", "naïve", "東京", "の", "猫", "🙂", "🐕",
         "Ünïcödé", "x" * 40, "!!", "...", "-", "\t", "don't", "12345678901234567890"]
short_text = st.lists(st.sampled_from(WORDS), max_size=12).map(" ".join)
long_text = st.lists(st.sampled_from(WORDS), min_size=100, max_size=320).map(" ".join)
any_text = st.text(max_size=80)  # any Unicode, controls and the empty text included
text_st = st.one_of(short_text, short_text, long_text, any_text)


def pick_batch(item, size: int):
    """A strategy: a pool of up to ``size // 3 + 2`` items, then a batch of 1..size of them
    in any order, repeats allowed (so an item meets other batch-mates, paddings and
    positions; each pool item is also encoded alone, the reference)."""
    pool = st.lists(item, min_size=1, max_size=size // 3 + 2)
    return st.tuples(pool, st.integers(1, size)).flatmap(  # the size drawn first: big batches
        lambda pn: st.lists(st.sampled_from(pn[0]), min_size=pn[1], max_size=pn[1]))


class Alone:
    """Each item's code and embedding from a batch of itself only, computed once."""

    def __init__(self, encode):
        self.encode = encode
        self.known: dict = {}

    def __call__(self, key, item) -> tuple[np.ndarray, np.ndarray]:
        if key not in self.known:
            out = self.encode([item])
            self.known[key] = (out.codes[0], out.embeddings[0])
        return self.known[key]


def assert_each_as_alone(out, items, keys, alone: Alone, case: str) -> None:
    assert out.codes.shape[0] == out.embeddings.shape[0] == len(items)
    for row, (key, item) in enumerate(zip(keys, items)):
        code, emb = alone(key, item)
        assert np.array_equal(out.codes[row], code), \
            f"{case}: item {row} of {len(items)} ({key!r:.60}) has another code than alone"
        assert np.array_equal(out.embeddings[row], emb), \
            f"{case}: item {row} of {len(items)} ({key!r:.60}) has another embedding than alone"
    checked[case] = checked.get(case, 0) + len(items)


# -- texts -------------------------------------------------------------------------------------

TEXT_RUNTIMES = {  # name -> (runtime, ONNX threads, examples, largest batch); the ONNX
    # runtimes with the heads on ONNX Runtime (as served), torch with torch's, row by row
    "int8": ("int8", 1, max(10, FUZZ // 6), 40),
    "int8-2threads": ("int8", 2, max(3, FUZZ // 20), 40),
    "onnx": ("onnx", 1, max(5, FUZZ // 12), 40),
    "torch": ("torch", None, max(2, FUZZ // 30), 40 if LONG else 6),
}


@pytest.fixture(scope="module")
def text_models():
    models = {}
    for name, (runtime, threads, _, _) in TEXT_RUNTIMES.items():
        model = HashModel.load()
        use_text_runtime(model, runtime, threads)
        use_head_runtime(model, "torch" if runtime == "torch" else "auto")
        assert bool(model.head_runtimes) == (runtime != "torch")
        models[name] = model
    reference = {"int8": "int8", "int8-2threads": "int8", "onnx": "onnx", "torch": "torch"}
    alone = {name: Alone(models[name].encode_texts) for name in set(reference.values())}
    return models, {name: alone[ref] for name, ref in reference.items()}


def _text_case(name: str):
    runtime, _, examples, size = TEXT_RUNTIMES[name]

    @settings(max_examples=examples, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(batch=pick_batch(text_st, size),
           batch_size=st.integers(1, 64))
    def case(text_models, batch, batch_size):
        models, alone = text_models
        out = models[name].encode_texts(batch, batch_size=batch_size)
        assert_each_as_alone(out, batch, batch, alone[name], f"text/{name}")

    return case


test_text_codes_do_not_depend_on_the_batch_int8 = _text_case("int8")
test_text_codes_do_not_depend_on_the_batch_int8_two_threads = _text_case("int8-2threads")
test_text_codes_do_not_depend_on_the_batch_onnx_fp32 = _text_case("onnx")
test_text_codes_do_not_depend_on_the_batch_torch = _text_case("torch")


def test_the_reported_case_gives_one_code(text_models):
    """The issue's example: a caption alone, and beside a 300-word text."""
    models, _ = text_models
    caption = "a photo of a dog number 7"
    other = " ".join(itertools.islice(itertools.cycle(WORDS[:16]), 300))
    for name, model in models.items():
        alone, beside = model.encode_texts([caption]), model.encode_texts([caption, other])
        assert np.array_equal(alone.codes[0], beside.codes[0]), name
        assert np.array_equal(alone.embeddings[0], beside.embeddings[0]), name


# -- images ------------------------------------------------------------------------------------

PHOTOS: dict[str, bytes] = {}


def make_image(spec) -> tuple[str, object]:
    """(key, image) from a drawn spec: a real photo (JPEG bytes), or generated pixels of a
    random size as a PIL image (solid colour, noise, gradient) or as PNG/JPEG bytes."""
    kind, w, h, colour, seed, as_bytes = spec
    if kind == "photo":
        if not PHOTOS:
            from crossbit.server.demo.sample_photos import sample_photos

            PHOTOS.update(sample_photos())
        name = sorted(PHOTOS)[seed % len(PHOTOS)]
        return f"photo:{name}", PHOTOS[name]
    rng = np.random.default_rng(seed)
    if kind == "solid":
        pixels = np.broadcast_to(np.array(colour, np.uint8), (h, w, 3))
    elif kind == "noise":
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    else:  # gradient with noise
        ramp = np.linspace(0, 1, w)[None, :, None] * np.array(colour)[None, None, :]
        pixels = np.clip(ramp + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(np.ascontiguousarray(pixels), "RGB")
    key = f"{kind}:{w}x{h}:{colour}:{seed}:{as_bytes}"
    if as_bytes:
        buf = io.BytesIO()
        image.save(buf, format="PNG" if seed % 2 else "JPEG")
        return key, buf.getvalue()
    return key, image


image_spec = st.tuples(st.sampled_from(["photo", "solid", "noise", "gradient"]),
                       st.integers(1, 320), st.integers(1, 320),
                       st.tuples(*[st.integers(0, 255)] * 3), st.integers(0, 2**16),
                       st.booleans())
IMAGE_RUNTIMES = {"onnx": (max(5, FUZZ // 6), 40),  # name -> (examples, largest batch)
                  "torch": (max(2, FUZZ // 20), 40 if LONG else 5)}


@pytest.fixture(scope="module")
def image_models():
    served, eager = HashModel.load(), HashModel.load()  # eager: torch backbone, torch heads
    use_image_runtime(served, "onnx")
    use_head_runtime(served)
    assert served.head_runtimes, "ONNX Runtime heads"
    models = {"onnx": served, "torch": eager}
    return models, {name: Alone(m.encode_images) for name, m in models.items()}


def _image_case(name: str):
    examples, size = IMAGE_RUNTIMES[name]

    @settings(max_examples=examples, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(specs=pick_batch(image_spec, size),
           batch_size=st.integers(1, 40))
    def case(image_models, specs, batch_size):
        models, alone = image_models
        keys, images = zip(*[make_image(s) for s in specs])
        out = models[name].encode_images(list(images), batch_size=batch_size)
        assert_each_as_alone(out, images, keys, alone[name], f"image/{name}")

    return case


test_image_codes_do_not_depend_on_the_batch_onnx = _image_case("onnx")
test_image_codes_do_not_depend_on_the_batch_torch = _image_case("torch")


# -- through the service core ------------------------------------------------------------------

@pytest.fixture(scope="module")
def int8_core(tmp_path_factory):
    """The service core over real flat indexes with the shipped model and the default
    (auto: int8) text runtime; concurrent texts share the text batcher's batches."""
    from crossbit.indexer import open_index
    from crossbit.server.config import ServerConfig
    from crossbit.server.core import RetrievalCore

    folder = tmp_path_factory.mktemp("core")
    model = HashModel.load()
    use_text_runtime(model, "auto", 1)
    use_head_runtime(model)
    assert model.text_runtime.precision == "int8" and model.head_runtimes
    indexes = {m: open_index(folder / m, model.bits, "flat", snapshot_interval=0)
               for m in ("image", "text")}
    core = RetrievalCore.with_indexes(model, indexes, ServerConfig(data=str(folder)))
    yield core
    core.close()


serial = itertools.count()
core_text = text_st.map(lambda t: t[:2000]).filter(str.strip)  # what the service accepts


@settings(max_examples=max(4, FUZZ // 15), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=core_text, before=st.lists(core_text, max_size=8),
       after=st.lists(core_text, max_size=8), again=st.lists(core_text, min_size=1, max_size=8))
def test_a_stored_text_is_found_by_itself_and_adds_again_unchanged(int8_core, text, before,
                                                                    after, again):
    from crossbit.server.core.requests import NewItem, Query

    n = next(serial)
    key = f"target-{n}"
    mates = [NewItem(t, key=f"mate-{n}-{i}") for i, t in enumerate(before + after)]
    items = mates[: len(before)] + [NewItem(text, key=key)] + mates[len(before):]
    outcomes = int8_core.add("text", items)  # one call: its texts share the batcher's batches
    target = outcomes[len(before)]
    assert target.ok, target.error
    # searched alone, and among other searches in one batch
    found = int8_core.search(Query(text=text, modality="text", radius=0, top_k=1000))
    assert target.id in {h.id for h in found.hits}, "radius 0 did not find the text itself"
    queries = [Query(text=t, modality="text", top_k=1000) for t in again] \
        + [Query(text=text, modality="text", top_k=1000)]
    hits = int8_core.search_many(queries)[-1].hits
    distance = {h.id: h.distance for h in hits}
    assert distance.get(target.id) == 0, f"its own text is at distance {distance.get(target.id)}"
    # added again in another batch: nothing changed
    others = [NewItem(t, key=f"again-{n}-{i}") for i, t in enumerate(again)]
    redo = int8_core.add("text", others + [NewItem(text, key=key)])[-1]
    assert redo.ok and redo.id == target.id
    assert redo.outcome == "unchanged", f"re-adding the same text gave {redo.outcome!r}"
    checked["core/int8"] = checked.get("core/int8", 0) + 1


@settings(max_examples=max(10, FUZZ // 6), deadline=None)
@given(hidden=st.sampled_from([0, 32]), embed=st.sampled_from([0, 8]),
       n=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_a_head_row_alone_is_the_modules_forward(hidden, embed, n, seed):
    """item_outputs' one-row path (HashHead.forward_row) gives what the modules give one
    row, and what a batch gives up to float rounding."""
    import torch

    from crossbit.encoders.heads import HashHead, head_outputs, item_outputs

    torch.manual_seed(seed)
    head = HashHead(24, 16, hidden, 0.3, embed)
    head.set_input_stats(torch.randn(50, 24))
    if hidden:  # running statistics of their own, not the initial ones
        head.train()
        head(torch.randn(64, 24))
    head.eval()
    x = torch.randn(n, 24)
    rows = item_outputs(head, x)
    for i in range(n):
        one = head_outputs(head, x[i : i + 1])
        assert np.array_equal(rows.codes[i], one.codes[0])
        assert np.array_equal(rows.embeddings[i], one.embeddings[0])
    together = head_outputs(head, x)
    np.testing.assert_allclose(rows.embeddings, together.embeddings, atol=1e-5)
    checked["head/forward_row"] = checked.get("head/forward_row", 0) + n


def test_per_token_int8_on_another_bert(tmp_path, monkeypatch, caplog):
    """The per-token rewrite of a quantize_dynamic graph holds for another BERT (a small
    random one, 3 layers): int8 features near fp32's, each text's the same in any batch; the
    quantizer's per-tensor INFO lines are not logged (a first run on a terminal logs INFO)."""
    import logging
    import shutil

    from transformers import BertConfig, BertModel

    from crossbit.encoders.onnx_text import onnx_text_encoder
    from crossbit.encoders.text_models import resolve_text_model

    monkeypatch.setenv("CROSSBIT_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "bert"
    minilm = resolve_text_model("minilm-l6")
    config = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=3,
                        num_attention_heads=4, intermediate_size=128)
    BertModel(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(os.path.join(minilm, name), folder / name)
    fp32 = onnx_text_encoder(str(folder), "fp32", threads=1)
    caplog.set_level(logging.INFO)
    int8 = onnx_text_encoder(str(folder), "int8", threads=1)
    chatter = [r.getMessage()[:80] for r in caplog.records
               if r.name == "root" and r.levelno < logging.WARNING]
    assert not chatter, chatter
    texts = ["a dog runs", "two children play football in a park at sunset", "snow",
             " ".join(WORDS * 5), "東京の猫 🙂", ""]
    a, b = fp32(texts), int8(texts)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.98, cosine
    for i, text in enumerate(texts):
        assert np.array_equal(int8([text])[0], b[i]) and np.array_equal(fp32([text])[0], a[i])


@settings(max_examples=max(2, FUZZ // 40), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(texts=st.lists(core_text, min_size=1, max_size=30, unique=True))
def test_reindexed_texts_are_found_by_themselves(tmp_path_factory, texts):
    """Texts added through the core (one thread, batches of the batcher), re-encoded by
    reindex (batches of 64, ONNX Runtime on two threads), are at distance 0 from their own
    text searched by a server again, and add again unchanged."""
    from crossbit.indexer import open_index
    from crossbit.server.cli.reindex import reindex
    from crossbit.server.config import ServerConfig
    from crossbit.server.core import RetrievalCore
    from crossbit.server.core.requests import NewItem, Query

    folder = tmp_path_factory.mktemp("reindexed")
    serving, reindexing = HashModel.load(), HashModel.load()
    for model, threads in ((serving, 1), (reindexing, 2)):  # as serve and reindex set them up
        use_text_runtime(model, "int8", threads)
        use_head_runtime(model)

    def core():
        indexes = {m: open_index(folder / f"{m}s", 64, "flat", snapshot_interval=0,
                                 model=serving.fingerprint()) for m in ("image", "text")}
        return RetrievalCore.with_indexes(serving, indexes, ServerConfig(data=str(folder)))

    first = core()
    ids = [o.id for o in first.add("text", [NewItem(t, key=f"k{i}") for i, t in enumerate(texts)])]
    first.close()
    assert {r.modality: r.encoded for r in reindex(folder, reindexing)}["text"] == len(texts)
    again = core()
    try:
        for item_id, text in zip(ids, texts):
            found = again.search(Query(text=text, modality="text", radius=0, top_k=1000))
            assert item_id in {h.id for h in found.hits}, f"{text!r:.60}: not at distance 0"
        redo = again.add("text", [NewItem(t, key=f"k{i}") for i, t in enumerate(texts)])
        assert [o.outcome for o in redo] == ["unchanged"] * len(texts)
    finally:
        again.close()
    checked["core/reindex"] = checked.get("core/reindex", 0) + len(texts)


def test_a_head_changed_after_export_is_not_served_stale():
    """An ONNX Runtime head belongs to the weights it was exported with: once the torch
    head changes (training), encoding goes back to the torch head, one row at a time."""
    import torch

    model = HashModel.load()
    use_head_runtime(model)
    texts = ["a dog runs", "two children play football in a park"]
    features = model.text_features(texts)
    before = model.encode_text_features(features)
    with torch.no_grad():
        model.text_head.hash.bias.add_(5.0)  # every tanh pushed towards +1
    assert not model.head_runtimes["text"].current()
    after = model.encode_text_features(features)
    assert not np.array_equal(before.codes, after.codes)
    assert np.unpackbits(after.codes).mean() > np.unpackbits(before.codes).mean()
