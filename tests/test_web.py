"""The web page and its JSON API: over real HTTP, and in headless Chromium driven by Playwright."""

from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path

import httpx
import pytest

from crossbit.client import Client

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = os.environ.get("CROSSBIT_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def web(make_server, photos):
    port = free_port()
    running = make_server(web_port=port)
    with Client(f"127.0.0.1:{running.port}") as c:
        names = ["chelsea", "coffee", "rocket", "camera", "moon", "coins"]
        ids = c.add_images([photos[n] for n in names], keys=names,
                           metadata=[{"source": "scikit-image"}] * len(names))
        c.add_texts(["a cat resting"], keys=["caption-1"])
    return f"http://127.0.0.1:{port}", dict(zip(names, ids)), running


def test_json_api(web, photos):
    base, ids, _ = web
    r = httpx.get(f"{base}/api/search", params={"q": "a cup of coffee", "k": 3})
    assert r.status_code == 200
    body = r.json()
    assert len(body["hits"]) == 3 and {"id", "key", "distance", "score"} <= set(body["hits"][0])
    assert body["bits"] == 64 and body["encode_ms"] >= 0
    r = httpx.post(f"{base}/api/search/image", params={"k": 2},
                   files={"image": ("rocket.jpg", photos["rocket"], "image/jpeg")})
    assert r.json()["hits"][0]["key"] == "rocket" and r.json()["hits"][0]["distance"] == 0
    like = httpx.get(f"{base}/api/search", params={"like": ids["moon"], "k": 1}).json()
    assert like["hits"][0]["key"] == "moon"
    item = httpx.get(f"{base}/api/items/{ids['coins']}").json()
    assert item["key"] == "coins" and item["metadata"] == {"source": "scikit-image"}
    thumb = httpx.get(f"{base}{item['thumbnail']}")
    assert thumb.headers["content-type"] == "image/jpeg" and thumb.content[:2] == b"\xff\xd8"
    import io

    from PIL import Image

    assert max(Image.open(io.BytesIO(thumb.content)).size) == 160
    page = httpx.get(f"{base}/api/items", params={"offset": 2, "limit": 3}).json()
    assert page["total"] == 6 and [i["key"] for i in page["items"]] == ["rocket", "camera", "moon"]
    stats = httpx.get(f"{base}/api/stats").json()
    assert stats["images"] == 6 and stats["texts"] == 1
    texts = httpx.get(f"{base}/api/search", params={"q": "a cat", "modality": "text"}).json()
    assert texts["hits"][0]["metadata"]["text"] == "a cat resting"


@pytest.mark.parametrize("path,params,status,code", [
    ("/api/search", {"q": ""}, 400, "INVALID_ARGUMENT"),
    ("/api/search", {"q": "x", "k": "-1"}, 400, "INVALID_ARGUMENT"),
    ("/api/search", {"q": "x", "k": "lots"}, 400, "INVALID_ARGUMENT"),
    ("/api/search", {"q": "x" * 5000}, 413, "RESOURCE_EXHAUSTED"),
    ("/api/search", {"like": "999999"}, 404, "NOT_FOUND"),
    ("/api/items/424242", {}, 404, "NOT_FOUND"),
])
def test_api_errors_are_json_with_grpc_meaning(web, path, params, status, code):
    base, _, _ = web
    r = httpx.get(f"{base}{path}", params=params)
    assert r.status_code == status
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]


def test_bad_upload_is_a_readable_error(web):
    base, _, _ = web
    r = httpx.post(f"{base}/api/search/image", files={"image": ("x.jpg", b"nope", "image/jpeg")})
    assert r.status_code == 400 and "not a readable image" in r.json()["error"]["message"]


def test_web_auth(make_server):
    port = free_port()
    make_server(web_port=port, auth_token="tok")
    base = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{base}/api/stats").status_code == 401
    assert httpx.get(f"{base}/api/stats", headers={"authorization": "Bearer tok"}).status_code == 200
    assert httpx.get(f"{base}/").status_code == 200  # the page itself loads and asks for the token


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM} "
                    "(apt-get install chromium; .ci/run installs it)")
def test_page_in_a_real_browser(web, photos, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    base, ids, _ = web
    upload = tmp_path / "broken.jpg"
    upload.write_bytes(b"this is not a picture")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        page.goto(base + "/")
        expect(page.locator("#stats")).to_contain_text("6 images")
        page.fill("#q", "a cup of coffee")
        page.click("button[type=submit]")
        expect(page.locator("#status")).to_contain_text("encode")
        expect(page.locator("#status")).to_contain_text("64-bit codes")
        expect(page.locator('.hit[data-key="coffee"]')).to_be_visible()
        first = page.locator(".hit").first
        expect(first.locator("img")).to_have_attribute("src", re.compile(r"^blob:"))
        page.screenshot(path=str(ARTIFACTS / "web_text_search.png"), full_page=True)
        # "more like this": click the rocket photo, its own image comes first
        page.fill("#q", "a rocket")
        page.click("button[type=submit]")
        expect(page.locator("#status")).to_contain_text("“a rocket”")  # its grid is shown
        page.locator('.hit[data-key="rocket"] img').click()
        expect(page.locator("#status")).to_contain_text(f"more like item {ids['rocket']}")
        expect(page.locator(".hit").first).to_have_attribute("data-key", "rocket")
        expect(page.locator(".hit").first.locator(".nums").first).to_contain_text("hamming 0")
        # a bad upload shows a readable error
        page.set_input_files("#file", str(upload))
        expect(page.locator("#status")).to_have_class("error")
        expect(page.locator("#status")).to_contain_text("not a readable image")
        page.screenshot(path=str(ARTIFACTS / "web_bad_upload.png"))
        # paging through the index
        page.click("#browse")
        expect(page.locator("#page-info")).to_contain_text("1–6 of 6")
        browser.close()
    assert (ARTIFACTS / "web_text_search.png").stat().st_size > 10_000
