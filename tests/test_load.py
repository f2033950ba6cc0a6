"""The bundled load generator against a real server: bounded, loopback only, ghz-like report."""

from __future__ import annotations

import pytest

from crossbit.server.load import format_summary, is_loopback, run_load


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
