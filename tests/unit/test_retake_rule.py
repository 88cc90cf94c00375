"""When a deposed leader may take its shard back by itself."""

from __future__ import annotations

from infra.failover.rules import last_epoch_is


def test_the_newest_epoch_may_retake() -> None:
    assert last_epoch_is([(1, 1), (2, 120)], 2)


def test_an_epoch_followed_by_another_region_may_not() -> None:
    # another region took epoch 3: it may have acknowledged records this store never saw
    assert not last_epoch_is([(1, 1), (2, 120), (3, 480)], 2)


def test_no_history_or_no_epoch_of_its_own_means_no_retake() -> None:
    assert not last_epoch_is([], 1)
    assert not last_epoch_is([(1, 1)], 0)
