"""The micro-batcher: concurrent items gathered into batches, workers side by side, failures."""

from __future__ import annotations

import threading
import time

import pytest

from crossbit.server.core.batching import MicroBatcher


def test_micro_batcher_gathers_concurrent_items():
    sizes = []

    def double(items):
        time.sleep(0.01)
        return [2 * x for x in items]

    batcher = MicroBatcher(double, max_batch=16, max_wait_ms=20, on_batch=sizes.append)
    results = {}

    def submit(i):
        results[i] = batcher([i], timeout=5)[0]

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert results == {i: 2 * i for i in range(40)}
    assert sum(sizes) == 40 and max(sizes) > 1 and max(sizes) <= 16


def test_micro_batcher_workers_run_batches_side_by_side():
    running, most = [0], [0]
    lock = threading.Lock()

    def slow(items):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return [x + 1 for x in items]

    batcher = MicroBatcher(slow, max_batch=2, max_wait_ms=1, workers=3)
    futures = batcher.submit_many(range(12))
    assert [f.result(timeout=5) for f in futures] == list(range(1, 13))
    assert most[0] > 1  # batches overlapped
    batcher.close()
    assert not any(t.is_alive() for t in batcher._threads)
    with pytest.raises(ValueError, match="workers"):
        MicroBatcher(slow, workers=0)


def test_micro_batcher_failure_reaches_every_waiter():
    def boom(items):
        raise RuntimeError("model exploded")

    batcher = MicroBatcher(boom, max_batch=4, max_wait_ms=1)
    with pytest.raises(RuntimeError, match="exploded"):
        batcher([1, 2, 3], timeout=5)
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(1)


def test_micro_batcher_can_fail_one_item_alone():
    def picky(items):
        return [ValueError(f"bad {x}") if x < 0 else 2 * x for x in items]

    batcher = MicroBatcher(picky, max_batch=8, max_wait_ms=20)
    good, bad = batcher.submit(3), batcher.submit(-1)
    assert good.result(timeout=5) == 6
    with pytest.raises(ValueError, match="bad -1"):
        bad.result(timeout=5)
    batcher.close()
