"""The upkeep of a ``BinaryIndex`` (mixed into it): snapshots, IVF retraining off the lock, and the
invariant check."""

from __future__ import annotations

import logging
import time

import numpy as np

from crossbit.indexer import attribute_snapshot
from crossbit.indexer.attribute_check import attribute_differences
from crossbit.indexer.snapshot import id_differences, replay, write_snapshot

log = logging.getLogger(__name__)


class Upkeep:
    """Uses the index's ``store``, ``backend``, ``attributes``, ``_lock``, ``_changes``,
    ``_retraining``, ``kind``, ``bits`` and ``directory``."""

    def _retrain(self) -> None:
        """Train a new IVF index on every stored code, off the lock, and swap it in.

        Searches and writes go on meanwhile against the old index. The store's change log
        position is taken before the codes are read, so the swap (under the write lock)
        replays whatever changed during the training into the new index first.
        """
        try:
            start = time.perf_counter()
            seq = self.store.max_seq()
            chunks = list(self.store.iter_codes())
            ids = np.concatenate([c[0] for c in chunks]) if chunks else np.zeros(0, np.int64)
            codes = np.concatenate([c[1] for c in chunks]) if chunks else \
                np.zeros((0, self.bits // 8), np.uint8)
            fresh = self.backend.retrained(ids, codes)
            with self._lock.write():
                replayed = replay(fresh, self.store, seq)
                self.backend = fresh
                self._changes += 1
            log.info("index %s: IVF retrained on %d codes in %.1fs off the lock (%d changes "
                     "replayed at the swap)", self.directory, len(ids),
                     time.perf_counter() - start, replayed)
        except Exception:  # the old index stays; the next add that needs it tries again
            log.exception("index %s: IVF retraining failed", self.directory)
        finally:
            self._retraining = None

    def wait_retrained(self, timeout: float | None = None) -> None:
        """Block until a retraining in progress (if any) has swapped its index in."""
        thread = self._retraining
        if thread is not None:
            thread.join(timeout)

    def verify(self, deep: bool = True) -> str:
        """Check the invariant (the backend holds exactly the store's ids, each once, and the
        attribute index what the store's rows say, field by field, when ``deep``); "" when it
        holds, else what differs."""
        with self._lock.read():
            stored = self.store.all_ids()
            held = self.backend.all_ids()
            attributes = attribute_differences(self.attributes, self.store, stored, deep)
        return "; ".join(id_differences(held, stored, "the index") + attributes)

    # -- persistence ----------------------------------------------------------------------------
    def snapshot(self) -> bool:
        """Write the backend and the attribute index to disk (temp file, fsync, rename) with the
        store's high-water mark; the change log before it is forgotten once both are written.

        Returns:
            True when written, False when the disk refused (logged; the store keeps everything).
        """
        with self._lock.write():
            seq = self.store.max_seq()
            next_id = max(self.store.id_counter())
            payload = self.backend.to_bytes()
            extra = self.backend.snapshot_extra()
            attr_header, attr_payload = attribute_snapshot.snapshot_of(self.attributes, seq)
            self._changes = 0
            count = len(self.backend)
        header = {"kind": self.kind, "bits": self.bits, "seq": seq, "extra": extra,
                  "count": count, "next_id": next_id, "written": time.time()}
        try:
            attribute_snapshot.save(self.directory, attr_header, attr_payload)
            write_snapshot(self.directory, header, payload)
        except OSError as exc:
            log.error("index %s: snapshot failed (%s); the store still holds every item",
                      self.directory, exc)
            return False
        self._snapshot_seq = seq
        self.store.compact_log(seq)
        log.info("index %s: snapshot at seq %d (%d items)", self.directory, seq, header["count"])
        return True

    def _snapshot_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            if self._changes:
                try:
                    self.snapshot()
                except Exception:  # keep the thread alive; the next round tries again
                    log.exception("background snapshot failed")

