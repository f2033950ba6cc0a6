"""The bundled load generator against a real server: bounded, loopback only, ghz-like report."""

from __future__ import annotations

import pytest

from crossbit.server.load.generator import format_summary, is_loopback, read_captions, run_load


def test_loopback_only():
    assert is_loopback("127.0.0.1:50051") and is_loopback("localhost:1") and is_loopback("[::1]:5")
    assert not is_loopback("10.0.0.5:50051") and not is_loopback("8.8.8.8:53")
    with pytest.raises(ValueError, match="loopback"):
        run_load("10.1.2.3:50051", total=1)


@pytest.mark.parametrize("rpc", ["search", "search-code", "search-batch", "encode", "add-images"])
def test_each_rpc_under_load(make_server, photos, rpc):
    running = make_server()
    report = run_load(f"127.0.0.1:{running.port}", rpc, concurrency=4, total=12, duration=30,
                      batch=4, stream_images=3, photos=list(photos.values())[:3])
    s = report.summary()
    assert s["count"] == 12 and s["status_codes"] == {"OK": 12}
    assert s["rps"] > 0 and s["latency_ms"]["p50"] <= s["latency_ms"]["p99"]
    assert "Requests/sec" in format_summary(s)
    if rpc == "add-images":
        assert running.core.stats()["images"] == 36


def test_bounded_by_time(make_server):
    running = make_server()
    report = run_load(f"127.0.0.1:{running.port}", "search-code", concurrency=2, total=10**9,
                      duration=0.5)
    assert report.total_s < 5 and report.count < 10**9


def test_fixed_rate_and_shared_connections(make_server):
    running = make_server()
    report = run_load(f"127.0.0.1:{running.port}", "search-code", concurrency=4, total=10**9,
                      duration=1.0, rps=20, connections=2)
    assert 12 <= report.count <= 22 and report.codes == {"OK": report.count}


def test_query_texts_from_a_file(make_server, tmp_path):
    csv_file = tmp_path / "captions.csv"
    csv_file.write_text("image,caption\na.jpg,a dog in the snow\nb.jpg, a red car \n")
    lines = tmp_path / "queries.txt"
    lines.write_text("two dogs\n\nthe beach\n")
    assert read_captions(str(csv_file)) == ["a dog in the snow", "a red car"]
    assert read_captions(str(lines)) == ["two dogs", "the beach"]
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="no query texts"):
        read_captions(str(tmp_path / "empty.txt"))
    running = make_server()
    report = run_load(f"127.0.0.1:{running.port}", "search", concurrency=2, total=6,
                      captions=read_captions(str(lines)))
    assert report.codes == {"OK": 6}
