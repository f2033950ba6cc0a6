"""Server settings from file, environment and flags; the Prometheus endpoint; the micro-batcher."""

from __future__ import annotations

import threading
import time
import urllib.request

import pytest

from crossbit.client import Client
from crossbit.server.batching import MicroBatcher
from crossbit.server.config import ServerConfig, load_config


def test_config_layers(tmp_path):
    toml = tmp_path / "crossbit.toml"
    toml.write_text('port = 6001\nmax_batch = 8\nrerank = false\n')
    config = load_config(toml, env={"CROSSBIT_PORT": "6002", "CROSSBIT_MAX_WAIT_MS": "1.5"},
                         overrides={"max_batch": 16, "host": None})
    assert config.port == 6002 and config.max_batch == 16 and config.rerank is False
    assert config.max_wait_ms == 1.5 and config.host == "127.0.0.1"
    (tmp_path / "c.json").write_text('{"prot": 1}')
    with pytest.raises(ValueError, match="unknown settings"):
        load_config(tmp_path / "c.json", env={})
    with pytest.raises(ValueError, match="CROSSBIT_PORT"):
        load_config(env={"CROSSBIT_PORT": "abc"})
    with pytest.raises(ValueError, match="both"):
        ServerConfig(tls_cert="x.pem")
    with pytest.raises(ValueError, match="text_runtime must be one of auto, onnx, int8, torch"):
        load_config(env={"CROSSBIT_TEXT_RUNTIME": "fp16"})
    with pytest.raises(ValueError, match="runtime must be one of auto, onnx, torch, got 'int8'"):
        ServerConfig(runtime="int8")  # int8 is a text runtime only
    assert load_config(env={"CROSSBIT_TEXT_RUNTIME": "int8"}).text_runtime == "int8"
    assert ServerConfig(auth_token="t").public()["auth_token"] == "***"


def test_metrics_endpoint(make_server):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    running = make_server(metrics_port=port)
    with Client(f"127.0.0.1:{running.port}") as c:
        c.search(text="a dog", top_k=3)
        c.stats()
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'crossbit_calls_total{code="OK",method="Search"} 1.0' in body
    assert "crossbit_call_seconds_bucket" in body and "crossbit_batch_size_bucket" in body
    assert 'crossbit_index_items{modality="image"} 0.0' in body


def test_micro_batcher_gathers_concurrent_items():
    sizes = []

    def double(items):
        time.sleep(0.01)
        return [2 * x for x in items]

    batcher = MicroBatcher(double, max_batch=16, max_wait_ms=20, on_batch=sizes.append)
    results = {}

    def submit(i):
        results[i] = batcher([i], timeout=5)[0]

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert results == {i: 2 * i for i in range(40)}
    assert sum(sizes) == 40 and max(sizes) > 1 and max(sizes) <= 16


def test_micro_batcher_workers_run_batches_side_by_side():
    running, most = [0], [0]
    lock = threading.Lock()

    def slow(items):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return [x + 1 for x in items]

    batcher = MicroBatcher(slow, max_batch=2, max_wait_ms=1, workers=3)
    futures = batcher.submit_many(range(12))
    assert [f.result(timeout=5) for f in futures] == list(range(1, 13))
    assert most[0] > 1  # batches overlapped
    batcher.close()
    assert not any(t.is_alive() for t in batcher._threads)
    with pytest.raises(ValueError, match="workers"):
        MicroBatcher(slow, workers=0)


def test_micro_batcher_failure_reaches_every_waiter():
    def boom(items):
        raise RuntimeError("model exploded")

    batcher = MicroBatcher(boom, max_batch=4, max_wait_ms=1)
    with pytest.raises(RuntimeError, match="exploded"):
        batcher([1, 2, 3], timeout=5)
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(1)


def test_micro_batcher_can_fail_one_item_alone():
    def picky(items):
        return [ValueError(f"bad {x}") if x < 0 else 2 * x for x in items]

    batcher = MicroBatcher(picky, max_batch=8, max_wait_ms=20)
    good, bad = batcher.submit(3), batcher.submit(-1)
    assert good.result(timeout=5) == 6
    with pytest.raises(ValueError, match="bad -1"):
        bad.result(timeout=5)
    batcher.close()
