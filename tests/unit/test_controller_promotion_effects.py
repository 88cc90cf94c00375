"""What a promotion leaves behind besides the role, and what a health round counts as a
healthy leader: lines the transition table did not pin (docs/mutation-report.md)."""

from __future__ import annotations

import asyncio

import httpx

from infra.failover.state import Role
from tests.unit.controller_harness import SHARD, make_rig
from tests.unit.test_controller_transitions import _gone, _other_leads, _rounds


def test_a_promotion_alerts_with_its_labels_and_starts_publishing() -> None:
    """The new leader publishes at once (the relay to the topic runs, not left stopped by the
    standby's fence), and the FailoverCompleted alert carries what the on-call needs to route
    and read it: the shard, the new epoch, the last seq of the old term, from where, to where."""
    rig = make_rig(seq=7)

    async def scenario() -> None:
        _gone(rig)
        await _rounds(rig)
        await asyncio.sleep(0.05)  # the relay's task gets to run
        assert rig.controller.role is Role.LEADER
        assert rig.controller.relay_task is not None
        assert rig.controller.relay.runs == 1  # type: ignore[attr-defined]
        assert not rig.controller.relay._stopping  # type: ignore[attr-defined]
        rig.controller.stop_relay()
        await asyncio.wait_for(rig.controller.relay_task, 1.0)

    asyncio.run(scenario())
    epoch, start = rig.ensemble.epochs[SHARD][-1]
    assert rig.alerts.labels["FailoverCompleted"] == {
        "shard": SHARD,
        "epoch": epoch,
        "seq": start - 1,
        "from": "primary",
        "to": "standby",
    }


def test_a_leader_that_does_not_answer_its_health_check_is_unhealthy() -> None:
    """No answer at all (refused, timed out) is the plainest failure: the failover timer
    starts, as for an error status."""
    rig = make_rig(seq=7)
    rig.controller.role = Role.STANDBY
    _other_leads(rig, 2, 8)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
            await rig.controller.check(client)

    asyncio.run(scenario())
    assert rig.controller.failing_since is not None
    assert rig.controller.role is Role.STANDBY  # one round: not yet failover_after
