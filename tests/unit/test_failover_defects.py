"""Paths of the failover controller the drills never take, each pinned by a test."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace
from typing import Any

from application.ports import Head
from infra.coordination.base import LeaderInfo
from infra.failover.state import Role
from projections.replication.replicator import Replicator
from tests.unit.controller_harness import SHARD, make_rig
from tests.unit.wal_records import sealed_records


def _old_leader_gone(rig: Any, start: int = 1) -> None:
    rig.ensemble.epochs[SHARD] = [(1, start)]
    rig.controller.role = Role.STANDBY


def test_the_new_epoch_starts_where_the_store_ends_after_a_slow_catch_up() -> None:
    # catch_up outlives its wait and lands 20 old-epoch records after the seq was read
    rig = make_rig(seq=100)
    _old_leader_gone(rig)
    rig.replicator.primary_head = 120
    rig.replicator.catch_up_s = 1.3
    assert asyncio.run(rig.controller.try_failover("test"))
    epoch, start = rig.ensemble.epochs[SHARD][-1]
    assert (epoch, start) == (2, rig.app.seq + 1)
    assert rig.controller.failovers[-1].seq + 1 == start


def test_records_delivered_during_the_promotion_are_not_applied() -> None:
    # the topic and the peer link go on delivering while ZooKeeper records the epoch
    rig = make_rig(seq=100)
    _old_leader_gone(rig)
    rig.coord.hooks["take_leadership"] = lambda: rig.writer.query(
        lambda _: rig.replicator.deliver(5)
    ).result(5)
    assert asyncio.run(rig.controller.try_failover("test"))
    _, start = rig.ensemble.epochs[SHARD][-1]
    assert start == rig.app.seq + 1 == 101


class _Primary:
    """A leader's store whose head was written `age_s` ago."""

    def __init__(self, head: int, age_s: float) -> None:
        self.head_seq = head
        self.recorded_at_us = time.time_ns() // 1000 - int(age_s * 1e6)

    def head(self, shard: str) -> Head:
        return Head(shard, self.head_seq, 1)

    def read_records(self, shard: str, after: int, limit: int) -> list[Any]:
        last = min(self.head_seq, after + limit)
        return [
            replace(r, recorded_at_us=self.recorded_at_us)
            for r in sealed_records(last - after, first=after + 1)
        ]


class _StalledApp:
    shard_id = SHARD
    seq = 20
    epoch = 1
    log_only = False

    def append_replicated(self, batch: Any) -> None:
        raise AssertionError("stalled: nothing is applied")


def test_the_lag_gate_counts_the_age_of_a_backlog_found_just_now() -> None:
    primary = _Primary(head=50, age_s=10.0)
    replicator = Replicator(_StalledApp(), primary)  # type: ignore[arg-type]
    replicator.stall_after_seq = 20
    replicator.catch_up()
    assert replicator.lag_records() == 30
    assert replicator.lag_seconds() >= 10.0


def test_a_failed_step_after_take_leadership_gives_the_shard_back() -> None:
    rig = make_rig(seq=100)
    _old_leader_gone(rig)

    def broken(shard: str, seq: int) -> None:
        raise OSError("the store went away")

    rig.app.store.save_relay_position = broken  # type: ignore[method-assign]
    assert not asyncio.run(rig.controller.try_failover("test"))
    assert rig.ensemble.leaders.get(SHARD) is None  # the next round sees a leaderless shard
    assert not rig.coord.is_leader(SHARD)
    assert rig.controller.role == "standby"


def test_a_leader_deposed_during_a_hand_over_does_not_lead_again() -> None:
    rig = make_rig("primary", peers=("standby",), seq=10)
    epoch = rig.coord.take_leadership(SHARD, applied_seq=0)
    rig.app.epoch = epoch
    rig.controller.role = Role.LEADER

    async def scenario() -> None:
        async def depose_meanwhile() -> None:
            await asyncio.sleep(0.1)
            rig.coord.expire_session()
            rig.controller.rejoin_task = asyncio.ensure_future(
                rig.controller.deposed("session expired")
            )

        deposer = asyncio.ensure_future(depose_meanwhile())
        with contextlib.suppress(TimeoutError):
            await rig.controller.hand_over("standby", timeout_s=0.3)
        await deposer
        assert rig.controller.role != "leader"
        assert not rig.controller.accepting()
        assert rig.controller.rejoin_task is not None
        rig.controller.rejoin_task.cancel()

    asyncio.run(scenario())


def test_nothing_blocks_the_event_loop_during_a_failover() -> None:
    rig = make_rig(seq=100)
    _old_leader_gone(rig)

    async def scenario() -> None:
        await rig.controller.check(None)  # type: ignore[arg-type]
        await asyncio.sleep(0.15)
        await rig.controller.check(None)  # type: ignore[arg-type]
        assert rig.controller.role == "leader"

    asyncio.run(scenario())
    assert rig.coord.on_loop == []


def test_following_a_new_leader_reads_the_history_off_the_event_loop() -> None:
    rig = make_rig(seq=100)
    rig.ensemble.epochs[SHARD] = [(1, 1), (2, 90)]

    async def scenario() -> None:
        result = rig.controller.follow(LeaderInfo("primary", "http://primary", 2, 90))
        if asyncio.iscoroutine(result):
            await result

    asyncio.run(scenario())
    assert rig.controller.history == [(1, 1), (2, 90)]
    assert rig.coord.on_loop == []


class _RecordingApp:
    shard_id = SHARD
    epoch = 1
    log_only = False

    def __init__(self) -> None:
        self.seq = 0

    def append_replicated(self, batch: Any) -> None:
        self.seq = batch[-1].seq


def test_a_frozen_replicator_applies_nothing_until_thawed() -> None:
    app = _RecordingApp()
    replicator = Replicator(app, _Primary(head=0, age_s=0))  # type: ignore[arg-type]
    wire = [r.to_wire() for r in sealed_records(5)]
    replicator.frozen = True  # a promotion read the seq its epoch follows
    assert replicator.apply_wire(wire) == 0 and app.seq == 0
    replicator.frozen = False
    assert replicator.apply_wire(wire) == 5
