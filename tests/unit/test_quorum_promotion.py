"""Promotion among three or more replicas: the best live candidate goes, the others wait one more
failover period, a witness never goes, and the one that goes first fetches from those ahead."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from application.replication.quorum import Position, ReplicaKind, ReplicaPosition
from infra.failover import quorum_promotion
from infra.failover.quorum_promotion import decide, positions_from

FULL, WITNESS = ReplicaKind.FULL, ReplicaKind.WITNESS


def rp(
    region: str, epoch: int, seq: int, kind: ReplicaKind = FULL, priority: int = 0
) -> ReplicaPosition:
    return ReplicaPosition(region, kind, Position(epoch, seq), priority)


def test_the_only_standby_goes_and_fetches_from_a_witness_ahead_of_it() -> None:
    me = rp("standby", 1, 98)
    decision = decide(me, [rp("witness", 1, 100, WITNESS)], unhealthy_for_s=5, failover_after_s=5)
    assert decision.go and decision.best == "standby"
    assert decision.sources == ("witness",)
    assert "best candidate at 1/98 among 2 live replica(s)" in decision.why


def test_a_standby_behind_another_waits_then_goes_after_one_more_period() -> None:
    me = rp("b", 1, 90)
    live = [rp("a", 1, 100), rp("w", 1, 95, WITNESS)]
    waiting = decide(me, live, unhealthy_for_s=5, failover_after_s=5)
    assert not waiting.go and waiting.best == "a"
    assert "a is ahead (1/100 against 1/90)" in waiting.why
    late = decide(me, live, unhealthy_for_s=10, failover_after_s=5)
    assert late.go and late.sources == ("a", "w")
    assert "did not act within 5.00s more" in late.why


def test_a_newer_epoch_beats_a_longer_log() -> None:
    me = rp("a", 1, 500)
    assert not decide(me, [rp("b", 2, 10)], unhealthy_for_s=5, failover_after_s=5).go
    assert decide(rp("b", 2, 10), [me], unhealthy_for_s=5, failover_after_s=5).go


def test_ties_go_to_the_higher_priority() -> None:
    a, b = rp("a", 1, 50, priority=3), rp("b", 1, 50, priority=2)
    assert decide(a, [b], unhealthy_for_s=5, failover_after_s=5).go
    assert not decide(b, [a], unhealthy_for_s=5, failover_after_s=5).go


def test_a_witness_never_goes_even_when_it_is_ahead_of_everyone() -> None:
    decision = decide(
        rp("w", 1, 200, WITNESS), [rp("a", 1, 100)], unhealthy_for_s=60, failover_after_s=5
    )
    assert not decision.go and "never leads" in decision.why
    standby = decide(
        rp("a", 1, 100), [rp("w", 1, 200, WITNESS)], unhealthy_for_s=5, failover_after_s=5
    )
    assert standby.go and standby.sources == ("w",)


def test_a_planned_switchover_goes_whoever_is_ahead() -> None:
    assert decide(
        rp("b", 1, 1), [rp("a", 1, 9)], unhealthy_for_s=0, failover_after_s=5, planned=True
    ).go


def test_alone_it_goes_with_nothing_to_fetch() -> None:
    decision = decide(rp("a", 3, 7), [], unhealthy_for_s=5, failover_after_s=5)
    assert decision.go and decision.sources == ()


def test_published_members_are_read_and_bad_ones_skipped() -> None:
    members = [
        {"region": "a", "kind": "full", "epoch": 2, "seq": 10},
        {"region": "w", "kind": "witness", "epoch": "2", "seq": "12"},
        {"region": "x", "kind": "arbiter", "epoch": 1, "seq": 1},
        {"region": "y"},
    ]
    found = positions_from(members, {"a": 3, "w": 1, "x": 0, "y": 0})
    assert found == [rp("a", 2, 10, priority=3), rp("w", 2, 12, WITNESS, priority=1)]
    # a bad one first does not hide the good ones after it
    found = positions_from(members[::-1], {"a": 3, "w": 1, "x": 0, "y": 0})
    assert found == [rp("w", 2, 12, WITNESS, priority=1), rp("a", 2, 10, priority=3)]


def test_a_member_nobody_configured_or_a_witness_claiming_to_be_full_is_not_believed() -> None:
    members = [
        {"region": "nobody", "kind": "full", "epoch": 9, "seq": 10**12},
        {"region": "w", "kind": "full", "epoch": 2, "seq": 50},
    ]
    found = positions_from(members, {"a": 2, "w": 1}, {"a": FULL, "w": WITNESS})
    assert found == [rp("w", 2, 50, WITNESS, priority=1)]


def _controller(leader_region: str, unreadable: set[str]) -> tuple[Any, list[str]]:
    """A standby at 1/90 whose survivors are the old leader (1/100) and a witness (1/95)."""
    alerts: list[str] = []
    members = [
        {"region": "primary", "kind": "full", "epoch": 1, "seq": 100},
        {"region": "witness", "kind": "witness", "epoch": 1, "seq": 95},
    ]
    coord = SimpleNamespace(
        publish_position=lambda *args, **kwargs: None, members=lambda shard: list(members)
    )
    ctx = SimpleNamespace(
        region="standby",
        peers=("primary", "witness"),
        replicas=(("primary", FULL), ("standby", FULL), ("witness", WITNESS)),
        kind_of=lambda region: WITNESS if region == "witness" else FULL,
        failover=SimpleNamespace(failover_after_s=5.0),
        alerts=SimpleNamespace(send=lambda severity, name, *args: alerts.append(name)),
    )
    controller = SimpleNamespace(
        ctx=ctx,
        coord=coord,
        shard_id="shard-1",
        app=SimpleNamespace(epoch=1, seq=90),
        leader_region=leader_region,
        unreadable=unreadable,
    )
    return controller, alerts


async def _fetch(controller: Any, source: str) -> bool:
    return source not in controller.unreadable


def test_an_unreadable_old_leader_does_not_hold_the_promotion(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # what only the deposed leader holds was never confirmed by a follower: never acknowledged
    monkeypatch.setattr(quorum_promotion, "fetch_from", _fetch)
    controller, alerts = _controller("primary", unreadable={"primary"})
    assert asyncio.run(
        quorum_promotion.ready_to_promote(controller, unhealthy_for_s=11.0, planned=False)
    )
    assert alerts == []


def test_an_unreadable_survivor_that_is_not_the_old_leader_refuses_the_promotion(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the witness may hold acknowledged records nobody else has: no promotion without them
    monkeypatch.setattr(quorum_promotion, "fetch_from", _fetch)
    controller, alerts = _controller("primary", unreadable={"witness"})
    assert not asyncio.run(
        quorum_promotion.ready_to_promote(controller, unhealthy_for_s=11.0, planned=False)
    )
    assert alerts == ["FailoverRefused"]
