"""The majority rule and the choice of the replica to promote."""

from __future__ import annotations

import itertools

import pytest

from application.replication.quorum import (
    Position,
    QuorumError,
    ReplicaKind,
    ReplicaPosition,
    best_candidate,
    check_replica_set,
    confirmations_needed,
    majority,
    quorum_seq,
    sources_for,
)

FULL, WITNESS = ReplicaKind.FULL, ReplicaKind.WITNESS


@pytest.mark.parametrize(
    ("replicas", "expected_majority", "expected_confirmations"),
    [(1, 1, 0), (2, 2, 1), (3, 2, 1), (4, 3, 2), (5, 3, 2)],
)
def test_majority(replicas: int, expected_majority: int, expected_confirmations: int) -> None:
    assert majority(replicas) == expected_majority
    assert confirmations_needed(replicas) == expected_confirmations


def test_majority_of_nothing_is_an_error() -> None:
    with pytest.raises(QuorumError):
        majority(0)


def test_three_replicas_need_one_follower() -> None:
    assert quorum_seq({}, 3, leader_seq=10) == 0
    assert quorum_seq({"b": 7}, 3, leader_seq=10) == 7
    assert quorum_seq({"b": 7, "c": 9}, 3, leader_seq=10) == 9


def test_five_replicas_need_two_followers() -> None:
    assert quorum_seq({"b": 9}, 5, leader_seq=10) == 0
    assert quorum_seq({"b": 9, "c": 4}, 5, leader_seq=10) == 4
    assert quorum_seq({"b": 9, "c": 4, "d": 8, "e": 1}, 5, leader_seq=10) == 8


def test_a_follower_never_counts_past_what_the_leader_holds() -> None:
    # a confirmation beyond the leader's own seq (a forged or stale-epoch one) counts only up to it
    assert quorum_seq({"b": 1_000_000}, 3, leader_seq=10) == 10


def test_a_lone_replica_needs_nobody() -> None:
    assert quorum_seq({}, 1, leader_seq=10) == 10


def test_two_replicas_keep_their_old_meaning() -> None:
    assert quorum_seq({"b": 5}, 2, leader_seq=10) == 5


def _replica(region: str, epoch: int, seq: int, kind: ReplicaKind = FULL, priority: int = 0):
    return ReplicaPosition(region, kind, Position(epoch, seq), priority)


def test_the_newest_epoch_wins_over_a_longer_older_log() -> None:
    a = _replica("a", 2, 10)
    b = _replica("b", 1, 500)
    for order in itertools.permutations([a, b]):
        assert best_candidate(order) == a


def test_every_ordering_of_positions_picks_the_same_replica() -> None:
    replicas = [
        _replica("a", 3, 90),
        _replica("b", 3, 120),
        _replica("c", 2, 400),
        _replica("d", 3, 120, WITNESS),
        _replica("e", 3, 119),
    ]
    for order in itertools.permutations(replicas):
        assert best_candidate(order).region == "b"


def test_ties_go_to_priority_then_name() -> None:
    for order in itertools.permutations([_replica("b", 1, 5), _replica("a", 1, 5)]):
        assert best_candidate(order).region == "a"
    tied = [_replica("a", 1, 5), _replica("b", 1, 5, priority=1)]
    for order in itertools.permutations(tied):
        assert best_candidate(order).region == "b"


def test_a_witness_is_never_promoted_but_is_a_source() -> None:
    witness = _replica("w", 4, 1000, WITNESS)
    standby = _replica("s", 4, 990)
    for order in itertools.permutations([witness, standby]):
        chosen = best_candidate(order)
        assert chosen == standby
        assert sources_for(chosen, order) == ["w"]
    assert best_candidate([witness]) is None


def test_sources_are_the_survivors_ahead_furthest_first() -> None:
    chosen = _replica("a", 2, 10)
    survivors = [chosen, _replica("b", 2, 12, WITNESS), _replica("c", 2, 15), _replica("d", 1, 99)]
    assert sources_for(chosen, survivors) == ["c", "b"]


def test_replica_sets_that_cannot_survive_a_site_loss_are_refused() -> None:
    with pytest.raises(QuorumError, match="3 or more"):
        check_replica_set({"a": FULL, "b": FULL})
    with pytest.raises(QuorumError, match="at least 2"):
        check_replica_set({"a": FULL, "b": WITNESS, "c": WITNESS})
    check_replica_set({"a": FULL, "b": FULL, "c": WITNESS})
