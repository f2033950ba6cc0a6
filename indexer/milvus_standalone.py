"""A real Milvus standalone server on this machine (PyPI ``milvus``), for tests, benchmarks and trials.

The ``milvus`` package ships the Milvus 2.3 standalone binary: the cluster's proxy,
coordinators and query/data/index nodes in one process, with embedded etcd, rocksmq and
local storage. This wrapper starts it bound to 127.0.0.1 with fixed ports (kept in the data
folder, so a restart finds its own etcd sessions instead of stale ones), a short graceful
stop, and its temporary files inside the data folder.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

log = logging.getLogger(__name__)

COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord",
              "dataNode")
PORT_KEYS = ("etcd_port", "etcd_peer_port", "root_coord_port", "proxy_internal_port", "query_coord_port",
             "query_node_port", "index_coord_port", "index_node_port", "data_coord_port",
             "data_node_port")
PORTS_FILE = "crossbit-ports.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MilvusStandalone:
    """One Milvus standalone process over ``directory``; ``uri`` is where clients connect.

    Args:
        directory: its data, configuration and logs (kept across restarts).
        port: the client port (default: the one used before in this folder, else a free one).
        time_tick_ms: ``proxy.timeTickInterval``; a Strong read waits for about one tick.
        stop_timeout_s: ``common.gracefulStopTimeout``: how long SIGTERM waits for clients
            (Milvus's 1,800 s default makes a stop hang while collections are loaded).
    """

    def __init__(self, directory: str | os.PathLike, port: int | None = None,
                 time_tick_ms: int = 200, stop_timeout_s: int = 10):
        try:
            import milvus  # noqa: F401
        except ImportError as exc:
            raise RuntimeError("a local Milvus server needs the milvus package: "
                               "pip install 'crossbit[milvus-server]'") from exc
        self.directory = Path(directory).resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        saved = self.directory / PORTS_FILE
        self.ports = json.loads(saved.read_text()) if saved.exists() else {}
        if port is not None:
            self.ports["proxy_port"] = port
        for key in ("proxy_port", "web_port", *PORT_KEYS):
            self.ports.setdefault(key, free_port())
        saved.write_text(json.dumps(self.ports))
        self.time_tick_ms, self.stop_timeout_s = time_tick_ms, stop_timeout_s
        self.proc: subprocess.Popen | None = None

    @property
    def port(self) -> int:
        return self.ports["proxy_port"]

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _configure(self):
        from milvus import MilvusServerConfig, _initialize_data_files

        config = MilvusServerConfig(data_dir=str(self.directory))
        config.resolve_storage()
        for key, port in self.ports.items():  # not config.resolve(): its trial bind fails on
            if key in config.configurable_items:  # a port a killed server left in TIME_WAIT
                config.configurable_items[key][1] = port
        for component in COMPONENTS:
            config.set(f"{component}.ip", "127.0.0.1")
        config.set("common.gracefulStopTimeout", self.stop_timeout_s)
        config.set("proxy.timeTickInterval", self.time_tick_ms)
        config.write_config()
        self._embed_etcd_on_own_ports(Path(config.base_data_dir))
        _initialize_data_files(config.base_data_dir)
        return config

    def _embed_etcd_on_own_ports(self, base: Path) -> None:
        """The embedded etcd listens on 2379/2380 whatever the endpoints say, so a second
        server on the machine fails to start: give it a configuration with this one's ports."""
        client = f"http://127.0.0.1:{self.ports['etcd_port']}"
        peer = f"http://127.0.0.1:{self.ports['etcd_peer_port']}"
        embed = base / "configs" / "embed-etcd.yaml"
        embed.write_text(f"name: crossbit\nlisten-client-urls: {client}\n"
                         f"advertise-client-urls: {client}\nlisten-peer-urls: {peer}\n"
                         f"initial-advertise-peer-urls: {peer}\n"
                         f"initial-cluster: crossbit={peer}\n")
        config = base / "configs" / "milvus.yaml"
        text = config.read_text()
        marker = "  use:\n    embed: true"
        if marker not in text:
            raise RuntimeError(f"unexpected Milvus configuration template: no {marker!r}")
        config.write_text(text.replace(marker, f"  config:\n    path: {embed}\n{marker}", 1))

    def start(self, timeout_s: float = 120.0) -> MilvusStandalone:
        """Start and wait until healthy (about 5 s fresh); RuntimeError if it exits or stalls."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        config = self._configure()
        binary = Path(config.base_data_dir) / "bin" / "milvus"
        env = dict(os.environ, DEPLOY_MODE="STANDALONE", METRICS_PORT=str(self.ports["web_port"]),
                   MILVUS_RUN_DIR=str(self.directory / "run"), TMPDIR=str(self.directory / "tmp"),
                   LD_LIBRARY_PATH=f"{binary.parent}:{os.environ.get('LD_LIBRARY_PATH', '')}")
        (self.directory / "tmp").mkdir(exist_ok=True)
        logs = self.directory / "logs"
        logs.mkdir(exist_ok=True)
        with open(logs / "milvus-stdout.log", "ab") as out, \
                open(logs / "milvus-stderr.log", "ab") as err:
            self.proc = subprocess.Popen([str(binary), "run", "standalone"], stdout=out,
                                         stderr=err, env=env, cwd=self.directory,
                                         start_new_session=True)
        health = f"http://127.0.0.1:{self.ports['web_port']}/healthz"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Milvus exited with {self.proc.returncode} while starting; "
                                   f"see {logs}/milvus-stderr.log")
            try:
                with urllib.request.urlopen(health, timeout=2) as answer:
                    if b"OK" in answer.read():
                        log.info("milvus standalone up at %s (pid %d)", self.uri, self.proc.pid)
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"Milvus did not become healthy in {timeout_s:.0f} s; see {logs}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it is still up after its graceful stop time and a margin."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.stop_timeout_s + 5)
            except subprocess.TimeoutExpired:
                log.warning("milvus did not stop on SIGTERM; killing it")
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: a crash, as far as Milvus can tell."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def __enter__(self) -> MilvusStandalone:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
