"""``crossbit reindex``: encode a data directory's items again with another model (server stopped).

Texts are encoded again from their stored text; images from the larger preview kept at
AddImages (``--preview-size``, 640 px by default; the model sees 224 px), or from the
thumbnail where no preview was kept (images no larger than it). Items with neither are
listed, and removed only with ``drop=True``: their old codes mean nothing to the new model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crossbit.indexer.check import stored_bits
from crossbit.indexer.folder import ID_MARK, STORE, lock_directory
from crossbit.indexer.snapshot import SNAPSHOT
from crossbit.indexer.store import Store
from crossbit.server.core.images import decode_image

log = logging.getLogger(__name__)


@dataclass
class ReindexReport:
    modality: str
    encoded: int = 0
    missing: list[tuple[int, str]] = field(default_factory=list)  # (id, why) not re-encodable
    dropped: int = 0


def reindex(data: str | Path, model, drop: bool = False, batch: int = 64,
            progress=None) -> list[ReindexReport]:
    """Re-encode every item under ``data`` with ``model`` and record its fingerprint.

    Raises:
        ValueError: items have nothing to re-encode from and ``drop`` is False (nothing is
            changed then), or there is no index under ``data``.
        DirectoryInUse: a server (or another reindex) holds the data directory.
    """
    data = Path(data)
    folders = [(m, data / f"{m}s") for m in ("image", "text") if (data / f"{m}s" / STORE).exists()]
    if not folders:
        raise ValueError(f"no crossbit store under {data} (looked for {data}/images and {data}/texts)")
    locks = []
    try:
        for _, folder in folders:  # no server may hold them while their codes change
            locks.append(lock_directory(folder))
        return _reindex(folders, model, drop, batch, progress)
    finally:
        for lock in locks:
            lock.close()


def _reindex(folders, model, drop: bool, batch: int, progress) -> list[ReindexReport]:
    plans = []
    for modality, folder in folders:  # first find what cannot be re-encoded, changing nothing
        store = Store(folder / STORE, stored_bits(folder / STORE), mark_path=folder / ID_MARK)
        report, work = ReindexReport(modality), []
        for chunk in store.sources():
            for item_id, key, meta, image in chunk:
                source = meta.get("text") if modality == "text" else image
                if not source:
                    report.missing.append((item_id, f"{key or item_id}: no "
                                           + ("text stored" if modality == "text" else
                                              "preview or thumbnail kept")))
                else:
                    work.append((item_id, source))
        plans.append((modality, folder, store, report, work))
    missing = sum(len(p[3].missing) for p in plans)
    if missing and not drop:
        for *_, store, _, _ in plans:
            store.close()
        shown = "; ".join(why for p in plans for _, why in p[3].missing[:5])
        raise ValueError(f"{missing} items have nothing to encode again from ({shown}): rerun "
                         "with --drop to remove them, or keep serving with the old model")
    record = model.fingerprint()
    for modality, folder, store, report, work in plans:
        codes, embeddings = [], []
        for start in range(0, len(work), batch):
            part = [source for _, source in work[start:start + batch]]
            if modality == "text":
                enc = model.encode_texts(part)
            else:
                enc = model.encode_images([decode_image(b, 1 << 30, 1 << 31) for b in part])
            codes.append(enc.codes)
            embeddings.append(enc.embeddings)
            if progress is not None:
                progress(len(part))
        width = model.bits // 8
        all_codes = np.concatenate(codes) if codes else np.zeros((0, width), np.uint8)
        all_emb = np.concatenate(embeddings) if embeddings else None
        drop_ids = [i for i, _ in report.missing]
        store.rewrite_codes([i for i, _ in work], all_codes, all_emb, model.bits, drop_ids)
        store.set_model_record(record)
        store.close()
        (folder / SNAPSHOT).unlink(missing_ok=True)  # the next start builds the index anew
        report.encoded, report.dropped = len(work), len(drop_ids)
        log.info("reindex %s: %d encoded again, %d dropped", folder, report.encoded, report.dropped)
    return [p[3] for p in plans]
