"""The ``crossbit`` command line: serve, index, search, stats, check, train, evaluate, load, demo.

Heavy modules (torch, faiss) load only inside the commands that need them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from crossbit.server.cli.backup import BACKUP_COMMANDS, add_backup_commands
from crossbit.server.cli.catalog import CATALOG_COMMANDS, add_catalog_commands
from crossbit.server.cli.client import CLIENT_COMMANDS, add_client_commands
from crossbit.server.cli.model import MODEL_COMMANDS, add_model_commands
from crossbit.server.cli.transfer import TRANSFER_COMMANDS, add_transfer_commands


def _add_serve(sub) -> None:
    from crossbit.server.config import ServerConfig, choices, field_help

    p = sub.add_parser("serve", help="run the gRPC service",
                       description="Run the gRPC service on the shipped default model (or "
                       "--model). Settings come from --config FILE (JSON/TOML), then CROSSBIT_* "
                       "environment variables (e.g. CROSSBIT_PORT), then these flags. "
                       "SIGTERM shuts down gracefully: in-flight calls finish, the index is "
                       "snapshotted.")
    p.add_argument("--config", help="JSON or TOML file with settings (names as below, with _)")
    defaults = ServerConfig()
    helps = {**field_help(), **SERVE_HELP}
    names = choices()
    for name, value in vars(defaults).items():
        flag = "--" + name.replace("_", "-")
        text = helps[name].replace("%", "%%")
        shown = "none" if value is None else value
        if isinstance(value, bool):
            p.add_argument(flag, dest=name, default=None, action=argparse.BooleanOptionalAction,
                           help=f"{text} (default {shown})")
            continue
        kind = type(value) if value is not None else str
        if name in ("web_port", "metrics_port"):
            kind = int
        metavar = "{" + ",".join(names[name]) + "}" if name in names else name.split("_")[-1].upper()
        p.add_argument(flag, dest=name, type=kind, default=None, metavar=metavar,
                       choices=names.get(name), help=f"{text} (default {shown})")


SERVE_HELP = {  # longer words than the config's comments, where a flag needs them
    "text_runtime": "text encoder: auto = int8 on a CPU (ONNX Runtime, per-channel int8 "
                    "weights: about 1.6x fp32's queries/s, dev recall within 0.2 points), "
                    "onnx = ONNX Runtime fp32 (the same codes as torch), int8, torch",
    "embeddings_in_memory": "keep every item's float embedding in memory for re-ranking (about "
                            "128 MB and 1.8 s of start-up per million 64-bit items); "
                            "--no-embeddings-in-memory reads them from SQLite",
    "max_inflight_pixels": "most decoded image pixels of all calls in flight together (about 4 "
                           "bytes each); a call whose images do not fit waits its turn until "
                           "its deadline, then gets RESOURCE_EXHAUSTED",
    "auth_token": "require 'authorization: Bearer TOKEN' on every RPC but health (an empty "
                  "token is refused)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crossbit",
        description="Cross-modal retrieval over binary codes: type a sentence, get the photos.")
    parser.add_argument("--version", action="version", version=f"crossbit {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(sub)
    add_client_commands(sub)
    add_catalog_commands(sub)
    add_transfer_commands(sub)
    add_backup_commands(sub)
    p = sub.add_parser("check", help="check that a data directory's index and store agree",
                       description="Compare each index snapshot under DATA with its SQLite store "
                       "(ids in one and not the other, ids held twice, a store older than its "
                       "snapshot, the id mark, SQLite's integrity check). Exits 0 when sound, "
                       "1 when not. --repair removes a snapshot that disagrees, so the index "
                       "is rebuilt from the store (the truth): run it with the server stopped.")
    p.add_argument("--data", default="data", help="the server's data directory (default %(default)s)")
    p.add_argument("--repair", action="store_true",
                   help="rebuild what disagrees from the store (server stopped)")
    p = sub.add_parser("reindex", help="encode a data directory again with another model",
                       description="Give every item under DATA new codes from MODEL (server "
                       "stopped): texts from their stored text, images from the preview kept "
                       "at AddImages (or the thumbnail). A store made with another model is "
                       "refused by crossbit serve until this is done.")
    p.add_argument("--data", default="data", help="the server's data directory")
    p.add_argument("--model", help="the new model's directory (default: the shipped model)")
    p.add_argument("--drop", action="store_true",
                   help="remove items that have nothing to encode again from (they are listed; "
                        "without this flag nothing is changed when there are any)")
    p.add_argument("--device", help="torch device (default: CUDA if visible, else the CPU)")
    add_model_commands(sub)
    p = sub.add_parser("load", help="load-test a server on this machine (like ghz)",
                       description="Send a bounded number of requests (-n) for a bounded time "
                       "(-z) from -c concurrent clients to a crossbit server on loopback, then "
                       "report count, requests/s, the latency distribution and status codes.")
    p.add_argument("--rpc", choices=["search", "search-code", "search-batch", "encode",
                                     "add-images"], default="search",
                   help="what to send: text searches, searches by code, batches of searches, "
                        "encodes, or image streams (default %(default)s)")
    p.add_argument("-c", "--concurrency", type=int, default=8,
                   help="requests in flight at once (default %(default)s)")
    p.add_argument("-n", "--total", type=int, default=1000, help="most requests to send")
    p.add_argument("-z", "--duration", type=float, default=30.0, help="most seconds to run")
    p.add_argument("--batch", type=int, default=32, help="queries per SearchBatch")
    p.add_argument("--stream-images", type=int, default=32, help="images per AddImagesStream")
    p.add_argument("--rps", type=float, default=0.0,
                   help="start requests at this fixed rate (0: each worker as fast as answered)")
    p.add_argument("--connections", type=int, default=1, help="HTTP/2 connections to share")
    p.add_argument("--captions", help="query texts: a captions CSV or one text per line "
                   "(default: 16 built-in captions)")
    p.add_argument("--json", help="also write the summary here")
    p.add_argument("--server", default=os.environ.get("CROSSBIT_SERVER", "127.0.0.1:50051"),
                   help="host:port of the server, on loopback (env CROSSBIT_SERVER; default "
                        "%(default)s)")
    p.add_argument("--token", default=os.environ.get("CROSSBIT_TOKEN"),
                   help="bearer token, when the server requires one (env CROSSBIT_TOKEN)")
    p = sub.add_parser("demo", help="index sample photos and run a few searches",
                       description="Start a server on the default model with a temporary data "
                       "directory, index scikit-image's public-domain sample photos, run text "
                       "searches and print the hits.")
    p.add_argument("--keep", action="store_true", help="keep serving after the searches")
    p.add_argument("--port", type=int, default=50051,
                   help="gRPC port; a free one when this is taken (default %(default)s)")
    p.add_argument("--web-port", type=int, help="also serve the web page on this port")
    _say_defaults(sub)
    return parser


def _say_defaults(sub) -> None:
    """Every flag's help ends with its default, where it has one and does not say it yet."""
    for command in sub.choices.values():
        for action in command._actions:
            if action.help and action.default not in (None, False, argparse.SUPPRESS) and \
                    "default" not in action.help:
                action.help += " (default %(default)s)"


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas (like MALLOC_ARENA_MAX=2) before the worker threads start.

    With one arena per thread, 32+ gRPC and batching threads made the server's resident
    memory grow 20% over a 60 s soak; with 2 arenas it stayed within 2% (bench/soak.py).
    """
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass  # not glibc: nothing to cap


def cmd_serve(args) -> int:
    limit_malloc_arenas()
    from crossbit.server.config import ServerConfig, load_config
    from crossbit.server.logs import setup_logging
    from crossbit.server.rpc.app import serve

    overrides = {k: v for k, v in vars(args).items() if k in ServerConfig.__dataclass_fields__}
    config = load_config(args.config, overrides=overrides)
    setup_logging(config.log_format, config.log_level)
    serve(config)
    _exit_if_threads_linger()
    return 0


def _exit_if_threads_linger(wait_s: float = 2.0) -> None:
    """After a clean stop (snapshot taken), leave even if a stuck handler thread would keep
    the interpreter waiting at exit: SIGTERM must end the process."""
    import logging
    import threading
    import time

    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        stuck = [t for t in threading.enumerate()
                 if t is not threading.main_thread() and not t.daemon and t.is_alive()]
        if not stuck:
            return
        time.sleep(0.05)
    logging.getLogger("crossbit.server").warning(
        "%d threads still busy after shutdown (%s); exiting anyway", len(stuck),
        ", ".join(t.name for t in stuck[:5]))
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def cmd_check(args) -> int:
    from crossbit.indexer.check import check_index
    from crossbit.server.cli.backup import index_folders

    data = Path(args.data)
    folders = index_folders(data)
    if not folders:
        print(f"crossbit check: no index under {data} (looked for {data}/images, "
              f"{data}/texts and {data}/collections/*/)", file=sys.stderr)
        return 2
    reports = [check_index(folder, repair=args.repair) for folder in folders]
    for report in reports:
        print("\n".join(report.lines()))
    return 0 if all(r.ok or r.repaired for r in reports) else 1


def cmd_reindex(args) -> int:
    from tqdm import tqdm

    from crossbit.encoders.serving import load_serving_model
    from crossbit.server.cli.reindex import reindex
    from crossbit.server.logs import quiet_third_parties

    quiet_third_parties()
    model = load_serving_model(args.model, args.device)  # the server's way: its codes
    with tqdm(unit="item", desc="encoding", disable=not sys.stderr.isatty()) as bar:
        reports = reindex(args.data, model, drop=args.drop, progress=bar.update)
    for r in reports:
        print(f"{r.modality}s: {r.encoded} encoded again with {model.name}"
              + (f", {r.dropped} removed (nothing to encode them from)" if r.dropped else ""))
    return 0


def cmd_load(args) -> int:
    from crossbit.server.load.generator import main_load

    return main_load(args)


def cmd_demo(args) -> int:
    from crossbit.server.demo import run_demo

    return run_demo(port=args.port, keep=args.keep, web_port=args.web_port)


COMMANDS = {"serve": cmd_serve, "check": cmd_check, "reindex": cmd_reindex, "load": cmd_load,
            "demo": cmd_demo, **CLIENT_COMMANDS, **CATALOG_COMMANDS,
            **TRANSFER_COMMANDS, **BACKUP_COMMANDS, **MODEL_COMMANDS}


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("crossbit")
    except metadata.PackageNotFoundError:
        return "unknown"


def _innermost(parser: argparse.ArgumentParser, args) -> argparse.ArgumentParser:
    """The parser of the (sub)command the arguments name: its usage is the one to show."""
    for dest in ("command", "action"):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(args, dest, None)
        if not subs or name not in subs[0].choices:
            break
        parser = subs[0].choices[name]
    return parser


def parse(argv: list[str] | None = None):
    """The arguments; a flag the command does not know is refused with that command's usage."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        _innermost(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # crossbit stats | head: the reader left, which is fine
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:  # a clear one-line error for users; the trace with CROSSBIT_DEBUG=1
        if os.environ.get("CROSSBIT_DEBUG") == "1":
            raise
        name = type(exc).__module__.split(".")[0]
        if name == "crossbit" or isinstance(exc, (OSError, ValueError, KeyError, TypeError)):
            print(f"crossbit {args.command}: error: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    raise SystemExit(main())
