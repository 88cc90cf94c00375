"""The heap policy: fewer young collections, and what a full collection kept is frozen."""

from __future__ import annotations

import gc

from infra.node.heap import HeapPolicy


def test_survivors_of_a_full_collection_are_frozen_once() -> None:
    before = gc.get_threshold()
    policy = HeapPolicy(young=12_345)
    policy.install()
    try:
        assert gc.get_threshold()[0] == 12_345
        assert policy.settle() is False  # no full collection yet
        kept = [[i] for i in range(1000)]  # survivors
        gc.collect()
        assert policy.settle() is True
        assert gc.get_freeze_count() >= len(kept)
        assert policy.settle() is False  # nothing new to freeze
    finally:
        gc.callbacks.remove(policy._observe)
        gc.unfreeze()
        gc.set_threshold(*before)
