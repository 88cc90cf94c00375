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


def test_the_first_epoch_may_retake_and_an_epoch_0_in_the_history_is_nobodys() -> None:
    """The shard's first leader (epoch 1), deposed with nobody after it, may take it back;
    epoch 0 is a region that never led, even against a history that names it."""
    assert last_epoch_is([(1, 1)], 1)
    assert not last_epoch_is([(0, 1)], 0)
