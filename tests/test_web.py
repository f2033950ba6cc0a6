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

from helpers import free_port

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = os.environ.get("CROSSBIT_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")


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
        # the landing page shows the most recent items
        expect(page.locator("#status")).to_contain_text("most recent")
        expect(page.locator(".hit").first).to_have_attribute("data-key", "coins")
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
        page.locator('.hit[data-key="rocket"] img').click()  # the larger view opens
        expect(page.locator("#viewer")).to_be_visible()
        expect(page.locator("#viewer-img")).to_have_attribute("src", re.compile(r"^blob:"))
        page.wait_for_function("document.getElementById('viewer-img').naturalWidth > 160")
        expect(page.locator("#viewer-caption")).to_contain_text("rocket")
        page.screenshot(path=str(ARTIFACTS / "web_larger_view.png"))
        page.click("#viewer-like")
        expect(page.locator("#viewer")).to_be_hidden()
        expect(page.locator("#status")).to_contain_text(f"more like item {ids['rocket']}")
        expect(page.locator(".hit").first).to_have_attribute("data-key", "rocket")
        expect(page.locator(".hit").first.locator(".nums").first).to_contain_text("hamming 0")
        # Back returns to the text search before it, from the URL
        page.go_back()
        expect(page.locator("#status")).to_contain_text("“a rocket”")
        assert "q=a+rocket" in page.url
        expect(page.locator("#q")).to_have_value("a rocket")
        # a bad upload shows a readable error
        page.set_input_files("#file", str(upload))
        expect(page.locator("#status")).to_have_class("error")
        expect(page.locator("#status")).to_contain_text("not a readable image")
        page.screenshot(path=str(ARTIFACTS / "web_bad_upload.png"))
        expect(page.locator("#q")).to_have_value("")  # an image search clears the text box
        # paging through the index
        page.click("#browse")
        expect(page.locator("#page-info")).to_contain_text("1–6 of 6")
        # a deep link runs its search on arrival
        page.goto(base + "/?q=a%20cup%20of%20coffee&k=3")
        expect(page.locator("#status")).to_contain_text("3 hits for “a cup of coffee”")
        expect(page.locator('.hit[data-key="coffee"]')).to_be_visible()
        expect(page.locator("#k")).to_have_value("3")
        # the filter box: only what it selects, kept in the URL
        page.fill("#filter", 'key like "co%"')
        page.fill("#q", "a photo")
        page.click("button[type=submit]")
        expect(page.locator("#status")).to_contain_text("2 hits")
        assert sorted(page.locator(".hit").evaluate_all("els => els.map(e => e.dataset.key)")) \
            == ["coffee", "coins"]
        assert "filter=key+like" in page.url
        page.fill("#filter", "key like")  # a bad expression says where
        page.click("button[type=submit]")
        expect(page.locator("#status")).to_contain_text("at position")
        expect(page.locator("#status")).not_to_contain_text("__init__")
        page.screenshot(path=str(ARTIFACTS / "web_filter.png"))
        # the collection switcher: another collection's items, and back
        with Client(f"127.0.0.1:{web[2].port}") as c:
            c.create_collection("shop")
            c.add_images([photos["astronaut"]], keys=["astronaut"], collection="shop")
        page.goto(base + "/?collection=shop")
        expect(page.locator(".hit").first).to_have_attribute("data-key", "astronaut")
        expect(page.locator("#stats")).to_contain_text("1 images")
        page.select_option("#collection", "default")
        expect(page.locator("#stats")).to_contain_text("6 images")
        assert "collection=default" in page.url
        page.screenshot(path=str(ARTIFACTS / "web_collections.png"))
        browser.close()
    assert (ARTIFACTS / "web_text_search.png").stat().st_size > 10_000


@pytest.mark.parametrize("path,params,status", [
    ("/api/items/99999999999999999999999", {}, 404),
    ("/api/items/99999999999999999999999/thumbnail", {}, 404),
    ("/api/items/9223372036854775808", {}, 404),
    ("/api/search", {"like": "99999999999999999999999"}, 400),
    ("/api/search", {"like": "-1"}, 404),
    ("/api/items", {"offset": "99999999999999999999999"}, 400),
    ("/api/items", {"offset": str(2**63 - 1)}, 400),
    ("/api/search", {"q": "x", "k": "99999999999999999999"}, 400),
])
def test_ids_beyond_int64_are_not_server_errors(web, path, params, status):
    base, _, _ = web
    r = httpx.get(f"{base}{path}", params=params)
    assert r.status_code == status, r.text
    assert r.json()["error"]["message"]


def test_starlette_refusals_keep_their_status(web):
    base, _, _ = web
    broken = httpx.post(f"{base}/api/search/image", content=b"--x\r\nbroken",
                        headers={"content-type": "multipart/form-data; boundary=zzz"})
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "INVALID_ARGUMENT"
    many = httpx.post(f"{base}/api/search/image", data={f"f{i}": "v" for i in range(50)})
    assert many.status_code == 400, many.text


def _send_until_answered(port: int, headers: bytes, chunk: bytes, most: int) -> tuple[int, bytes]:
    """Send a chunked body until the server answers or ``most`` bytes are out."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(headers)
        s.settimeout(0.01)
        sent = 0
        answer = b""
        while sent < most:
            try:
                s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                sent += len(chunk)
            except OSError:
                break
            try:
                answer += s.recv(65536)
                if answer:
                    break
            except TimeoutError:
                continue
        s.settimeout(5)
        try:
            while b"\r\n\r\n" not in answer:
                got = s.recv(65536)
                if not got:
                    break
                answer += got
        except OSError:
            pass
        return sent, answer


def test_a_body_over_the_limit_is_refused_while_it_streams(web):
    base, _, running = web
    port = int(base.rsplit(":", 1)[1])
    limit = running.core.config.max_image_bytes
    # a declared length over the limit: refused before any of the body is read
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /api/search/image HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Content-Type: application/octet-stream\r\nContent-Length: 629145600\r\n\r\n")
        s.settimeout(10)
        assert b" 413 " in s.recv(65536).split(b"\r\n")[0]
    # chunked, no length: refused once the limit is passed, not after 600 MB
    headers = (b"POST /api/search/image HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               b"Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    sent, answer = _send_until_answered(port, headers, b"\0" * (1 << 20), 600 << 20)
    assert b" 413 " in answer.split(b"\r\n")[0], answer[:200]
    assert sent < limit + (16 << 20), f"{sent} bytes were taken before the refusal"


def test_host_header_and_security_headers(web):
    base, _, _ = web
    evil = httpx.get(f"{base}/api/stats", headers={"host": "attacker.example"})
    assert evil.status_code == 421 and "unknown Host" in evil.json()["error"]["message"]
    assert httpx.get(f"{base}/api/stats", headers={"host": "localhost:1234"}).status_code == 200
    page = httpx.get(f"{base}/")
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "'sha256-" in csp and "unsafe-inline" not in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert httpx.get(f"{base}/favicon.ico").status_code == 200


def test_an_items_own_text_wins_over_metadata(web):
    base, _, running = web
    with Client(f"127.0.0.1:{running.port}") as c:
        c.add_texts(["a red bicycle by a wall"], keys=["bike"], metadata=[{"text": "forged"}])
    hits = httpx.get(f"{base}/api/search", params={"q": "a red bicycle", "modality": "text",
                                                    "k": 1}).json()["hits"]
    assert hits[0]["key"] == "bike" and hits[0]["metadata"]["text"] == "a red bicycle by a wall"
