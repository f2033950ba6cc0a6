"""Image bytes under generated inputs, no server: a JPEG is judged by its real frame header and
scans (not by bytes found anywhere), decoded pixels come from a server-wide pool and go back
when the images are freed, thumbnails are what they were.

``make test`` runs these small; ``make reliability`` runs them long (CROSSBIT_FUZZ_EXAMPLES).
"""

from __future__ import annotations

import functools
import gc
import io
import os
import random
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from crossbit.server.core.exceptions import LimitError
from crossbit.server.core.images import decode_image, image_pixels, make_thumbnail
from crossbit.server.core.jpeg import read_frame
from crossbit.server.core.pixels import PixelBudget, PixelPool

from helpers import header_only, record

FUZZ = int(os.environ.get("CROSSBIT_FUZZ_EXAMPLES", "60"))
BIG = 1 << 30
SOF_BYTES = [bytes([0xFF, m]) for m in range(0xC0, 0xD0)]  # SOF0..15 and DHT, JPG, DAC
tally = {"real_jpegs": 0, "crafted_refused": 0, "fake_markers": 0, "pool_runs": 0}


@pytest.fixture(scope="module", autouse=True)
def _record_tally():
    yield
    record("image_classes", **tally)


def encode(size, mode="RGB", noise=False, seed=0, **options) -> bytes:
    """A JPEG of one colour or of seeded noise (Pillow's effect_noise is not seedable)."""
    if noise:
        rng = np.random.default_rng(seed)
        pixels = rng.normal(128, 60, (size[1], size[0], 3)).clip(0, 255).astype(np.uint8)
        image = Image.fromarray(pixels).convert(mode)
    else:
        image = Image.new(mode, size, 90)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", **options)
    return buf.getvalue()


def segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(body) + 2).to_bytes(2, "big") + body


# -- the frame header is the real one ----------------------------------------------------------

real_jpegs = st.fixed_dictionaries({
    "size": st.tuples(st.integers(1, 700), st.integers(1, 700)),
    "mode": st.sampled_from(["RGB", "L", "CMYK"]),
    "noise": st.booleans(),
    "seed": st.integers(0, 2**32 - 1),
    "quality": st.integers(1, 100),
    "progressive": st.booleans(),
    "optimize": st.booleans(),
    "subsampling": st.sampled_from([0, 1, 2]),
    "restart_marker_blocks": st.sampled_from([0, 0, 1, 7]),
})


@settings(max_examples=FUZZ, deadline=None, suppress_health_check=list(HealthCheck))
@given(spec=real_jpegs)
def test_real_jpegs_of_every_kind_decode_as_before(spec):
    """Real encodes (baseline, progressive, optimized, every subsampling, restart markers,
    uniform pictures that compress best) are never refused, and decode to Pillow's pixels."""
    options = {k: v for k, v in spec.items() if k not in ("size", "mode", "noise", "seed") and v}
    try:
        data = encode(spec["size"], spec["mode"], spec["noise"], spec["seed"], **options)
    except OSError:  # Pillow's buffer for progressive or optimized output is W x H bytes, too
        assume(False)  # small for noise at high quality ("broken data stream"): not a JPEG

    frame = read_frame(data)
    assert (frame.width, frame.height) == spec["size"]
    assert ("progressive" in frame.kind) == bool(spec["progressive"])
    assert frame.missing() == ""
    decoded = decode_image(data, BIG, 10**8)
    expected = Image.open(io.BytesIO(data)).convert("RGB")
    assert decoded.mode == "RGB" and decoded.tobytes() == expected.tobytes()
    assert image_pixels(data, BIG, 10**8) == spec["size"][0] * spec["size"][1]
    tally["real_jpegs"] += 1


def test_the_sample_photos_are_read_whole(photos):
    for name, data in photos.items():
        assert read_frame(data).missing() == "", name
        decode_image(data, BIG, 10**8)


hiding = st.lists(st.tuples(
    st.sampled_from([0xFE, *range(0xE0, 0xF0)]),  # COM or APPn
    st.lists(st.one_of(st.sampled_from(SOF_BYTES), st.binary(max_size=12),
                       st.just(b"\xff\xc9\x00\x11\x08\x00\x10\x00\x10\x03\x01\x11\x00")),
             max_size=6).map(b"".join),
    st.sampled_from(["after SOI", "before the frame", "before the scan"])), max_size=4)


@settings(max_examples=FUZZ, deadline=None, suppress_health_check=list(HealthCheck))
@given(side=st.tuples(st.integers(1000, 8000), st.integers(1000, 8000)),
       keep=st.integers(0, 200), segments=hiding)
def test_header_only_jpegs_are_refused_wherever_sof_bytes_hide(side, keep, segments):
    """A JPEG claiming millions of pixels with a few bytes of scan is refused, whatever
    SOF-looking bytes (FF C0..FF CF, whole fake arithmetic frames) its comment and
    application segments carry: only the frame header in the marker sequence counts."""
    data = header_only(*side, keep)
    for marker, body, where in segments:
        at = {"after SOI": 2, "before the frame": data.index(b"\xff\xc0"),
              "before the scan": data.index(b"\xff\xda")}[where]
        data = data[:at] + segment(marker, body) + data[at:]
    with pytest.raises(ValueError) as info:
        decode_image(data, BIG, 10**9)
    assert not isinstance(info.value, LimitError)
    assert "not a readable image" in str(info.value)
    assert image_pixels(data, BIG, 10**9) == 0  # nothing is taken from the pool for it
    tally["crafted_refused"] += 1


@functools.cache
def _uniform_jpeg(progressive: bool) -> bytes:
    """4000x3000 of one colour, quality 1, optimized: about 2 bits per 8x8 block, the fewest
    a whole Huffman-coded picture has."""
    return encode((4000, 3000), quality=1, optimize=True, progressive=progressive)


@settings(max_examples=max(10, FUZZ // 2), deadline=None, suppress_health_check=list(HealthCheck))
@given(cut=st.floats(0.0, 1.0), progressive=st.booleans(), end_marker=st.booleans(),
       drop=st.integers(0, 9))
def test_truncated_or_missing_scans_are_refused(cut, progressive, end_marker, drop):
    """A picture cut inside its scans is refused when nothing ends it (the decoder runs out
    of data) or when what is left is under half the fewest bits a whole picture has; a
    progressive one missing the DC scans of a component is refused."""
    data = _uniform_jpeg(progressive)
    first_scan = data.index(b"\xff\xda")
    scans = len(data) - first_scan
    cut_data = data[:first_scan + int(scans * cut)] + (b"\xff\xd9" if end_marker else b"")
    if cut < 1.0 and (not end_marker or cut < 0.2):
        with pytest.raises(ValueError, match="not a readable image"):
            decode_image(cut_data, BIG, 10**8)
    else:  # an EOI after 20% or more of the scans: read, its missing part grey (a known gap)
        try:
            assert decode_image(cut_data, BIG, 10**8).size == (4000, 3000)
        except ValueError as exc:
            assert "not a readable image" in str(exc)
    frame = read_frame(data)
    if progressive:  # drop every scan that codes the DC of one component
        victim = sorted(frame.components)[drop % len(frame.components)]
        pieces = data.split(b"\xff\xda")

        def codes_victims_dc(p):
            count = p[2]
            return p[3 + 2 * count] == 0 and victim in p[3:3 + 2 * count:2]

        kept = [pieces[0]] + [p for p in pieces[1:] if not codes_victims_dc(p)]
        with pytest.raises(ValueError, match="no scan codes component"):
            decode_image(b"\xff\xda".join(kept), BIG, 10**8)


@settings(max_examples=FUZZ, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32 - 1), count=st.integers(1, 4))
def test_fake_markers_fail_cleanly_or_decode_whole(seed, count):
    """Marker bytes written over a real JPEG's header segments: refused as bad input, or
    read whole; never another exception, never a picture bigger than its frame says."""
    rng = random.Random(seed)
    data = bytearray(encode((64, 48), noise=True, seed=seed))
    header_end = data.index(b"\xff\xda") + 14
    for _ in range(count):
        at = rng.randrange(2, header_end)
        data[at:at + 2] = bytes([0xFF, rng.choice([*range(0xC0, 0xD0), 0xD8, 0xD9, 0xDA, 0xDE,
                                                   0x01, 0x02, 0xFE, 0x00])])
    try:
        image = decode_image(bytes(data), BIG, 10**6)
    except ValueError:
        tally["fake_markers"] += 1
        return
    frame = read_frame(bytes(data))
    assert image.size == (frame.width, frame.height) and frame.missing() == ""


@settings(max_examples=max(10, FUZZ // 4), deadline=None, suppress_health_check=list(HealthCheck))
@given(size=st.tuples(st.integers(8, 400), st.integers(8, 400)), keep=st.integers(0, 30),
       claim=st.integers(2000, 8000))
def test_an_mpo_is_judged_by_its_first_frame(size, keep, claim):
    """An MPO (JPEGs one after the other, as cameras write them) decodes its first frame: a
    real one decodes, one whose first frame claims claim x claim pixels with no data is
    refused (the old check only looked at files Pillow called JPEG)."""
    buf = io.BytesIO()
    Image.effect_noise(size, 50).convert("RGB").save(
        buf, format="MPO", save_all=True, append_images=[Image.new("RGB", size, (9, 9, 9))])
    data = buf.getvalue()
    assert Image.open(io.BytesIO(data)).format == "MPO"
    assert decode_image(data, BIG, 10**8).size == size
    sof, sos = data.index(b"\xff\xc0"), data.index(b"\xff\xda")
    length = int.from_bytes(data[sos + 2:sos + 4], "big")
    bomb = bytearray(data[:sos + 2 + length + keep] + data[data.index(b"\xff\xd9"):])
    bomb[sof + 5:sof + 9] = claim.to_bytes(2, "big") * 2
    with pytest.raises(ValueError, match="not a readable image"):
        decode_image(bytes(bomb), BIG, 10**9)


def test_frame_structure_refusals_name_the_problem():
    data = encode((32, 32))
    sof = data.index(b"\xff\xc0")
    length = int.from_bytes(data[sof + 2:sof + 4], "big")
    twice = data[:sof] + data[sof:sof + 2 + length] + data[sof:]
    with pytest.raises(ValueError, match="two frame headers"):
        read_frame(twice)
    no_frame = data[:sof] + data[sof + 2 + length:]
    with pytest.raises(ValueError, match="before any frame header"):
        read_frame(no_frame)
    with pytest.raises(ValueError, match="without a frame header"):
        read_frame(b"\xff\xd8" + segment(0xFE, b"\xff\xc0 in a comment") + b"\xff\xd9")
    with pytest.raises(ValueError, match="hierarchical"):
        read_frame(data.replace(b"\xff\xc0", b"\xff\xc5", 1))
    cut = data[:sof + 6]
    with pytest.raises(ValueError, match="past the end"):
        read_frame(cut)
    arithmetic = header_only(6000, 6000, 20, frame=b"\xff\xc9")
    assert read_frame(arithmetic).kind == "sequential arithmetic"
    # arithmetic coding may spend far less than a bit per block: no byte floor, but its
    # pixels count in the request budget and the server's pool like any other image
    assert image_pixels(arithmetic, BIG, 10**9) == 36_000_000


# -- the server-wide pool ------------------------------------------------------------------------

def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (1, 2, 3)).save(buf, format="PNG")
    return buf.getvalue()


@settings(max_examples=max(10, FUZZ // 4), deadline=None, suppress_health_check=list(HealthCheck))
@given(calls=st.lists(st.tuples(st.integers(1, 12_000), st.floats(0.0, 0.03)), min_size=1,
                      max_size=24), limit=st.integers(10_000, 30_000))
def test_the_pool_never_holds_more_than_its_limit(calls, limit):
    """Concurrent takes of any sizes: the pixels held never pass the limit, every take that
    fits the pool is granted in time (no starvation, no deadlock), one larger than the
    whole pool is refused at once, everything comes back."""
    pool = PixelPool(limit, max_waiting=len(calls))
    granted, errors = [], []

    def call(pixels, hold):
        try:
            pool.take(pixels, timeout=30)
        except LimitError as exc:
            errors.append((pixels, str(exc)))
            return
        assert pool.used <= limit
        granted.append(pixels)
        time.sleep(hold)
        pool.give(pixels)

    threads = [threading.Thread(target=call, args=c) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert pool.peak <= limit and pool.used == 0 and pool.waiting == 0
    assert sorted(granted) == sorted(p for p, _ in calls if p <= limit)
    assert sorted(p for p, _ in errors) == sorted(p for p, _ in calls if p > limit)
    assert all("decodes at most" in why for _, why in errors)  # more than the whole pool
    tally["pool_runs"] += 1


def test_a_take_waits_to_its_deadline_then_is_refused():
    pool = PixelPool(1000, max_waiting=2)
    pool.take(900)
    started = time.monotonic()
    with pytest.raises(LimitError, match="did not fit within"):
        pool.take(200, timeout=0.5)
    assert 0.3 < time.monotonic() - started < 0.6  # gives up just before the deadline
    waiters = [threading.Thread(target=pool.take, args=(200, 5)) for _ in range(2)]
    for t in waiters:
        t.start()
    time.sleep(0.2)
    with pytest.raises(LimitError, match="2 calls wait"):  # the queue is full: refused at once
        pool.take(50, timeout=5)
    with pytest.raises(LimitError, match="decodes at most 1000"):
        pool.take(1001, timeout=5)
    pool.give(900)
    for t in waiters:
        t.join(5)
    assert pool.used == 400


def test_decoded_images_hold_their_pixels_until_freed():
    pool = PixelPool(10_000)
    budget = PixelBudget(8_000, pool)
    payloads = [png(50, 50), png(60, 60), b"not an image", png(80, 80)]
    sizes = [image_pixels(p, BIG, 10**6) for p in payloads]
    assert sizes == [2500, 3600, 0, 6400]
    budget.reserve(budget.plan(sizes), timeout=1)  # 6400 would pass the request's 8000
    assert pool.used == 6100
    images = [decode_image(p, BIG, 10**6, budget) for p in payloads[:2]]
    with pytest.raises(LimitError, match="limit per request is 8000"):
        decode_image(payloads[3], BIG, 10**6, budget)
    del budget
    assert pool.used == 6100  # the images still exist
    del images[0]
    assert pool.used == 3600
    images.clear()
    gc.collect()
    assert pool.used == 0


def test_an_image_that_fails_to_decode_gives_its_pixels_back():
    pool = PixelPool(10**6)
    budget = PixelBudget(10**6, pool)
    broken = png(100, 100)[:-30]  # its pixels are missing
    budget.reserve(10_000, timeout=1)
    with pytest.raises(ValueError, match="not a readable image"):
        decode_image(broken, BIG, 10**6, budget)
    del budget
    assert pool.used == 0


@settings(max_examples=FUZZ, deadline=None)
@given(width=st.integers(1, 2000), height=st.integers(1, 2000), side=st.sampled_from([160, 640]))
def test_thumbnails_are_what_they_were(width, height, side):
    """make_thumbnail no longer copies the whole image; its JPEG is byte for byte the old one."""
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    old = image.copy()
    old.thumbnail((side, side))
    buf = io.BytesIO()
    old.save(buf, format="JPEG", quality=80)
    assert make_thumbnail(image, side) == buf.getvalue()


def _png_1bit(side: int) -> bytes:
    """A 1-bit all-black PNG of side x side, compressed row by row (a few KB per 10^8 pixels)."""
    import struct
    import zlib

    row, co = b"\x00" * (1 + (side + 7) // 8), zlib.compressobj(9)
    idat = b"".join(co.compress(row) for _ in range(side)) + co.flush()

    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _containers(png: bytes) -> dict[str, bytes]:
    """Formats that hold a PNG under a header of their own: an ICO entry claiming 16x16, an ICNS
    ic07 entry (claiming 128x128)."""
    import struct

    ico = struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(png),
                                                     22) + png
    entry = b"ic07" + struct.pack(">I", 8 + len(png)) + png
    icns = b"icns" + struct.pack(">I", 8 + len(entry)) + entry
    return {"ICO": ico, "ICNS": icns}


@settings(max_examples=max(4, FUZZ // 20), deadline=None)
@given(side=st.integers(1, 2500), container=st.sampled_from(["ICO", "ICNS"]))
def test_formats_that_decode_while_opening_are_refused_undecoded(side, container):
    """ICO and ICNS decode their embedded image inside Image.open, before any size check: they
    are refused before that, whatever size the embedded image has (a 48 KB ICO held 4*10^8
    pixels)."""
    data = _containers(_png_1bit(side))[container]
    start = time.perf_counter()
    with pytest.raises(ValueError, match="not a readable image"):
        decode_image(data, 20_000_000, 40_000_000)
    assert image_pixels(data, 20_000_000, 40_000_000) == 0
    assert time.perf_counter() - start < 0.5  # refused from the header: nothing decoded


def test_a_huge_ico_is_refused_at_once():
    data = _containers(_png_1bit(20_000))["ICO"]  # 4*10^8 pixels in about 50 KB
    start = time.perf_counter()
    with pytest.raises(ValueError, match="not a readable image"):
        decode_image(data, 20_000_000, 40_000_000)
    assert time.perf_counter() - start < 0.5, "the embedded PNG was decoded"


Image.init()  # every plugin registered, so that Image.SAVE lists them all


@pytest.mark.parametrize("fmt", sorted(Image.SAVE))
def test_every_format_pillow_writes_is_read_from_its_header_or_refused(fmt):
    """Every format Pillow can write: the ones served decode to their size; every other is
    refused as unreadable (never decoded to learn its size)."""
    from crossbit.server.core.images import FORMATS

    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 48, 3), np.uint8))
    out = io.BytesIO()
    try:
        image.save(out, fmt)
    except Exception:  # this format cannot write an RGB image here (a plugin, a library)
        pytest.skip(f"Pillow cannot write {fmt} here")
    data = out.getvalue()
    if fmt in FORMATS + ("MPO",) or (fmt == "DIB" and data[:2] == b"BM"):
        decoded = decode_image(data, 20_000_000, 40_000_000)
        assert decoded.size == (48, 32)
        assert image_pixels(data, 20_000_000, 40_000_000) == 48 * 32
    else:
        with pytest.raises(ValueError, match="not a readable image"):
            decode_image(data, 20_000_000, 40_000_000)
