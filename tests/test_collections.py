"""Collections through a real server: create, list, describe, drop (with in-flight calls), a model
per collection (other bits), items kept apart, restart with several, an old data directory as
``default``; reading back (get, scroll pages), search paging and min_score."""

from __future__ import annotations

import json
import threading
import time

import pytest

from crossbit.client import Client, CrossbitError, InvalidArgument, NotFound


@pytest.fixture(scope="module")
def model32(tmp_path_factory):
    """A 32-bit model (random heads on the shipped backbones): another model, other bits."""
    import dataclasses

    import torch

    from crossbit.encoders.model import HashModel

    folder = tmp_path_factory.mktemp("model32")
    base = HashModel.load()
    torch.manual_seed(0)
    HashModel(dataclasses.replace(base.config, bits=32)).save(folder)
    return folder


def texts_of(client, collection, **search):
    return [h.key for h in client.search(text="a dog", modality="text", top_k=50,
                                         collection=collection, **search)]


def test_collections_lifecycle_and_isolation(make_server, tmp_path, model32):
    data = tmp_path / "data"
    running = make_server(data=str(data))
    c = Client(f"127.0.0.1:{running.port}")
    c.add_texts(["a dog in the snow"], keys=["d-default"])  # the default collection, as before
    shop = c.create_collection("shop", index="flat")
    assert shop["name"] == "shop" and shop["bits"] == 64 and shop["index_kind"] == "flat"
    small = c.create_collection("small", model=str(model32), index="hnsw", options={"m": 8})
    assert small["bits"] == 32 and small["model_fingerprint"] != shop["model_fingerprint"]
    assert c.create_collection("shop", exist_ok=True)["name"] == "shop"
    with pytest.raises(InvalidArgument, match="exists already"):
        c.create_collection("shop")
    with pytest.raises(InvalidArgument, match="exist_ok returns it only when"):
        c.create_collection("shop", index="hnsw", exist_ok=True)  # not the flat one
    for bad in ("Shop", "1x", "a-b", "", "x" * 64, "../etc"):
        with pytest.raises(InvalidArgument, match="collection name"):
            c.create_collection(bad)
    with pytest.raises(InvalidArgument, match="takes no options"):
        c.create_collection("bad_options", index="flat", options={"nprobe": 3})
    with pytest.raises(InvalidArgument):
        c.create_collection("bad_model", model=str(tmp_path / "no-such-model"))
    assert not (data / "collections" / "bad_model").exists()

    shop_client = Client(f"127.0.0.1:{running.port}", collection="shop")
    shop_client.add_texts(["a dog on a sofa", "a red bus"], keys=["s1", "s2"],
                          metadata=[{"price": 9.5}, {"price": 20}])
    c.add_texts(["a dog runs"], keys=["k1"], collection="small")
    assert texts_of(c, "default") == ["d-default"]
    assert sorted(texts_of(c, "shop")) == ["s1", "s2"]
    assert texts_of(c, "small") == ["k1"]
    # a code of the wrong length for a collection's bits is refused with what it must be
    with pytest.raises(InvalidArgument, match="4 bytes for 32-bit"):
        c.search(code=b"\0" * 8, collection="small", modality="text")
    assert len(c.encode(texts=["x"], collection="small").texts[0]) == 4
    listed = {x["name"]: x for x in c.list_collections()}
    assert set(listed) == {"default", "shop", "small"}
    assert (listed["shop"]["texts"], listed["default"]["texts"]) == (2, 1)
    described = c.describe_collection("shop")
    assert described["size_bytes"] > 0 and described["created"] > 0
    assert c.stats(collection="shop")["texts"] == 2
    with pytest.raises(NotFound, match="no collection"):
        c.search(text="a dog", collection="nope")
    # reading back
    got = shop_client.get(keys=["s2", "nope"], modality="text", with_codes=True)
    assert [i.key for i in got] == ["s2"] and got.missing_keys == ["nope"]
    assert got[0].metadata["price"] == 20 and len(got[0].code) == 8
    # a restart brings every collection back, items and all
    running.stop(1.0)
    running = make_server(data=str(data))
    c = Client(f"127.0.0.1:{running.port}")
    assert {x["name"] for x in c.list_collections()} == {"default", "shop", "small"}
    assert sorted(texts_of(c, "shop")) == ["s1", "s2"] and texts_of(c, "small") == ["k1"]
    # drop: the name twice, then gone (its folder too), the others untouched
    with pytest.raises(InvalidArgument, match="name twice"):
        c.drop_collection("shop", confirm="shpo")
    with pytest.raises(InvalidArgument, match="cannot be dropped"):
        c.drop_collection("default", confirm="default")
    assert c.drop_collection("shop", confirm="shop")
    assert not (data / "collections" / "shop").exists()
    with pytest.raises(NotFound):
        c.stats(collection="shop")
    assert texts_of(c, "default") == ["d-default"]
    again = c.create_collection("shop")  # the name can be used again, empty
    assert again["texts"] == 0


def test_old_data_directory_opens_as_default(make_server, tmp_path):
    data = tmp_path / "old"
    running = make_server(data=str(data))
    with Client(f"127.0.0.1:{running.port}") as c:
        c.add_texts(["a cat"], keys=["cat"])
    running.stop(1.0)
    assert sorted(p.name for p in data.iterdir()) == ["images", "texts"]  # the layout as before
    running = make_server(data=str(data))
    with Client(f"127.0.0.1:{running.port}") as c:
        assert c.stats(collection="default")["texts"] == 1
        assert c.get(keys=["cat"], modality="text")[0].key == "cat"


def test_drop_under_load(make_server, tmp_path):
    """Calls on the dropped collection fail cleanly (NOT_FOUND, or UNAVAILABLE when they were
    inside it), calls on another carry on."""
    running = make_server(data=str(tmp_path / "d"))
    c = Client(f"127.0.0.1:{running.port}", retries=0)
    c.create_collection("doomed")
    c.add_texts([f"a dog {i}" for i in range(50)], collection="doomed")
    c.add_texts(["a dog at home"], keys=["home"])
    codes: dict[str, list[str]] = {"doomed": [], "default": []}
    stop = threading.Event()

    def load(collection):
        while not stop.is_set():
            try:
                c.search(text="a dog", modality="text", collection=collection)
                codes[collection].append("OK")
            except CrossbitError as exc:
                codes[collection].append(exc.code)

    threads = [threading.Thread(target=load, args=(n,)) for n in ("doomed", "default",
                                                                  "doomed")]
    for t in threads:
        t.start()
    time.sleep(1.0)
    assert c.drop_collection("doomed", confirm="doomed")
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join()
    assert set(codes["default"]) == {"OK"}, set(codes["default"])
    assert set(codes["doomed"]) <= {"OK", "NOT_FOUND", "UNAVAILABLE"}, set(codes["doomed"])
    assert "NOT_FOUND" in codes["doomed"]
    assert c.search(text="a dog", modality="text")[0].key == "home"


def test_scroll_sees_every_item_once_while_others_write(make_server, tmp_path):
    running = make_server(data=str(tmp_path / "s"))
    c = Client(f"127.0.0.1:{running.port}")
    first = c.add_texts([f"caption {i}" for i in range(230)], keys=[f"k{i}" for i in range(230)])
    stop = threading.Event()
    writes = []

    def write():
        n = 0
        while not stop.is_set():  # new items, and deletes of items added meanwhile
            ids = c.add_texts([f"new {n}"], keys=[f"new{n}"])
            writes.append(ids[0])
            if n % 3 == 2:
                c.delete(keys=[f"new{n - 1}"], modality="text")
            n += 1

    writer = threading.Thread(target=write)
    writer.start()
    seen = [item.id for item in c.scroll(modality="text", page_size=17)]
    stop.set()
    writer.join()
    assert len(seen) == len(set(seen)), "an item was seen twice"
    assert set(first) <= set(seen), "an item that existed for the whole scroll was missed"
    assert seen == sorted(seen)
    page, cursor = c.scroll_page(modality="text", page_size=5)
    with pytest.raises(InvalidArgument, match="another scroll"):
        c.scroll_page(cursor, modality="image", page_size=5)
    with pytest.raises(InvalidArgument, match="not one this server gave"):
        c.scroll_page("garbage!", modality="text")


def test_search_pages_and_min_score(make_server, tmp_path):
    running = make_server(data=str(tmp_path / "p"))
    c = Client(f"127.0.0.1:{running.port}")
    c.add_texts([f"a dog number {i}" for i in range(40)])
    whole = c.search(text="a dog", modality="text", top_k=30)
    pages = [h.id for o in (0, 10, 20) for h in
             c.search(text="a dog", modality="text", top_k=10, offset=o)]
    assert pages == [h.id for h in whole]
    cut = whole[12].score
    above = c.search(text="a dog", modality="text", top_k=30, min_score=cut)
    assert all(h.score >= cut for h in above) and len(above) >= 13
    with pytest.raises(InvalidArgument, match="offset"):
        c.search(text="a dog", top_k=10, offset=995)


def test_token_file_is_read_and_reread(tmp_path):
    from crossbit.server.core.tokens import TokenTable

    path = tmp_path / "tokens.toml"
    path.write_text('[[token]]\nname = "a"\ntoken = "aaaaaaaa"\ncollections = { shop = "read" }\n')
    table = TokenTable(path=str(path))
    assert table.authenticate(["Bearer aaaaaaaa"]).may("shop", "search")
    path.write_text("not = [valid")
    assert "not reloaded" in table.reload()
    for typo in ("Shop", "sh*p", "../shop", ""):  # names no collection can have: a typo
        path.write_text('[[token]]\nname = "a"\ntoken = "aaaaaaaa"\n'
                        f'collections = {{ {json.dumps(typo)} = "read" }}\n')
        assert "can never be a collection name" in table.reload()
    assert table.authenticate(["Bearer aaaaaaaa"]).name == "a"  # the old tokens stay
    path.write_text(json.dumps({"token": [{"name": "b", "token": "bbbbbbbb",
                                           "collections": {"*": "admin"}}]}))
    path.rename(tmp_path / "tokens.json")
    table.path = str(tmp_path / "tokens.json")
    assert "reloaded" in table.reload()
    assert table.authenticate(["Bearer bbbbbbbb"]).may("anything", "drop")


def test_collection_calls_while_others_create_and_drop(make_server, tmp_path):
    """Creates and drops of generated names race with list, describe, create (exist_ok),
    searches and adds on them and on a steady collection: every answer is OK, NOT_FOUND or
    INVALID_ARGUMENT (exists already), never INTERNAL, and the steady collection never fails."""
    import random

    running = make_server(data=str(tmp_path / "data"))
    c = Client(f"127.0.0.1:{running.port}", retries=0)
    c.create_collection("steady")
    c.add_texts(["a dog"], keys=["s"], collection="steady")
    names = [f"churn{i}" for i in range(3)]
    stop, seen, lock = threading.Event(), {}, threading.Lock()

    def tally(what, code):
        with lock:
            seen.setdefault((what, code), 0)
            seen[(what, code)] += 1

    calls = {"create": lambda n: c.create_collection(n),
             "drop": lambda n: c.drop_collection(n, confirm=n),
             "list": lambda n: c.list_collections(),
             "describe": lambda n: c.describe_collection(n),
             "create_ok": lambda n: c.create_collection(n, exist_ok=True),
             "search": lambda n: c.search(text="a dog", modality="text", collection=n),
             "add": lambda n: c.add_texts(["a cat"], keys=["k"], collection=n)}

    def attempt(what, name):
        try:
            calls[what](name)
            tally(what, "OK")
        except CrossbitError as exc:
            tally(what, exc.code)
            assert name != "steady" or what == "create_ok", (what, exc)

    def churn(seed):
        rng = random.Random(seed)
        while not stop.is_set():
            name = rng.choice(names)
            attempt("create", name)
            attempt("drop", name)

    def reader(seed):
        rng = random.Random(seed)
        while not stop.is_set():
            attempt(rng.choice(["list", "describe", "create_ok", "search", "add"]),
                    rng.choice(names + ["steady"]))

    threads = [threading.Thread(target=churn, args=(i,)) for i in range(2)] + \
        [threading.Thread(target=reader, args=(10 + i,)) for i in range(3)]
    for t in threads:
        t.start()
    time.sleep(5)
    stop.set()
    for t in threads:
        t.join()
    codes = {code for (_, code) in seen}
    assert codes <= {"OK", "NOT_FOUND", "INVALID_ARGUMENT"}, seen
    assert seen.get(("list", "OK"), 0) > 5 and seen.get(("drop", "OK"), 0) > 0, seen
    assert c.search(text="a dog", modality="text", collection="steady")[0].key == "s"
