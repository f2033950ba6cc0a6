"""Helper for test_filter_crash: adds, updates and removes items with typed metadata forever
(snapshots every 50 ms), or, with ``lose-wal``, writes, snapshots, writes more and kills itself."""

import os
import signal
import sys

import numpy as np

from crossbit.indexer import open_index

directory, kind, seed, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
rng = np.random.default_rng(seed)
index = open_index(directory, 64, kind, snapshot_interval=0.05 if mode == "run" else 0,
                   train_size=300)


def meta() -> dict:
    return {"album": str(rng.integers(2020, 2025)), "year": int(rng.integers(2000, 2030)),
            "price": float(rng.integers(0, 400)) / 4, "ok": bool(rng.integers(0, 2)),
            "tags": [f"t{t}" for t in rng.choice(6, int(rng.integers(0, 3)), replace=False)]}


def write_some(batch: int) -> None:
    n = int(rng.integers(1, 30))
    keys = [f"s{seed}-b{batch}-{i}" if rng.random() < 0.7 else None for i in range(n)]
    index.add(rng.integers(0, 256, (n, 8), dtype=np.uint8), keys=keys, metadata=[meta() for _ in keys])
    held = index.store.all_ids()
    if len(held):
        picked = rng.choice(held, min(len(held), 5), replace=False)
        index.update_metadata(picked.tolist(), {"year": int(rng.integers(1990, 2000)), "u": batch},
                              ["album"] if rng.random() < 0.3 else [])
        if rng.random() < 0.3:
            index.remove(picked[:2].tolist())


batch = 0
if mode == "run":
    while True:
        write_some(batch)
        batch += 1
for batch in range(20):  # lose-wal: a snapshot in the middle, then the process dies
    write_some(batch)
    if batch == 10:
        index.snapshot()
os.kill(os.getpid(), signal.SIGKILL)
