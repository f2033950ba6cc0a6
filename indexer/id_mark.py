"""The id mark: a small file beside the store, so assigned ids never go back even if the SQLite file does."""

from __future__ import annotations

import json
import os
from pathlib import Path

ID_BLOCK = 4096  # assigned ids reserved in the mark file per fsync


class IdMark:
    """The highest id that may have been given out, kept in ``path`` (None: no file, tests).

    The mark is written, fsynced and renamed before ids up to it are committed, so a store
    that loses its WAL or is restored from an older copy cannot hand out an acknowledged id
    again. Ids are reserved in blocks: one fsync per ``ID_BLOCK`` ids. The caller holds
    the store's write lock around :meth:`reserve` and :meth:`raise_to`.
    """

    def __init__(self, path: Path | None):
        self.path = path
        self.value = self._read()  # ids below it may have been given out
        # so this process assigns none below it (after a clean stop that skips at most
        # ID_BLOCK ids; after a lost WAL it is what keeps acknowledged ids from coming back)
        self.floor = self.value

    def _read(self) -> int:
        if self.path is None or not self.path.exists():
            return 0
        try:
            return int(json.loads(self.path.read_text())["next_id"])
        except (ValueError, KeyError, TypeError, OSError):
            return 0

    def reserve(self, next_id: int) -> None:
        """Before committing ids up to ``next_id``, make sure the mark file is past them."""
        if self.path is None or next_id <= self.value:
            return
        mark = next_id + ID_BLOCK
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps({"next_id": mark}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.value = mark

    def raise_to(self, next_id: int) -> None:
        """Assign no id below ``next_id`` (a snapshot saw more ids than the store)."""
        self.floor = max(self.floor, next_id)
        if next_id > self.value:
            self.reserve(next_id)
