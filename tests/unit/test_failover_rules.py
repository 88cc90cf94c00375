"""The failover manager's rules, without ZooKeeper, databases or clocks."""

from __future__ import annotations

from infra.failover.rules import epoch_owning, failover_reason, may_promote, record_is_current

HISTORY = [(1, 1), (2, 120), (4, 480)]


def test_the_epoch_history_says_which_epoch_wrote_a_seq() -> None:
    assert epoch_owning(HISTORY, 0) is None
    assert epoch_owning(HISTORY, 1) == 1
    assert epoch_owning(HISTORY, 119) == 1
    assert epoch_owning(HISTORY, 120) == 2
    assert epoch_owning(HISTORY, 10_000) == 4


def test_a_record_of_a_deposed_writer_is_not_current() -> None:
    assert record_is_current(HISTORY, 130, 2)
    assert not record_is_current(HISTORY, 500, 2)  # epoch 4 owns seq 500
    assert record_is_current([], 5, 7)  # no history yet: nothing to contradict it


def test_a_standby_lagging_more_than_the_limit_is_not_promoted() -> None:
    assert may_promote(2.0, 2.0)
    assert not may_promote(2.001, 2.0)


def test_no_failover_while_the_leader_node_lives() -> None:
    assert (
        failover_reason(
            leader_node_exists=True, planned=True, unhealthy_for_s=60, failover_after_s=5
        )
        is None
    )


def test_a_planned_switchover_fails_over_at_once() -> None:
    reason = failover_reason(
        leader_node_exists=False, planned=True, unhealthy_for_s=0, failover_after_s=5
    )
    assert reason == "planned switchover"


def test_an_unplanned_failover_waits_for_failover_after() -> None:
    assert (
        failover_reason(
            leader_node_exists=False, planned=False, unhealthy_for_s=4.9, failover_after_s=5
        )
        is None
    )
    reason = failover_reason(
        leader_node_exists=False, planned=False, unhealthy_for_s=5.25, failover_after_s=5
    )
    assert reason == "leader unhealthy for 5.25s and its session expired"


def test_failover_after_is_reached_at_its_exact_length() -> None:
    reason = failover_reason(
        leader_node_exists=False, planned=False, unhealthy_for_s=5.0, failover_after_s=5.0
    )
    assert reason == "leader unhealthy for 5.00s and its session expired"
