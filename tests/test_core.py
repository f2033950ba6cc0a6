"""The service core alone: a small fake encoder, real flat indexes, no gRPC and no model."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
import pytest

from crossbit.indexer import open_index
from crossbit.server.config import ServerConfig
from crossbit.server.core import RetrievalCore
from crossbit.server.core.exceptions import LimitError, NotFoundError
from crossbit.server.core.requests import NewItem, Query
from crossbit.server.web.browse import Browser

DIM = 32


class Encoded(NamedTuple):
    codes: np.ndarray
    embeddings: np.ndarray


class WordModel:
    """Texts as hashed bags of words: texts sharing words get near codes (64 bits)."""

    bits = 64
    device = SimpleNamespace(type="cpu")

    def __init__(self):
        self.calls = 0
        self.projection = np.random.default_rng(0).standard_normal((DIM, self.bits))

    def _embed(self, text: str) -> np.ndarray:
        v = np.zeros(DIM, np.float32)
        for word in text.lower().split():
            v[int(hashlib.sha1(word.encode()).hexdigest(), 16) % DIM] += 1.0
        return v / max(np.linalg.norm(v), 1e-9)

    def encode_texts(self, texts, batch_size=64) -> Encoded:
        self.calls += 1
        emb = np.stack([self._embed(t) for t in texts]).astype(np.float32)
        return Encoded(np.packbits(emb @ self.projection > 0, axis=1), emb)

    def encode_images(self, images, batch_size=32) -> Encoded:  # an image's mean colour as words
        words = [" ".join(f"c{int(c) // 64}" for c in np.asarray(im).reshape(-1, 3).mean(0))
                 for im in images]
        return self.encode_texts(words)


@pytest.fixture()
def core(tmp_path):
    indexes = {m: open_index(tmp_path / m, 64, "flat", snapshot_interval=0)
               for m in ("image", "text")}
    c = RetrievalCore.with_indexes(WordModel(), indexes,
                                   ServerConfig(data=str(tmp_path), max_text_chars=200))
    yield c
    c.close()


TEXTS = ["two dogs playing in the snow", "a bowl of hot soup", "a red bus on a street",
         "dogs running on a beach", "a cat asleep on a sofa"]


def add(core, texts, keys=None):
    keys = keys or [""] * len(texts)
    return core.add("text", [NewItem(t, key=k) for t, k in zip(texts, keys)])


def test_added_texts_are_found_by_their_words(core):
    outcomes = add(core, TEXTS, [f"t{i}" for i in range(len(TEXTS))])
    assert all(o.ok and o.outcome == "added" for o in outcomes)
    result = core.search(Query(text="two dogs playing in the snow", modality="text", top_k=3))
    assert result.hits[0].key == "t0" and result.hits[0].distance == 0
    assert result.hits[0].metadata["text"] == TEXTS[0]  # a text item's text is kept with it
    assert result.reranked and result.hits[0].score == pytest.approx(1.0, abs=1e-3)  # float16 in memory
    assert core.stats()["texts"] == len(TEXTS) and core.stats()["images"] == 0


def test_keys_replace_and_repeats_in_one_call_are_refused_alone(core):
    first = add(core, ["a bowl of hot soup"], ["soup"])[0]
    again = add(core, ["a bowl of hot soup", "cold soup", "x y"], ["soup", "soup", "other"])
    assert again[0].ok and again[0].id == first.id and again[0].outcome == "unchanged"
    assert not again[1].ok and again[1].code == "INVALID_ARGUMENT" and "repeats" in again[1].error
    assert again[2].ok and again[2].outcome == "added"
    changed = add(core, ["cold soup"], ["soup"])[0]
    assert changed.outcome == "replaced" and changed.id == first.id


def test_bad_items_fail_alone_with_their_status(core):
    outcomes = add(core, ["fine text", "   ", "x" * 500, "also fine"])
    assert [o.ok for o in outcomes] == [True, False, False, True]
    assert outcomes[1].code == "INVALID_ARGUMENT" and "empty" in outcomes[1].error
    assert outcomes[2].code == "RESOURCE_EXHAUSTED"
    images = core.add("image", [NewItem(b"not an image")])
    assert not images[0].ok and "not a readable image" in images[0].error


@pytest.mark.parametrize("query, match", [
    (Query(text="x", top_k=10**6, modality="text"), "top_k"),
    (Query(code=b"\x00" * 3, modality="text"), "8 bytes"),
    (Query(code=b"\x00" * 8, radius=65, modality="text"), "radius"),
    (Query(text="x", code=b"\x00" * 8, modality="text"), "exactly one"),
    (Query(text="x", modality="sound"), "modality"),
])
def test_queries_are_checked_once_with_one_message(core, query, match):
    with pytest.raises(ValueError, match=match):
        core.search(query)


def test_delete_reports_what_was_not_stored(core):
    """Keys and ids that are gone are reported, not an error: a delete sent again after a
    timeout succeeds, and the known ones of a call with unknown ones are deleted."""
    ids = add(core, TEXTS[:3], ["a", "b", "c"])
    deleted, missing = core.delete([ids[2].id, 999], ["a", "missing"], "text")
    assert deleted == 2 and missing.ids == [999] and missing.keys == ["missing"]
    assert core.stats()["texts"] == 1
    again, missing = core.delete([ids[2].id], ["a"], "text")  # the retry of the same call
    assert again == 0 and missing.ids == [ids[2].id] and missing.keys == ["a"]
    hits = core.search(Query(text=TEXTS[0], modality="text", top_k=5)).hits
    assert [h.key for h in hits] == ["b"]


def test_too_many_items_in_one_call(core):
    core.config.max_batch_items = 3
    with pytest.raises(LimitError, match="the limit is 3"):
        add(core, TEXTS)


def test_queries_share_one_encoder_batch(core):
    add(core, TEXTS)
    before = core.model.calls
    results = core.search_many([Query(text=t, modality="text", top_k=1) for t in TEXTS])
    assert [r.hits[0].distance for r in results] == [0] * len(TEXTS)
    assert core.model.calls - before <= len(TEXTS)  # never more than one call per query


def test_browsing(core):
    ids = [o.id for o in add(core, TEXTS, [f"t{i}" for i in range(len(TEXTS))])]
    browser = Browser(core)
    like = browser.like(ids[0], "text", top_k=2)
    assert like.hits[0].id == ids[0]
    assert browser.item(ids[1], "text")["key"] == "t1"
    assert [r["id"] for r in browser.page(0, 2, "text")] == sorted(ids)[:2]
    assert [r["id"] for r in browser.page(0, 2, "text", newest_first=True)] == sorted(ids)[-2:][::-1]
    with pytest.raises(NotFoundError):
        browser.item(10**9, "text")
    with pytest.raises(ValueError, match="limit"):
        browser.page(0, 0, "text")
