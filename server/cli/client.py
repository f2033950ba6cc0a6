"""The client commands of ``crossbit``: index, add-texts, search and stats against a running server."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", default=os.environ.get("CROSSBIT_SERVER", "127.0.0.1:50051"),
                   help="host:port of a running server (env CROSSBIT_SERVER; default %(default)s)")
    p.add_argument("--token", default=os.environ.get("CROSSBIT_TOKEN"),
                   help="bearer token, when the server requires one (env CROSSBIT_TOKEN)")
    p.add_argument("--tls", default=None, metavar="CA.pem",
                   help="use TLS, trusting this CA certificate file")
    p.add_argument("--timeout", type=float, default=60.0, help="deadline per call in seconds")
    p.add_argument("--collection", default=os.environ.get("CROSSBIT_COLLECTION", "default"),
                   help="the collection to work on (env CROSSBIT_COLLECTION; default %(default)s)")


def add_client_commands(sub) -> None:
    """The parsers of index, add-texts, search and stats (and, from ``catalog``, the
    collections, get, list, count, delete and update-metadata)."""
    p = sub.add_parser("index", help="add images (files, folders, globs) to a running server",
                       description="Stream images to the server: files, folders (their images; "
                       "subfolders too with --recursive) and globs ('photos/*.jpg'). Each "
                       "image's key is its absolute path: indexing the same folder again "
                       "duplicates nothing (unchanged files are reported as such), and two "
                       "folders' IMG_0001.jpg never replace each other.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or globs")
    p.add_argument("-r", "--recursive", action="store_true",
                   help="also take images in the folders' subfolders (default: only their own)")
    p.add_argument("--meta", action="append", default=[], metavar="K=V",
                   help="metadata for every image (repeatable; V as JSON when it parses: 2024, "
                        "true, [\"a\"]; else a string). Metadata merges on re-add: fields "
                        "set by others stay")
    p.add_argument("--prune", action="store_true",
                   help="also delete the stored images under these folders whose files are gone")
    p.add_argument("--dry-run", action="store_true",
                   help="say what would be added and pruned; change nothing")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="list the files skipped as not images (HEIC, RAW, ...)")
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
    p.add_argument("--filter", metavar="EXPR",
                   help='only items this expression selects, e.g. \'album == "2024" and year >= '
                        "2020' (README: Filters)")
    p.add_argument("--offset", type=int, default=0, help="skip this many hits (the next page)")
    p.add_argument("--min-score", type=float, help="only hits scoring at least this")
    p.add_argument("--json", action="store_true", help="print hits as JSON")
    _client_args(p)
    p = sub.add_parser("stats", help="show a running server's index and model")
    _client_args(p)


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
                  timeout=args.timeout, collection=args.collection)


def find_images(paths: list[str], recursive: bool) -> tuple[list[Path], list[Path], list[str],
                                                               list[Path]]:
    """(image files, files skipped as not images, paths that name nothing, folders given) for
    ``index``.

    Files named directly are sent whatever their suffix (the server says if one is not an
    image); in folders, files are taken by suffix and the others skipped.
    """
    import glob

    files: dict[Path, None] = {}
    skipped, missing, folders = [], [], []
    for raw in paths:
        matches = sorted(glob.glob(raw)) if glob.has_magic(raw) else [raw]
        if not matches:
            missing.append(raw)
        for match in matches:
            path = Path(match).expanduser()
            if path.is_dir():
                folders.append(path)
                found = path.rglob("*") if recursive else path.iterdir()
                for p in sorted(found):
                    if not p.is_file():
                        continue
                    if p.suffix.lower() in IMAGE_SUFFIXES:
                        files[p] = None
                    else:
                        skipped.append(p)
            elif path.is_file():
                files[path] = None
            else:
                missing.append(raw)
    return list(files), skipped, missing, folders


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def stale_items(client, folders: list[Path], recursive: bool, keep: set[str]) -> list:
    """Stored images under the folders (their subfolders with ``recursive``) whose files are
    not among ``keep``: what ``--prune`` removes."""
    from crossbit.server.cli.catalog import prefix_filter

    out = []
    for folder in folders:
        base = str(folder.resolve()).rstrip("/") + "/"
        for item in client.scroll(prefix_filter(str(folder)), "image", page_size=500):
            inside = recursive or "/" not in item.key[len(base):]
            if inside and item.key not in keep:
                out.append(item)
    return out


def cmd_index(args) -> int:
    from tqdm import tqdm

    from crossbit.server.cli.catalog import parse_fields

    meta = parse_fields(args.meta, "--meta")
    files, skipped, missing, folders = find_images(args.paths, args.recursive)
    for raw in missing:
        print(f"crossbit index: {raw}: no such file or folder", file=sys.stderr)
    if args.verbose:
        for path in skipped:
            print(f"  skipped (not an image by its suffix): {path}")
    if not files and not args.prune:
        print("crossbit index: no images in " + ", ".join(args.paths)
              + ("" if args.recursive else " (subfolders are searched with --recursive)"),
              file=sys.stderr)
        return 1
    keys = [str(p.resolve()) for p in files]
    with _client(args) as client:
        stale = stale_items(client, folders, args.recursive, set(keys)) if args.prune else []
        empty = [f for f in folders if not any(k.startswith(str(f.resolve()).rstrip("/") + "/")
                                               for k in keys)]
        if stale and empty and not args.dry_run:  # an unmounted disk looks like this
            print(f"crossbit index: {', '.join(map(str, empty))} holds no images, so --prune "
                  f"would remove every stored image under it ({len(stale)} in all); if that is "
                  "what you want, run crossbit delete --prefix FOLDER", file=sys.stderr)
            return 1
        if args.dry_run:
            print(f"{plural(len(files), 'image')} would be sent (added, replaced or unchanged)"
                  + (f"; {plural(len(stale), 'stored image')} would be pruned (files gone):"
                     if args.prune else ""))
            for item in stale:
                print(f"  {item.key}")
            return 0
        response = None
        if files:
            with tqdm(total=len(files), unit="img", desc="indexing",
                      disable=not sys.stderr.isatty()) as bar:
                response = client.add_images_detailed(
                    files, keys=keys, metadata=[{"path": key, **meta} for key in keys],
                    progress=bar.update)
        pruned = client.delete([i.id for i in stale], modality="image") if stale else 0
    failed = response.failed if response is not None else 0
    if response is not None:
        print(f"{plural(len(files), 'image')}: {response.added} added, {response.replaced} "
              f"replaced, {response.unchanged} unchanged, {response.failed} refused"
              + (f"; {plural(len(skipped), 'file')} skipped (not images"
                 + ("" if args.verbose else "; --verbose lists them") + ")" if skipped else ""))
        for r in response.results:
            if not r.ok:
                print(f"  {files[r.index]}: {r.error_code}: {r.error}")
    if args.prune:
        print(f"{plural(int(pruned), 'image')} pruned (their files are gone)")
    return 0 if failed == 0 and not missing else 1


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
            counts["added"] += response.added
            counts["replaced"] += response.replaced
            counts["unchanged"] += response.unchanged
            counts["failed"] += response.failed
            for r in response.results:
                if not r.ok:
                    print(f"  line {part[r.index][0]}: {r.error_code}: {r.error}")
    print(f"{plural(len(lines), 'text')}: {counts['added']} added, {counts['replaced']} replaced, "
          f"{counts['unchanged']} unchanged, {counts['failed']} refused")
    return 0 if counts["failed"] == 0 else 1


def meta_text(metadata: dict, skip: tuple[str, ...] = ("path",)) -> str:
    """Metadata as ``k=v`` pairs (strings as they are, other values as JSON)."""
    return "  ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}"
                     for k, v in metadata.items() if k not in skip)


def _print_hits(hits, as_json: bool, reranked: bool = False) -> None:
    if as_json:
        print(json.dumps([vars(h) for h in hits], indent=2))
        return
    if not hits:
        print("no hits")
        return
    if reranked:
        print("(ordered by score: the Hamming shortlist re-ranked by the float embeddings, so "
              "distances need not rise)")
    for rank, h in enumerate(hits, 1):
        meta = meta_text(h.metadata)
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
                             rerank=False if args.no_rerank else None, filter=args.filter,
                             offset=args.offset, min_score=args.min_score)
    reranked = not args.no_rerank and args.radius is None and \
        any(a.distance > b.distance for a, b in zip(hits, hits[1:]))
    _print_hits(hits, args.json, reranked)
    return 0


def cmd_stats(args) -> int:
    with _client(args) as client:
        print(json.dumps(client.stats(), indent=2))
    return 0


CLIENT_COMMANDS = {"index": cmd_index, "add-texts": cmd_add_texts, "search": cmd_search,
                   "stats": cmd_stats}
