"""``crossbit demo``: a server on the default model, sample photos indexed, a few text searches."""

from __future__ import annotations

import signal
import tempfile
import time

from crossbit.server.demo.sample_photos import SAMPLES, sample_photos

QUERIES = ["a cat", "a cup of coffee", "a rocket launch", "an astronaut", "a man taking a photo",
           "coins"]

DEFAULT_PORT = 50051  # the port the README's commands use


def _any_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_or_any(port: int | None, host: str = "127.0.0.1") -> int | None:
    """``port`` when nothing listens there, else 0 (any free one)."""
    from crossbit.server.rpc.app import check_port_free

    if not port:
        return port
    try:
        check_port_free(host, port)
        return port
    except OSError:
        return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run_demo(port: int = DEFAULT_PORT, keep: bool = False, web_port: int | None = None) -> int:
    from crossbit.client import Client
    from crossbit.server.config import ServerConfig
    from crossbit.server.logs import setup_logging
    from crossbit.server.rpc.app import create_server

    setup_logging("text", "WARNING")
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM cleans up (the temporary data) as Ctrl-C does
    wanted = port
    port = free_or_any(port)
    if web_port:
        web_port = free_or_any(web_port) or _any_port()
    with tempfile.TemporaryDirectory(prefix="crossbit-demo-") as data:
        print("loading the default model and starting the server...", flush=True)
        start = time.perf_counter()
        config = ServerConfig(port=port, data=data, web_port=web_port, index="flat")
        running = create_server(config)
        print(f"server on 127.0.0.1:{running.port} in {time.perf_counter() - start:.1f}s "
              f"({running.core.bits}-bit codes)"
              + (f" (port {wanted} was taken)" if wanted and running.port != wanted else ""))
        try:
            with Client(f"127.0.0.1:{running.port}") as client:
                photos = sample_photos()
                start = time.perf_counter()
                ids = client.add_images(list(photos.values()), keys=list(photos),
                                        metadata=[{"caption": SAMPLES[n]} for n in photos])
                print(f"indexed {sum(i is not None for i in ids)} sample photos from "
                      f"scikit-image in {time.perf_counter() - start:.1f}s\n")
                for query in QUERIES:
                    start = time.perf_counter()
                    hits = client.search(text=query, top_k=3)
                    ms = 1000 * (time.perf_counter() - start)
                    print(f'"{query}"  ({ms:.0f} ms)')
                    for rank, h in enumerate(hits, 1):
                        print(f"   {rank}. {h.key:22s} hamming {h.distance:3d}  score {h.score:.3f}")
                print("\nstats:", {k: v for k, v in client.stats().items() if k != "index_params"})
            if keep:
                server = "" if running.port == DEFAULT_PORT else f" --server 127.0.0.1:{running.port}"
                print(f"\nserving on 127.0.0.1:{running.port}"
                      + (f", web page http://127.0.0.1:{web_port}" if web_port else "")
                      + "; Ctrl-C to stop. From another terminal:\n"
                      f'  .venv/bin/crossbit search "a cup of coffee"{server}\n'
                      f"  .venv/bin/crossbit index ~/Pictures --recursive{server}\n"
                      f"  .venv/bin/crossbit stats{server}")
                try:
                    while True:
                        time.sleep(3600)
                except KeyboardInterrupt:
                    pass
        finally:
            running.stop(2.0)
    return 0
