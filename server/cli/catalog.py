"""The catalog commands of ``crossbit``: collections (create, list, describe, drop), and reading,
counting, deleting and updating stored items (get, list, count, delete, update-metadata)."""

from __future__ import annotations

import json
import sys

from crossbit.server.cli.client import _client, _client_args, meta_text, plural


def add_catalog_commands(sub) -> None:
    p = sub.add_parser("collections", help="create, list, describe or drop collections",
                       description="One server holds many collections (catalogs), each with its "
                       "own model, index kind and items. Names: a lowercase letter, then up to "
                       "62 lowercase letters, digits or underscores. 'default' is the data "
                       "directory itself.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION",
                               help="create, list, describe or drop")
    q = actions.add_parser("create", help="make a collection")
    q.add_argument("name", help="the new collection's name")
    q.add_argument("--model", default="", help="default, mpnet-64, or a trained model folder "
                   "on the server (default: the shipped model)")
    q.add_argument("--index", default="", help="flat, ivf, hnsw, gpu or milvus (default: the "
                   "server's --index)")
    q.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="an index option, e.g. --option nprobe=32 (repeatable)")
    q.add_argument("--exist-ok", action="store_true", help="no error when it exists already")
    _client_args(q)
    q = actions.add_parser("list", help="the collections your token may see")
    q.add_argument("--json", action="store_true", help="print the list as JSON")
    _client_args(q)
    q = actions.add_parser("describe", help="counts, model, index kind, bits and size on disk")
    q.add_argument("name", help="the collection to describe")
    _client_args(q)
    q = actions.add_parser("drop", help="remove a collection and every item in it",
                           description="Remove a collection and every item in it. Give the "
                           "name twice: crossbit collections drop shop --confirm shop")
    q.add_argument("name", help="the collection to remove, with every item in it")
    q.add_argument("--confirm", required=True, metavar="NAME", help="the name again")
    _client_args(q)

    p = sub.add_parser("get", help="read items back by id or key")
    p.add_argument("--id", dest="ids", type=int, action="append", default=[],
                   help="an item's id (repeatable)")
    p.add_argument("--key", dest="keys", action="append", default=[],
                   help="an item's key (repeatable)")
    _item_args(p)
    p.add_argument("--codes", action="store_true", help="also print each item's code (hex)")
    _client_args(p)
    p = sub.add_parser("list", help="list stored items in id order (all, or a filter's)",
                       description="Page through the stored items in id order (a scroll: "
                       "each item once, even while others write).")
    p.add_argument("--filter", metavar="EXPR", help="only items this expression selects")
    p.add_argument("--limit", type=int, default=0, help="stop after this many (default: all)")
    _item_args(p)
    _client_args(p)
    p = sub.add_parser("count", help="how many items a filter selects (all without one)")
    p.add_argument("--filter", metavar="EXPR", help="items this expression selects (README: Filters)")
    p.add_argument("--modality", choices=["image", "text"], default="image",
                   help="images or texts (default %(default)s)")
    _client_args(p)
    p = sub.add_parser("delete", help="delete items by id, key, folder or filter",
                       description="Delete items by id (--id), key (--key), folder (--prefix: "
                       "every key under it) or filter. Ids and keys already gone are reported, "
                       "not an error. --dry-run lists what would go.")
    p.add_argument("--id", dest="ids", type=int, action="append", default=[],
                   help="an item's id (repeatable)")
    p.add_argument("--key", dest="keys", action="append", default=[],
                   help="an item's key (repeatable)")
    p.add_argument("--prefix", metavar="FOLDER", help="every item whose key starts with this "
                   "(an absolute path: crossbit index keys)")
    p.add_argument("--filter", metavar="EXPR", help="items this expression selects (README: Filters)")
    p.add_argument("--modality", choices=["image", "text"], default="image",
                   help="images or texts (default %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="list what would be deleted")
    _client_args(p)
    p = sub.add_parser("update-metadata", help="set or remove metadata fields of stored items",
                       description="Change metadata without sending items again: --set k=v "
                       "(merged into what is there; v as JSON when it parses: 2024, true, "
                       "[\"a\",\"b\"], else a string), --remove k, or --replace. Items by "
                       "--id, --key or --filter.")
    p.add_argument("--id", dest="ids", type=int, action="append", default=[],
                   help="an item's id (repeatable)")
    p.add_argument("--key", dest="keys", action="append", default=[],
                   help="an item's key (repeatable)")
    p.add_argument("--filter", metavar="EXPR", help="items this expression selects (README: Filters)")
    p.add_argument("--set", dest="fields", action="append", default=[], metavar="K=V",
                   help="a field to set (repeatable; V as JSON when it parses)")
    p.add_argument("--remove", action="append", default=[], metavar="K",
                   help="a field to remove (repeatable)")
    p.add_argument("--replace", action="store_true", help="the metadata becomes exactly --set")
    p.add_argument("--modality", choices=["image", "text"], default="image",
                   help="images or texts (default %(default)s)")
    _client_args(p)


def _item_args(p) -> None:
    p.add_argument("--modality", choices=["image", "text"], default="image",
                   help="images or texts (default %(default)s)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")


def parse_fields(pairs: list[str], flag: str = "--set") -> dict:
    """``k=v`` pairs: v as JSON when it parses (numbers, true/false, lists of strings, a quoted
    string), else the text as a string; JSON that metadata cannot hold (null, an object) is
    refused, not stored as its text."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} {pair!r}: expected NAME=VALUE")
        try:
            parsed = json.loads(value)
        except ValueError:
            out[key] = value
            continue
        if parsed is None or isinstance(parsed, dict):
            raise ValueError(f"{flag} {pair!r}: metadata values are strings, numbers, true/false "
                             "or lists of strings (to remove a field: --remove NAME)")
        out[key] = parsed
    return out


def one_line(text: str | None) -> str:
    """A key as one line: control characters (a newline in a key) written as escapes."""
    if text is None:
        return ""
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode()
                   for c in text)


def _print_items(items, as_json: bool, codes: bool = False) -> None:
    for item in items:
        if as_json:
            row = {"id": item.id, "key": item.key, "modality": item.modality,
                   "metadata": item.metadata, "added": item.added}
            if codes and item.code is not None:
                row["code"] = item.code.hex()
            print(json.dumps(row))
        else:
            meta = meta_text(item.metadata, skip=())
            print(f"id={item.id:<8d} {one_line(item.key)}" + (f"  {meta}" if meta else "")
                  + (f"  code={item.code.hex()}" if codes and item.code is not None else ""))


def cmd_collections(args) -> int:
    with _client(args) as client:
        if args.action == "create":
            info = client.create_collection(args.name, args.model, args.index,
                                            parse_fields(args.option, "--option"), args.exist_ok)
            print(f"collection {info['name']}: model {info['model']}, {info['index_kind']} "
                  f"index, {info['bits']} bits")
        elif args.action == "list":
            found = client.list_collections()
            if args.json:
                print(json.dumps(found, indent=2))
            for info in found if not args.json else ():
                print(f"{info['name']:<20s} {info['images']:>9d} images {info['texts']:>9d} texts"
                      f"  {info['index_kind']}, {info['bits']} bits, model {info['model']}")
        elif args.action == "describe":
            print(json.dumps(client.describe_collection(args.name), indent=2))
        else:
            client.drop_collection(args.name, args.confirm)
            print(f"collection {args.name} dropped")
    return 0


def cmd_get(args) -> int:
    if not args.ids and not args.keys:
        print("crossbit get: give --id or --key (repeatable)", file=sys.stderr)
        return 2
    with _client(args) as client:
        items = client.get(args.ids, args.keys, args.modality, with_codes=args.codes)
    _print_items(items, args.json, args.codes)
    for i in items.missing_ids:
        print(f"  id {i}: not found", file=sys.stderr)
    for k in items.missing_keys:
        print(f"  key {k}: not found", file=sys.stderr)
    return 0 if not items.missing_ids and not items.missing_keys else 1


def cmd_list(args) -> int:
    with _client(args) as client:
        shown = 0
        for item in client.scroll(args.filter, args.modality, page_size=500):
            _print_items([item], args.json)
            shown += 1
            if args.limit and shown >= args.limit:
                break
    if not args.json:
        print(f"{shown} {args.modality}{'' if shown == 1 else 's'}", file=sys.stderr)
    return 0


def cmd_count(args) -> int:
    with _client(args) as client:
        print(client.count(args.filter, args.modality))
    return 0


def prefix_filter(prefix: str) -> str:
    """A filter selecting keys under a folder (its literal quoted, % and _ of LIKE escaped)."""
    import os

    path = os.path.realpath(prefix).rstrip("/") + "/"
    escaped = path.replace("\\", "\\\\").replace('"', '\\"').replace("%", "\\%")
    return f'key like "{escaped}%"'


def _not_found(result) -> str:
    """"; not found: 1 id, 2 keys" (only what was missing), or nothing."""
    parts = [plural(len(m), word) for m, word in ((result.missing_ids, "id"),
                                                  (result.missing_keys, "key")) if m]
    return f"; not found: {', '.join(parts)}" if parts else ""


def cmd_delete(args) -> int:
    filters = [f for f in (args.filter, prefix_filter(args.prefix) if args.prefix else None) if f]
    # one filter goes as typed (its error positions are the user's); two are joined
    expr = filters[0] if len(filters) == 1 else \
        " and ".join(f"({f})" for f in filters) if filters else None
    if not args.ids and not args.keys and expr is None:
        print("crossbit delete: give --id, --key, --prefix or --filter", file=sys.stderr)
        return 2
    with _client(args) as client:
        if args.dry_run:
            items = list(client.get(args.ids, args.keys, args.modality)) if args.ids or \
                args.keys else []
            if expr is not None:
                items += list(client.scroll(expr, args.modality, page_size=500))
            items = list({i.id: i for i in items}.values())  # an item named twice goes once
            _print_items(items, False)
            print(f"{plural(len(items), args.modality)} would be deleted (dry run)")
            return 0
        deleted = client.delete(args.ids, args.keys, args.modality, filter=expr)
    print(f"{plural(int(deleted), args.modality)} deleted"
          + _not_found(deleted))
    return 0


def cmd_update_metadata(args) -> int:
    with _client(args) as client:
        updated = client.update_metadata(args.ids, args.keys, parse_fields(args.fields),
                                         args.remove, args.replace, args.filter, args.modality)
    print(f"{plural(int(updated), args.modality)} updated"
          + _not_found(updated))
    return 0


CATALOG_COMMANDS = {"collections": cmd_collections, "get": cmd_get, "list": cmd_list,
                    "count": cmd_count, "delete": cmd_delete,
                    "update-metadata": cmd_update_metadata}
