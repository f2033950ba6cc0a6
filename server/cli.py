"""The ``crossbit`` command line: serve, index, search, stats, check, train, evaluate, load, demo.

Heavy modules (torch, faiss) load only inside the commands that need them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
FLICKR_ENV = "CROSSBIT_FLICKR8K"


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", default=os.environ.get("CROSSBIT_SERVER", "127.0.0.1:50051"),
                   help="host:port of a running server (env CROSSBIT_SERVER; default %(default)s)")
    p.add_argument("--token", default=os.environ.get("CROSSBIT_TOKEN"),
                   help="bearer token, when the server requires one (env CROSSBIT_TOKEN)")
    p.add_argument("--tls", default=None, metavar="CA.pem",
                   help="use TLS, trusting this CA certificate file")
    p.add_argument("--timeout", type=float, default=60.0, help="deadline per call in seconds")


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
    "auth_token": "require 'authorization: Bearer TOKEN' on every RPC but health (an empty "
                  "token is refused)",
}


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a hash model",
                       description="Train hash heads on frozen-backbone features cached on disk "
                       "(CPU, minutes) or fine-tune the backbones end to end (--finetune, GPU).")
    p.add_argument("--captions", required=True,
                   help="dataset file: captions CSV (image,caption), COCO captions JSON, "
                   "Karpathy JSON, or multi-label CSV (image,text,labels)")
    p.add_argument("--images", required=True, help="folder the image names are relative to")
    p.add_argument("--format", choices=["csv", "coco", "karpathy", "multilabel"], default="csv",
                   help="how --captions is laid out (default %(default)s)")
    p.add_argument("--split", help="csv: file of training image names; karpathy: split name")
    p.add_argument("--val-images", type=int, default=None,
                   help="images held out of the training data for early stopping (default: a "
                        "tenth of the images, 20 to 500; none below 100 images)")
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--bits", type=int, default=64, help="code length: 16, 32, 64, 128, 256")
    p.add_argument("--backbone", default="efficientnet-lite0", help="efficientnet-lite0, resnet18")
    p.add_argument("--backbone-weights", help="local weights file for the backbone")
    p.add_argument("--text-model", default="minilm-l6",
                   help="minilm-l6 (6 layers, the default), mpnet-base (12 layers; make mpnet) or a "
                        "local Hugging Face BERT directory")
    p.add_argument("--objective", choices=["infonce", "triplet", "dcmh"], default="infonce",
                   help="infonce; triplet = the seeds' max-violation ranking loss; dcmh = labels")
    p.add_argument("--margin", type=float, default=0.2,
                   help="triplet loss margin (default %(default)s)")
    p.add_argument("--epochs", type=int, default=60,
                   help="most passes over the training data; early stopping may end sooner "
                        "(default %(default)s)")
    p.add_argument("--batch-size", type=int, default=128,
                   help="images per training step (default %(default)s)")
    p.add_argument("--lr", type=float, default=5e-4,
                   help="Adam learning rate, cosine-decayed (default %(default)s)")
    p.add_argument("--hidden", type=int, default=1024,
                   help="hidden width of the hash heads' MLP (default %(default)s)")
    p.add_argument("--dropout", type=float, default=0.3,
                   help="dropout in the hash heads (default %(default)s)")
    p.add_argument("--weight-decay", type=float, default=1e-4,
                   help="Adam weight decay (default %(default)s)")
    p.add_argument("--embed-dim", type=int, default=0,
                   help="extra float embedding for re-ranking (0 = re-rank on tanh outputs)")
    p.add_argument("--patience", type=int, default=8,
                   help="epochs without a better held-out score before stopping "
                        "(default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    p.add_argument("--seeds", type=int, default=1,
                   help="train this many seeds (from --seed) and keep the best on the "
                        "held-out images (frozen-backbone training)")
    p.add_argument("--distill", type=float, default=1.0,
                   help="weight of distilling a wider float teacher's in-batch similarities "
                        "into the codes (the teacher trains first; 0 = off)")
    p.add_argument("--teacher-dim", type=int, default=512, help="the float teacher's width")
    p.add_argument("--one-caption", action="store_true",
                   help="one random caption per image per batch (default with infonce: all)")
    p.add_argument("--crop-views", type=int, default=0,
                   help="cache features of this many random crops of each training image and "
                        "draw from them as augmentation (each costs one more feature pass; "
                        "the shipped model uses 8)")
    p.add_argument("--finetune", action="store_true", help="train the backbones too (GPU)")
    p.add_argument("--cache", default=".cache/features", help="feature cache folder")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip rows with missing images or empty captions (counted)")
    p.add_argument("--device", help="torch device (default: CUDA if visible)")
    p.add_argument("--json", help="also write the validation report here")


def _add_evaluate(sub) -> None:
    from crossbit.encoders.config import IMAGE_RUNTIMES, TEXT_RUNTIMES

    p = sub.add_parser("evaluate", help="score a model on a dataset",
                       description="Recall@1/5/10, median rank, precision@K and mAP in both "
                       "directions over the Hamming ranking (ties: expected value under random "
                       "order) and over the float embeddings; PR curve over Hamming radius; "
                       "encoding and search speed. Writes JSON and PNG plots.")
    p.add_argument("--captions", required=True, help="dataset file (see train --format)")
    p.add_argument("--images", required=True, help="folder the image names are relative to")
    p.add_argument("--format", choices=["csv", "coco", "karpathy", "multilabel"], default="csv",
                   help="how --captions is laid out (default %(default)s)")
    p.add_argument("--split", help="csv: file of image names to evaluate on; karpathy: split")
    p.add_argument("--model", help="model directory or shipped name: default, mpnet-64 "
                   "(default: the shipped default)")
    p.add_argument("--json", required=True, help="where to write the report")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-speed", action="store_true", help="skip the speed measurement")
    p.add_argument("--cache", help="feature cache folder (default: none)")
    p.add_argument("--runtime", choices=IMAGE_RUNTIMES, default="auto",
                   help="image backbone runtime")
    p.add_argument("--text-runtime", choices=TEXT_RUNTIMES, default="auto",
                   help="text encoder runtime (int8: ONNX int8 weights)")
    p.add_argument("--device", help="torch device (default: CUDA if visible, else the CPU)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crossbit",
        description="Cross-modal retrieval over binary codes: type a sentence, get the photos.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(sub)
    p = sub.add_parser("index", help="add images (files, folders, globs) to a running server",
                       description="Stream images to the server: files, folders (their images; "
                       "subfolders too with --recursive) and globs ('photos/*.jpg'). Each "
                       "image's key is its absolute path: indexing the same folder again "
                       "duplicates nothing (unchanged files are reported as such), and two "
                       "folders' IMG_0001.jpg never replace each other.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or globs")
    p.add_argument("-r", "--recursive", action="store_true",
                   help="also take images in the folders' subfolders (default: only their own)")
    _client_args(p)
    p = sub.add_parser("add-texts", help="add texts (one per line) to a running server",
                       description="Add the lines of FILE as text items (for image-to-text "
                       "search: crossbit search --modality text). A line's key is FILE:LINE "
                       "(absolute path), so adding the file again duplicates nothing; blank "
                       "lines are skipped.")
    p.add_argument("file", help="a text file, one text per line")
    p.add_argument("--batch", type=int, default=256, help="texts per call (default %(default)s)")
    _client_args(p)
    p = sub.add_parser("search", help="search a running server by text or image",
                       description='Search by text (crossbit search "two dogs in the snow") or '
                       "by image (--image FILE).")
    p.add_argument("text", nargs="?", help="the query text")
    p.add_argument("--image", help="query image file instead of text")
    p.add_argument("-k", "--top-k", type=int, default=10, help="hits to return (default %(default)s)")
    p.add_argument("--modality", choices=["image", "text"], default="image",
                   help="what to return: images (default) or texts")
    p.add_argument("--radius", type=int, help="hash lookup: only hits within this distance")
    p.add_argument("--no-rerank", action="store_true", help="plain Hamming order")
    p.add_argument("--json", action="store_true", help="print hits as JSON")
    _client_args(p)
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
    p = sub.add_parser("stats", help="show a running server's index and model")
    _client_args(p)
    _add_train(sub)
    _add_evaluate(sub)
    p = sub.add_parser("export-onnx", help="export the image backbone to ONNX",
                       description="Export the image backbone for ONNX Runtime (used "
                       "automatically on the CPU; this writes it where you want it).")
    p.add_argument("--backbone", default="efficientnet-lite0",
                   help="image backbone to export (default %(default)s)")
    p.add_argument("--out", required=True, help="the .onnx file to write")
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
    from crossbit.server.app import serve
    from crossbit.server.config import ServerConfig, load_config
    from crossbit.server.logs import setup_logging

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


def check_server_address(address: str) -> str:
    """host:port with a port in 1..65535 (a bare host would silently mean port 443)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"--server {address!r} needs HOST:PORT, e.g. 127.0.0.1:50051 "
                         "(the port crossbit serve prints)")
    return address


def _client(args):
    from crossbit.client import Client

    return Client(check_server_address(args.server), token=args.token, tls=args.tls,
                  timeout=args.timeout)


def find_images(paths: list[str], recursive: bool) -> tuple[list[Path], int, list[str]]:
    """(image files, files skipped as not images, paths that name nothing) for ``index``.

    Files named directly are sent whatever their suffix (the server says if one is not an
    image); in folders, files are taken by suffix and the others counted as skipped.
    """
    import glob

    files: dict[Path, None] = {}
    skipped, missing = 0, []
    for raw in paths:
        matches = sorted(glob.glob(raw)) if glob.has_magic(raw) else [raw]
        if not matches:
            missing.append(raw)
        for match in matches:
            path = Path(match).expanduser()
            if path.is_dir():
                found = path.rglob("*") if recursive else path.iterdir()
                for p in sorted(found):
                    if not p.is_file():
                        continue
                    if p.suffix.lower() in IMAGE_SUFFIXES:
                        files[p] = None
                    else:
                        skipped += 1
            elif path.is_file():
                files[path] = None
            else:
                missing.append(raw)
    return list(files), skipped, missing


def cmd_index(args) -> int:
    from tqdm import tqdm

    files, skipped, missing = find_images(args.paths, args.recursive)
    for raw in missing:
        print(f"crossbit index: {raw}: no such file or folder", file=sys.stderr)
    if not files:
        print("crossbit index: no images in " + ", ".join(args.paths)
              + ("" if args.recursive else " (subfolders are searched with --recursive)"),
              file=sys.stderr)
        return 1
    with _client(args) as client, tqdm(total=len(files), unit="img", desc="indexing",
                                       disable=not sys.stderr.isatty()) as bar:
        response = client.add_images_detailed(
            files, keys=[str(p.resolve()) for p in files],
            metadata=[{"path": str(p)} for p in files], progress=bar.update)
    new = response.added - response.replaced - response.unchanged
    print(f"{len(files)} images: {new} added, {response.replaced} replaced, "
          f"{response.unchanged} unchanged, {response.failed} refused"
          + (f"; {skipped} files skipped (not images)" if skipped else ""))
    for r in response.results:
        if not r.ok:
            print(f"  {files[r.index]}: {r.error_code}: {r.error}")
    return 0 if response.failed == 0 and not missing else 1


def cmd_add_texts(args) -> int:
    path = Path(args.file)
    if not path.is_file():
        print(f"crossbit add-texts: {path} is not a file", file=sys.stderr)
        return 2
    lines = [(n, line.strip()) for n, line in
             enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if line.strip()]
    if not lines:
        print(f"crossbit add-texts: {path} has no texts", file=sys.stderr)
        return 1
    base = str(path.resolve())
    counts = {"added": 0, "replaced": 0, "unchanged": 0, "failed": 0}
    with _client(args) as client:
        for start in range(0, len(lines), max(1, args.batch)):
            part = lines[start:start + max(1, args.batch)]
            response = client.add_texts_detailed([t for _, t in part],
                                                 keys=[f"{base}:{n}" for n, _ in part])
            counts["added"] += response.added - response.replaced - response.unchanged
            counts["replaced"] += response.replaced
            counts["unchanged"] += response.unchanged
            counts["failed"] += response.failed
            for r in response.results:
                if not r.ok:
                    print(f"  line {part[r.index][0]}: {r.error_code}: {r.error}")
    print(f"{len(lines)} texts: {counts['added']} added, {counts['replaced']} replaced, "
          f"{counts['unchanged']} unchanged, {counts['failed']} refused")
    return 0 if counts["failed"] == 0 else 1


def _print_hits(hits, as_json: bool) -> None:
    if as_json:
        print(json.dumps([vars(h) for h in hits], indent=2))
        return
    if not hits:
        print("no hits")
    for rank, h in enumerate(hits, 1):
        meta = {k: v for k, v in h.metadata.items() if k != "path"}
        print(f"{rank:3d}. id={h.id:<8d} dist={h.distance:<4d} score={h.score:.3f}  "
              f"{h.key}" + (f"  {meta}" if meta else ""))


def cmd_search(args) -> int:
    if (args.text is None) == (args.image is None):
        print('crossbit search: give a text ("a dog on a beach") or --image FILE'
              + (", not both" if args.text is not None else ""), file=sys.stderr)
        return 2
    with _client(args) as client:
        hits = client.search(text=args.text, image=args.image, top_k=args.top_k,
                             modality=args.modality, radius=args.radius,
                             rerank=False if args.no_rerank else None)
    _print_hits(hits, args.json)
    return 0


def cmd_check(args) -> int:
    from crossbit.indexer.check import check_index

    data = Path(args.data)
    folders = [data / m for m in ("images", "texts") if (data / m).is_dir()]
    if not folders:
        print(f"crossbit check: no index under {data} (looked for {data}/images and "
              f"{data}/texts)", file=sys.stderr)
        return 2
    reports = [check_index(folder, repair=args.repair) for folder in folders]
    for report in reports:
        print("\n".join(report.lines()))
    return 0 if all(r.ok or r.repaired for r in reports) else 1


def cmd_reindex(args) -> int:
    from tqdm import tqdm

    from crossbit.encoders.model import HashModel
    from crossbit.encoders.runtime import use_image_runtime, use_text_runtime
    from crossbit.server.logs import quiet_third_parties
    from crossbit.server.reindex import reindex

    quiet_third_parties()
    model = HashModel.load(args.model, device=args.device)
    use_image_runtime(model)
    use_text_runtime(model, "auto")
    with tqdm(unit="item", desc="encoding", disable=not sys.stderr.isatty()) as bar:
        reports = reindex(args.data, model, drop=args.drop, progress=bar.update)
    for r in reports:
        print(f"{r.modality}s: {r.encoded} encoded again with {model.name}"
              + (f", {r.dropped} removed (nothing to encode them from)" if r.dropped else ""))
    return 0


def cmd_stats(args) -> int:
    with _client(args) as client:
        print(json.dumps(client.stats(), indent=2))
    return 0


def cmd_train(args) -> int:
    import logging

    from crossbit.encoders.config import ModelConfig
    from crossbit.encoders.training import TrainConfig
    from crossbit.encoders.training.recipes import load_pairs, train_model

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    pairs = load_pairs(args.format, args.captions, args.images, args.split, args.skip_bad)
    val_images = args.val_images if args.val_images is not None else \
        auto_held_out(len(pairs.images))
    print(f"{len(pairs.images)} images, {len(pairs.captions)} texts; {val_images} images held "
          "out for early stopping" + ("" if val_images else " (too few: fixed epochs)"))
    model_config = ModelConfig(bits=args.bits, image_backbone=args.backbone,
                               image_weights=args.backbone_weights, text_model=args.text_model,
                               hidden=args.hidden, dropout=args.dropout, embed_dim=args.embed_dim)
    train_config = TrainConfig(objective=args.objective, margin=args.margin, epochs=args.epochs,
                               batch_size=args.batch_size, lr=args.lr, patience=args.patience,
                               weight_decay=args.weight_decay, seed=args.seed,
                               seeds=args.seeds, finetune=args.finetune,
                               distill=args.distill, teacher_dim=args.teacher_dim,
                               all_captions=not args.one_caption, crop_views=args.crop_views)
    report = train_model(model_config, train_config, pairs, val_images, args.out,
                         args.cache, args.device)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=float) + "\n")
    if "text_to_image" in report:
        from crossbit.encoders.training.evaluate import format_report

        print("validation (held-out training images):")
        print(format_report(report))
        print(summary_line(report, val_images))
    print(f"model written to {args.out}")
    return 0


def summary_line(report: dict, held_out: int) -> str:
    """One line: held-out recall of the new model, and of the shipped one on the same data."""
    def r(block, direction):
        return "/".join(f"{block[direction][f'recall@{k}']:.1f}" for k in (1, 5, 10))

    line = (f"held-out ({held_out} images) R@1/5/10, Hamming: text->image {r(report, 'text_to_image')}"
            f", image->text {r(report, 'image_to_text')}")
    shipped = report.get("shipped_model")
    if shipped:
        line += (f"; the shipped model on the same images: {r(shipped, 'text_to_image')} and "
                 f"{r(shipped, 'image_to_text')}")
    return line


def auto_held_out(n_images: int) -> int:
    """Images held out for early stopping when --val-images is not given."""
    return 0 if n_images < 100 else min(500, max(20, n_images // 10))


def cmd_evaluate(args) -> int:
    import logging

    from crossbit.encoders.model import HashModel
    from crossbit.encoders.runtime import use_image_runtime, use_text_runtime
    from crossbit.encoders.training.evaluate import format_report, run_evaluation
    from crossbit.encoders.training.recipes import load_pairs

    logging.basicConfig(level=logging.WARNING)
    pairs = load_pairs(args.format, args.captions, args.images, args.split)
    model = HashModel.load(args.model, device=args.device)
    use_image_runtime(model, args.runtime)
    use_text_runtime(model, args.text_runtime)
    report = run_evaluation(model, pairs, args.json, plots=not args.no_plots, cache=args.cache,
                            speed=not args.no_speed)
    print(format_report(report))
    print(f"report written to {args.json}")
    return 0


def cmd_export_onnx(args) -> int:
    from crossbit.encoders.onnx_image import export_backbone

    print(f"wrote {export_backbone(args.backbone, args.out)}")
    return 0


def cmd_load(args) -> int:
    from crossbit.server.load import main_load

    return main_load(args)


def cmd_demo(args) -> int:
    from crossbit.server.demo import run_demo

    return run_demo(port=args.port, keep=args.keep, web_port=args.web_port)


COMMANDS = {"serve": cmd_serve, "index": cmd_index, "search": cmd_search, "stats": cmd_stats,
            "check": cmd_check, "add-texts": cmd_add_texts, "reindex": cmd_reindex,
            "train": cmd_train, "evaluate": cmd_evaluate, "export-onnx": cmd_export_onnx,
            "load": cmd_load, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
