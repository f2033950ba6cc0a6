"""Unit tests of the boundary modules, no server: protobuf conversion, the error mapping, image
decoding; and the layering promises (which packages import which)."""

from __future__ import annotations

import io
import subprocess
import sys

import grpc
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from crossbit.indexer.items import StoreError
from crossbit.server.core.exceptions import LimitError, NotFoundError, UnavailableError
from crossbit.server.core.images import PixelBudget, decode_image, make_thumbnail
from crossbit.server.core.requests import AddOutcome, Hit, SearchResult
from crossbit.server.rpc import convert
from crossbit.server.rpc.errors import status_for
from crossbit.v1 import crossbit_pb2 as pb

texts = st.text(max_size=40)
metadata = st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=4)


@settings(max_examples=60, deadline=None)
@given(key=texts, text=texts, meta=metadata, item_id=st.none() | st.integers(0, 2**63 - 1))
def test_items_convert_with_every_field(key, text, meta, item_id):
    msg = pb.TextItem(key=key, text=text, metadata=meta)
    if item_id is not None:
        msg.id = item_id
    item = convert.text_item(msg)
    assert (item.payload, item.key, item.metadata, item.id) == (text, key, meta, item_id)
    image = convert.image_item(pb.ImageItem(key=key, image=text.encode(), metadata=meta))
    assert image.payload == text.encode() and image.id is None  # an unset id is None, not 0


@settings(max_examples=60, deadline=None)
@given(which=st.sampled_from(["text", "image", "code"]), top_k=st.integers(0, 1000),
       radius=st.none() | st.integers(0, 64), rerank=st.none() | st.booleans(),
       fresh=st.booleans(), modality=st.sampled_from([pb.MODALITY_UNSPECIFIED, pb.IMAGE, pb.TEXT]))
def test_queries_convert_with_their_optional_fields(which, top_k, radius, rerank, fresh, modality):
    msg = pb.SearchRequest(top_k=top_k, modality=modality, fresh=fresh,
                           **{which: "x" if which == "text" else b"\x01" * 8})
    if radius is not None:
        msg.radius = radius
    if rerank is not None:
        msg.rerank = rerank
    q = convert.query(msg)
    assert [q.text is not None, q.image is not None, q.code is not None] == \
        [which == "text", which == "image", which == "code"]
    assert (q.top_k, q.radius, q.rerank, q.fresh) == (top_k, radius, rerank, fresh)
    assert q.modality == ("text" if modality == pb.TEXT else "image")


def test_conversion_refusals_and_responses():
    with pytest.raises(ValueError, match="needs one of"):
        convert.query(pb.SearchRequest(top_k=3))
    with pytest.raises(ValueError, match="unknown modality 7"):
        convert.modality_name(7)
    outcomes = [AddOutcome(0, True, 5, "a", outcome="added"),
                AddOutcome(1, True, 6, outcome="replaced"),
                AddOutcome(2, False, error="bad", code="INVALID_ARGUMENT"),
                AddOutcome(3, True, 7, outcome="unchanged")]
    r = convert.add_response(outcomes)
    assert (r.added, r.stored, r.failed, r.replaced, r.unchanged) == (1, 3, 1, 1, 1)
    assert [x.id for x in r.results] == [5, 6, 0, 7] and r.results[2].error_code == "INVALID_ARGUMENT"
    hits = [Hit(1, "k", 3, 0.5, {"n": 1}, "text")]
    out = convert.search_response(SearchResult(hits, 64, 1.0, 2.0, True))
    assert out.hits[0].metadata == {"n": "1"} and out.hits[0].modality == pb.TEXT and out.reranked
    wrapped = convert.with_committed(ValueError("boom"), outcomes[:2], 9)
    assert type(wrapped) is ValueError and "after 9 items: 2 of them were committed" in str(wrapped)


@pytest.mark.parametrize("exc, code", [
    (LimitError("big"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ValueError("bad"), grpc.StatusCode.INVALID_ARGUMENT),
    (TypeError("bad"), grpc.StatusCode.INVALID_ARGUMENT),
    (NotFoundError("unknown id 3"), grpc.StatusCode.NOT_FOUND),
    (KeyError("x"), grpc.StatusCode.NOT_FOUND),
    (TimeoutError(), grpc.StatusCode.DEADLINE_EXCEEDED),
    (StoreError("disk"), grpc.StatusCode.UNAVAILABLE),
    (UnavailableError("closing"), grpc.StatusCode.UNAVAILABLE),
    (RuntimeError("secret detail"), grpc.StatusCode.INTERNAL),
])
def test_every_exception_class_maps_to_one_status(exc, code):
    got, message = status_for(exc)
    assert got == code and message
    if code == grpc.StatusCode.INTERNAL:
        assert "secret detail" not in message  # internals stay in the server log
    if isinstance(exc, NotFoundError):
        assert message == "unknown id 3"  # not KeyError's quoted repr


def _png(w: int, h: int, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (w, h)).save(out, format="PNG")
    return out.getvalue()


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=300))
def test_any_bytes_decode_or_fail_as_bad_input(data):
    try:
        image = decode_image(data, 10_000, 10_000)
    except (ValueError, TypeError):  # LimitError is a ValueError too
        return
    assert image.mode == "RGB"


def test_image_limits_and_modes():
    assert decode_image(_png(4, 3, "L"), 10_000, 100).mode == "RGB"
    with pytest.raises(LimitError, match="bytes; the limit is 10"):
        decode_image(_png(4, 4), 10, 100)
    with pytest.raises(LimitError, match="pixels"):
        decode_image(_png(20, 20), 10_000, 100)
    with pytest.raises(ValueError, match="empty"):
        decode_image(b"", 10, 10)
    with pytest.raises(TypeError):
        decode_image("not bytes", 10, 10)
    budget = PixelBudget(50)
    decode_image(_png(5, 5), 10_000, 100, budget)
    with pytest.raises(LimitError, match="per request"):
        decode_image(_png(6, 5), 10_000, 100, budget)  # 25 + 30 > 50
    thumb = Image.open(io.BytesIO(make_thumbnail(Image.new("RGB", (400, 100)), 80)))
    assert thumb.size == (80, 20) and thumb.format == "JPEG"


def _imports(module: str) -> set[str]:
    code = (f"import sys, {module}; print(' '.join(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('grpc', 'torch', 'torchvision', 'transformers', 'faiss', "
            "'pymilvus', 'crossbit'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_layering():
    core = _imports("crossbit.server.core")
    assert "grpc" not in core and "torch" not in core  # the core is plain Python over the indexes
    indexer = _imports("crossbit.indexer.index") | _imports("crossbit.indexer.milvus")
    assert "grpc" not in indexer and not any(m.startswith("crossbit.encoders") for m in indexer)
    encoders = _imports("crossbit.encoders.model") | _imports("crossbit.encoders.runtime")
    assert "grpc" not in encoders and not any(m.startswith("crossbit.indexer") for m in encoders)
    assert not any(m.startswith("crossbit.encoders.training") for m in encoders)
    app = _imports("crossbit.server.rpc.app")
    assert not any(m.startswith("crossbit.encoders.training") for m in app)  # serving never trains
    # a light model serves without torch: nothing on its path imports torch when imported
    light = _imports("crossbit.encoders.serving") | _imports("crossbit.encoders.light")
    for serving in (app, light, _imports("crossbit.server.cli.main"),
                    _imports("crossbit.server.web.app")):
        assert not {"torch", "torchvision", "transformers"} & serving
    assert "grpc" not in light and not any(m.startswith("crossbit.indexer") for m in light)
    assert "faiss" not in _imports("crossbit.indexer")  # loads with the first FAISS index
    assert np.__name__  # numpy is everyone's
