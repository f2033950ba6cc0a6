"""Server settings from file, environment and flags; the Prometheus endpoint."""

from __future__ import annotations

import urllib.request

import pytest

from crossbit.client import Client
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
