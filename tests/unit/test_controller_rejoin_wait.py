"""A fenced region waiting for a leader (`ShardController.become_standby`): it follows nobody
and never itself, and a deposed leader that may retake its shard counts the leaderless time
afresh each time a leader node was seen. Time is a fake clock: the wait's decisions read it.
No servers: the rig of tests/unit/controller_harness.py."""

from __future__ import annotations

import asyncio
import contextlib

from infra.coordination.base import LeaderInfo
from infra.failover.state import Role
from tests.unit.controller_harness import SHARD, Rig, make_rig
from tests.unit.fake_coordination import FakeClock, FakeCoordination

ROUND_S = 0.25  # a little more than one round of the wait (it looks every 0.2 s)


def _deposed(rig: Rig) -> FakeClock:
    """A leader whose session expired: its node is gone, its epoch is the last one."""
    clock = FakeClock()
    object.__setattr__(rig.controller.ctx, "clock", clock)
    rig.lead()
    rig.coord.expire_session()
    rig.controller._fence("deposed")
    rig.coord.calls.clear()
    return clock


def _node(rig: Rig, region: str) -> None:
    """A leader node of `region` at the current epoch (its own: a node not yet expired)."""
    owner = rig.coord if region == rig.coord.region else FakeCoordination(rig.ensemble, region)
    info = LeaderInfo(region, f"http://{region}", rig.app.epoch, rig.app.seq + 1)
    rig.ensemble.set_leader(SHARD, info, owner.session)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def test_a_fenced_region_follows_neither_nobody_nor_itself() -> None:
    rig = make_rig("primary", peers=("standby",), seq=10)
    _deposed(rig)

    async def run() -> None:
        waiting = asyncio.ensure_future(rig.controller.become_standby())
        await asyncio.sleep(3 * ROUND_S)  # nobody leads: it waits, it does not follow None
        assert rig.controller.role is Role.FENCED and rig.demoted == []
        _node(rig, "primary")  # its own node, not yet gone: not a leader to follow
        await asyncio.sleep(3 * ROUND_S)
        assert rig.controller.role is Role.FENCED and rig.demoted == []
        assert not waiting.done()
        _node(rig, "standby")
        await asyncio.wait_for(waiting, 5.0)

    asyncio.run(run())
    assert rig.controller.role is Role.STANDBY and rig.controller.leader_region == "standby"
    assert rig.demoted == [10] and rig.controller.rejoin_checked


def test_a_deposed_leader_counts_the_leaderless_time_afresh_after_a_node_was_seen() -> None:
    """Nobody, then a node (here its own, not yet expired) for a long time, then nobody: the
    retake waits `failover_after` from the moment the node went, not from the first look;
    and its reason says how long nobody led."""
    rig = make_rig("primary", peers=("standby",), seq=10)
    clock = _deposed(rig)
    after = rig.controller.ctx.failover.failover_after_s

    async def run() -> None:
        waiting = asyncio.ensure_future(rig.controller.become_standby(may_retake=True))
        try:
            await asyncio.sleep(ROUND_S)  # nobody leads since now
            _node(rig, "primary")
            clock.advance(10 * after)
            await asyncio.sleep(2 * ROUND_S)  # a node is there: no retake, the count restarts
            assert rig.controller.role is Role.FENCED
            rig.ensemble.set_leader(SHARD, None)
            await asyncio.sleep(3 * ROUND_S)  # nobody again, but not for `failover_after` yet
            assert rig.controller.role is Role.FENCED
            assert "take_leadership" not in rig.coord.calls
            clock.advance(after + 0.05)
            await asyncio.wait_for(waiting, 5.0)
        finally:
            await _cancel(waiting)

    asyncio.run(run())
    assert rig.controller.role is Role.LEADER
    reason = rig.controller.failovers[-1].reason
    assert f"nobody led for {after + 0.05:.2f}s" in reason, reason
