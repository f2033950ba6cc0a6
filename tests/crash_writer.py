"""Helper for test_crash: adds batches forever, printing an ACK line after each add returns."""

import sys

import numpy as np

from crossbit.indexer import open_index

directory, kind, round_no = sys.argv[1], sys.argv[2], int(sys.argv[3])
index = open_index(directory, 64, kind, snapshot_interval=0.05, train_size=300)
rng = np.random.default_rng(round_no)
batch = 0
while True:
    n = int(rng.integers(1, 40))
    codes = rng.integers(0, 256, size=(n, 8), dtype=np.uint8)
    keys = [f"r{round_no}-b{batch}-{i}" for i in range(n)]
    if batch % 7 == 3:  # now and then re-add an earlier key: an upsert must not duplicate
        keys[0] = f"r{round_no}-b0-0"
    ids = index.add(codes, keys=keys)
    print("ACK", batch, " ".join(f"{k}={i}={c.tobytes().hex()}" for k, i, c in zip(keys, ids, codes)),
          flush=True)
    batch += 1
