"""``crossbit demo``: a server on the default model, sample photos indexed, a few text searches."""

from __future__ import annotations

import signal
import tempfile
import textwrap
import time

from crossbit.server.demo.sample_photos import SAMPLES, sample_photos

# each query with the sample photo it describes: the demo says which ones the model finds
QUERIES = [("a cat looking up", "chelsea"), ("a man with a camera on a tripod", "camera"),
           ("a rocket on a launch pad", "rocket"), ("an astronaut", "astronaut"),
           ("a cup of coffee", "coffee"), ("old coins", "coins")]
WHAT_IT_KNOWS = (
    "The shipped model learned from 6,000 Flickr8k photos of people, animals and everyday "
    "scenes with their captions, and finds that kind of picture best. Several sample photos "
    "are far from it (a retina, stained cells, galaxies, a colour wheel, a printed page) and "
    "pull queries that it knows less well towards them; with 13 photos every near miss shows. "
    "For pictures of your own kind, train it on them: 'Search your own catalog' in the README.")


def judged(expected: str, keys: list[str]) -> str:
    """A query's verdict: where its photo came in the hits (keys in rank order)."""
    if keys and keys[0] == expected:
        return "found first"
    if expected in keys:
        return f"missed: {expected} came {keys.index(expected) + 1}"
    return f"missed: {expected} not in the top {len(keys)}"


def summary(verdicts: list[str]) -> str:
    """One line: how many queries put their own photo first."""
    hits = sum(v == "found first" for v in verdicts)
    return f"{hits} of {len(verdicts)} queries put the photo they describe first."

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
                verdicts = []
                for query, expected in QUERIES:
                    start = time.perf_counter()
                    hits = client.search(text=query, top_k=3)
                    ms = 1000 * (time.perf_counter() - start)
                    verdicts.append(judged(expected, [h.key for h in hits]))
                    print(f'"{query}"  ({ms:.0f} ms): {verdicts[-1]}')
                    for rank, h in enumerate(hits, 1):
                        print(f"   {rank}. {h.key:22s} hamming {h.distance:3d}  score {h.score:.3f}")
                print("\n" + textwrap.fill(f"{summary(verdicts)} {WHAT_IT_KNOWS}", 92))
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
