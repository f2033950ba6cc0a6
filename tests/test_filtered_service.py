"""Filters through the service: a filtered search by text, image and code, SearchBatch with a filter
per query, Count and Delete by filter, the web API's filter=, typed metadata kept as sent, old
string metadata filterable with == and in, and a bad expression answered INVALID_ARGUMENT with its
position."""

from __future__ import annotations

import httpx
import pytest

from crossbit.client import Client, InvalidArgument

from helpers import free_port

PHOTOS = {"chelsea": {"album": "2023", "year": 2023, "price": 12.5, "tags": ["cat", "pets"]},
          "coffee": {"album": "2024", "year": 2024, "price": 3.0, "tags": ["drink"],
                     "in_stock": True},
          "rocket": {"album": "2024", "year": 2024, "price": 99.0, "tags": ["space"],
                     "in_stock": False},
          "astronaut": {"album": "2022", "year": 2022, "camera": "hasselblad", "tags": ["space"]},
          "coins": {"album": "2024"}}


@pytest.fixture
def served(make_server, photos):
    web = free_port()
    running = make_server(web_port=web)
    client = Client(f"127.0.0.1:{running.port}")
    names = list(PHOTOS)
    ids = client.add_images([photos[n] for n in names], keys=names,
                            metadata=[PHOTOS[n] for n in names])
    assert None not in ids
    return running, client, dict(zip(names, ids)), f"http://127.0.0.1:{web}"


def keys(hits) -> set[str]:
    return {h.key for h in hits}


def test_filtered_searches_by_text_image_and_code(served, photos):
    running, c, ids, _ = served
    assert keys(c.search(text="a photo", top_k=10, filter='album == "2024"')) == \
        {"coffee", "rocket", "coins"}
    assert keys(c.search(image=photos["rocket"], top_k=10,
                         filter='tags contains "space"')) == {"rocket", "astronaut"}
    assert keys(c.search(code=b"\0" * 8, top_k=10, filter="year >= 2023 and price < 50")) == \
        {"chelsea", "coffee"}
    assert keys(c.search(text="x", top_k=10, filter="in_stock == true")) == {"coffee"}
    assert keys(c.search(text="x", top_k=10, filter="exists camera")) == {"astronaut"}
    assert keys(c.search(text="x", top_k=10, filter='key like "co%"')) == {"coffee", "coins"}
    assert keys(c.search(text="x", top_k=10, filter=f"id in [{ids['coins']}]")) == {"coins"}
    # never short of min(k, matches): 3 match, k = 2 gives 2, k = 10 gives 3
    assert len(c.search(text="x", top_k=2, filter='album == "2024"')) == 2
    hit = c.search(text="x", top_k=10, filter='album == "2023"')[0]
    assert hit.metadata == {"album": "2023", "year": 2023, "price": 12.5,
                            "tags": ["cat", "pets"]}  # types kept as sent
    with pytest.raises(InvalidArgument, match=r"queries\[1\]: filter: .* position"):
        c.search_batch([{"text": "a"}, {"text": "a", "filter": "year >"}])
    batch = c.search_batch([{"text": "a", "top_k": 10, "filter": 'album == "2022"'},
                            {"text": "a", "top_k": 10, "filter": 'album == "2023"'},
                            {"text": "a", "top_k": 10}])
    assert [keys(b) for b in batch[:2]] == [{"astronaut"}, {"chelsea"}] and len(batch[2]) == 5


def test_count_and_delete_by_filter_and_errors(served):
    running, c, ids, base = served
    assert c.count(filter='album == "2024"') == 3 and c.count() == 5
    with pytest.raises(InvalidArgument, match="position"):
        c.search(text="x", filter='album == ')
    with pytest.raises(InvalidArgument, match="position"):
        c.count(filter="key > 5")
    r = httpx.get(f"{base}/api/search", params={"q": "a photo", "k": 10,
                                                "filter": 'tags contains "space"'})
    assert r.status_code == 200 and {h["key"] for h in r.json()["hits"]} == {"rocket",
                                                                              "astronaut"}
    # "more like this" pages and cuts as a search does
    like = {"like": ids["coffee"], "k": 2}
    whole = [h["id"] for h in httpx.get(f"{base}/api/search", params={**like, "k": 5}).json()["hits"]]
    paged = [h["id"] for o in (0, 2, 4) for h in
             httpx.get(f"{base}/api/search", params={**like, "offset": o}).json()["hits"]]
    assert paged == whole and len(whole) == 5
    scores = [h["score"] for h in httpx.get(f"{base}/api/search",
                                            params={**like, "k": 5}).json()["hits"]]
    cut = httpx.get(f"{base}/api/search", params={**like, "k": 5, "min_score": scores[1]})
    assert [h["score"] for h in cut.json()["hits"]] == [s for s in scores if s >= scores[1]]
    bad = httpx.get(f"{base}/api/search", params={"q": "a", "filter": "year >>= 1"})
    assert bad.status_code == 400 and "position" in bad.json()["error"]["message"]
    assert httpx.get(f"{base}/api/count", params={"filter": "year < 2024"}).json()["count"] == 2
    gone = c.delete(filter='album == "2024" and not (in_stock == true)')
    assert gone == 2 and c.count() == 3
    assert keys(c.search(text="x", top_k=10)) == {"chelsea", "coffee", "astronaut"}


def test_old_string_metadata_is_filterable(make_server, tmp_path):
    """A store written before typed metadata (every value a string) opens and filters with ==
    and in, as strings."""
    from crossbit.indexer import open_index

    data = tmp_path / "old"
    with open_index(data / "texts", 64, "flat", snapshot_interval=0) as index:
        index.add(__import__("numpy").zeros((2, 8), "uint8"), keys=["a", "b"],
                  metadata=[{"year": "2024", "text": "a"}, {"year": "2023", "text": "b"}])
    running = make_server(data=str(data))
    c = Client(f"127.0.0.1:{running.port}")
    assert c.count(filter='year == "2024"', modality="text") == 1
    assert c.count(filter='year in ["2023", "2024"]', modality="text") == 2
    assert c.count(filter="year == 2024", modality="text") == 0  # a string is not a number
