"""Moving a catalog: ``crossbit export`` and ``import`` (JSON lines, through a running server) and
``crossbit backup`` and ``restore`` (a consistent copy of a data directory, server running)."""

from __future__ import annotations

import json
import sys

from crossbit.server.cli.client import _client, _client_args, plural

FORMAT = 1  # the export file's version (its first line)


def add_transfer_commands(sub) -> None:
    p = sub.add_parser("export", help="write stored items to a JSON-lines file",
                       description="Write a collection's items (all, or a filter's) as JSON "
                       "lines: a header line (the collection, its model's fingerprint, bits), "
                       "then one item per line (id, key, modality, metadata; with --codes also "
                       "the code in hex and the embedding). crossbit import reads it back.")
    p.add_argument("out", help="the file to write ('-': standard output)")
    p.add_argument("--filter", metavar="EXPR", help="only the items this expression selects")
    p.add_argument("--modality", choices=["image", "text", "both"], default="both",
                   help="which items to write (default %(default)s)")
    p.add_argument("--codes", action="store_true",
                   help="also write codes and embeddings (needed to import images)")
    _client_args(p)
    p = sub.add_parser("import", help="add the items of an export file",
                       description="Add the items of a crossbit export file to a collection. "
                       "Texts are encoded again from their text (any model); images need the "
                       "codes and embeddings of an export made with --codes, by the same "
                       "model as the collection's (the header's fingerprint is checked). Keys "
                       "replace what is stored under them; items without keys are added anew.")
    p.add_argument("file", help="an export file ('-': standard input)")
    p.add_argument("--batch", type=int, default=256, help="items per call")
    _client_args(p)


def cmd_export(args) -> int:
    modalities = ("image", "text") if args.modality == "both" else (args.modality,)
    out = sys.stdout if args.out == "-" else open(args.out, "w", encoding="utf-8")
    written = {}
    try:
        with _client(args) as client:
            info = client.describe_collection(args.collection)
            out.write(json.dumps({"crossbit_export": FORMAT, "collection": info["name"],
                                  "model": info["model"],
                                  "model_fingerprint": info["model_fingerprint"],
                                  "bits": info["bits"], "codes": args.codes}) + "\n")
            for modality in modalities:
                written[modality] = 0
                for item in client.scroll(args.filter, modality, page_size=500,
                                          with_codes=args.codes, with_embeddings=args.codes):
                    row = {"id": item.id, "key": item.key, "modality": modality,
                           "metadata": item.metadata}
                    if args.codes:
                        row["code"] = item.code.hex()
                        row["embedding"] = [float(x) for x in item.embedding]
                    out.write(json.dumps(row) + "\n")
                    written[modality] += 1
    finally:
        if out is not sys.stdout:
            out.close()
    print(", ".join(plural(n, m) for m, n in written.items()) + " exported", file=sys.stderr)
    return 0


def _rows(path: str):
    """(line number, the row's dict or the reason it cannot be read) of every non-blank line."""
    f = sys.stdin if path == "-" else open(path, encoding="utf-8")
    try:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    yield n, f"not JSON ({exc})"
                    continue
                yield n, row if isinstance(row, dict) else "not a JSON object"
    finally:
        if f is not sys.stdin:
            f.close()


def cmd_import(args) -> int:
    from crossbit.v1 import crossbit_pb2 as pb

    rows = _rows(args.file)
    first = next(rows, None)
    if first is None or not isinstance(first[1], dict) or "crossbit_export" not in first[1]:
        raise ValueError(f"{args.file} does not start with a crossbit export header")
    header = first[1]
    counts = {"added": 0, "replaced": 0, "unchanged": 0, "failed": 0}
    with _client(args) as client:
        info = client.describe_collection(args.collection)
        same_model = info["model_fingerprint"] == header.get("model_fingerprint")
        texts, images = [], []

        def flush_texts():
            if texts:
                metas = [t.get("metadata") if isinstance(t.get("metadata"), dict) else {}
                         for t in texts]
                r = client.add_texts_detailed([str(m.get("text", "")) for m in metas],
                                              keys=[t.get("key") for t in texts],
                                              metadata=[{k: v for k, v in m.items() if k != "text"}
                                                        for m in metas])
                tally(r)
                texts.clear()

        def flush_images():
            if images:  # the messages made before sending: a bad row is refused alone
                tally(client._call(client.stub.AddImagesStream, iter(images), retry=False))
                images.clear()

        def image_item(n: int, row: dict):
            try:
                return pb.ImageItem(key=row.get("key") or "", code=bytes.fromhex(row["code"]),
                                    embedding=row.get("embedding") or [],
                                    collection=args.collection,
                                    attributes=_attributes(row.get("metadata") or {}))
            except (ValueError, TypeError, KeyError) as exc:
                refuse(n, row.get("key"), str(exc))
                return None

        def refuse(n: int, key, why: str):
            counts["failed"] += 1
            print(f"  refused: {args.file}:{n}" + (f" ({key})" if key else "") + f": {why}",
                  file=sys.stderr)

        def tally(r):
            for name in ("added", "replaced", "unchanged", "failed"):
                counts[name] += getattr(r, name)
            for result in r.results:
                if not result.ok:
                    print(f"  refused: {result.key or result.index}: {result.error}",
                          file=sys.stderr)

        for n, row in rows:
            if isinstance(row, str):
                refuse(n, None, row)
            elif row.get("modality") == "text":
                texts.append(row)
            elif "code" not in row:
                raise ValueError(f"{args.file}:{n}: an image without its code: export with "
                                 "--codes to import images")
            elif not same_model:
                raise ValueError(f"{args.file}: its codes were made by model {header.get('model')}"
                                 f" ({header.get('model_fingerprint')}), collection "
                                 f"{info['name']} uses {info['model']} "
                                 f"({info['model_fingerprint']}): codes of one model mean "
                                 "nothing to another")
            else:
                item = image_item(n, row)
                if item is not None:
                    images.append(item)
            if len(texts) >= args.batch:
                flush_texts()
            if len(images) >= args.batch:
                flush_images()
        flush_texts()
        flush_images()
    print(f"{counts['added']} added, {counts['replaced']} replaced, {counts['unchanged']} "
          f"unchanged, {counts['failed']} refused")
    return 0 if counts["failed"] == 0 else 1


def _attributes(metadata: dict):
    from crossbit.client.messages import attributes

    return attributes(metadata)


TRANSFER_COMMANDS = {"export": cmd_export, "import": cmd_import}
