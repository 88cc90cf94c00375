"""What a node may show as confirmed: by each shard's role, without servers.

A leader shows what a majority of its replicas holds (its sync gate), and a read of more
waits for it; a follower whose rejoin check is done shows its applied seq; a fenced, promoting
or not-yet-rejoined replica shows nothing as confirmed (its tail may still be set aside).
"""

from __future__ import annotations

import asyncio

from application.read_confirmation import LocalReads
from application.replication.sync_gate import ReplicationMode, SyncGate, SyncPolicy
from infra.api.reads import ReadStamp, gate_confirms, refuses_unconfirmed
from infra.coordination.base import LeaderInfo
from infra.failover.state import Role
from infra.node.reads import NodeReads
from tests.unit.controller_harness import SHARD, Rig, make_rig
from tests.unit.fake_coordination import FakeCoordination


def _reads(rig: Rig) -> NodeReads:
    return NodeReads({SHARD: rig.controller})


def test_a_leader_confirms_what_a_majority_holds_and_waits_for_the_rest() -> None:
    rig = make_rig("primary", peers=("standby",), seq=10)
    rig.lead()
    gate = rig.controller.gate
    gate.timeout_s = 5.0
    gate.standby_stored(7, "standby")
    assert rig.controller.confirmed_seq() == 7
    reads = _reads(rig)

    async def scenario() -> None:
        assert await reads.confirm(SHARD, 7)
        assert not await reads.confirm(SHARD, 10, wait=False)  # an operator's view: no wait
        waiting = asyncio.ensure_future(reads.confirm(SHARD, 10))
        await asyncio.sleep(0.05)
        assert not waiting.done() and gate.reading == 1
        gate.standby_stored(10, "standby")  # from another thread in a node; here the loop's
        assert await asyncio.wait_for(waiting, 1.0) is True
        assert gate.reading == 0

    asyncio.run(scenario())
    assert reads.refuses_unconfirmed(SHARD)  # sync, strict


def test_a_read_waits_at_most_the_gate_timeout_and_leaves_nothing_behind() -> None:
    gate = SyncGate(SHARD, timeout_s=0.05)

    async def scenario() -> bool:
        return await gate_confirms(gate, 3)

    assert asyncio.run(scenario()) is False
    assert gate.reading == 0  # the wait was cancelled: no reader kept per refused read
    assert not gate.no_majority and not gate.degraded  # reads never raise the alarm


def test_a_deposed_leader_answers_its_waiting_reads_at_once() -> None:
    rig = make_rig("primary", peers=("standby",), seq=10)
    rig.lead()
    rig.controller.gate.timeout_s = 30.0
    reads = _reads(rig)

    async def scenario() -> tuple[bool, float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        waiting = asyncio.ensure_future(reads.confirm(SHARD, 10))
        await asyncio.sleep(0.02)
        rig.controller._fence("deposed")
        return await waiting, loop.time() - started

    confirmed, took = asyncio.run(scenario())
    assert confirmed is False and took < 1.0
    assert rig.controller.confirmed_seq() is None  # fenced: nothing shown is confirmed


def test_without_followers_a_leader_confirms_everything_committed() -> None:
    rig = make_rig("primary", peers=("standby",), seq=10)
    rig.controller.gate = SyncGate(SHARD, replicas=1)
    rig.lead()
    assert rig.controller.confirmed_seq() == 10


def test_a_follower_confirms_only_once_its_rejoin_check_is_done() -> None:
    """A leader paused across a failover wrote 9 and 10 after the fork at 8: until its rejoin
    sets them aside, nothing it shows is confirmed; after, its applied seq is."""
    rig = make_rig("primary", peers=("standby",), seq=10)
    rig.lead()
    rig.app.store.fork = 8
    reads = _reads(rig)
    seen: list[int | None] = []

    async def scenario() -> None:
        rig.coord.expire_session()
        other = FakeCoordination(rig.ensemble, "standby")
        rig.ensemble.epochs.setdefault(SHARD, []).append((rig.app.epoch + 1, 8))
        rig.ensemble.set_leader(
            SHARD, LeaderInfo("standby", "http://standby", rig.app.epoch + 1, 8), other.session
        )
        task = asyncio.ensure_future(rig.controller.deposed("expired"))
        await asyncio.sleep(0)
        seen.append(rig.controller.confirmed_seq())  # fenced, rejoin under way
        assert not await reads.confirm(SHARD, 10)  # no wait: only a leader's followers confirm
        await asyncio.wait_for(task, 5.0)
        seen.append(rig.controller.confirmed_seq())

    asyncio.run(scenario())
    assert rig.controller.role is Role.STANDBY
    assert seen == [None, 7]  # after the quarantine of 8..10


def test_a_standby_that_never_rejoined_shows_nothing_as_confirmed() -> None:
    rig = make_rig("standby", seq=5)
    rig.controller.role = Role.STANDBY
    assert rig.controller.confirmed_seq() is None
    assert not asyncio.run(_reads(rig).confirm(SHARD, 5))
    rig.controller.rejoin_checked = True
    assert rig.controller.confirmed_seq() == 5
    rig.controller.role = Role.PROMOTING
    assert rig.controller.confirmed_seq() is None


def test_only_sync_strict_refuses_unconfirmed_reads() -> None:
    assert refuses_unconfirmed(SyncGate(SHARD))
    assert not refuses_unconfirmed(SyncGate(SHARD, policy=SyncPolicy.DEGRADE))
    assert not refuses_unconfirmed(SyncGate(SHARD, mode=ReplicationMode.ASYNC))
    local = LocalReads()
    assert asyncio.run(local.confirm(SHARD, 10**9)) and not local.refuses_unconfirmed(SHARD)


def test_the_stamp_names_each_shard_read_and_whether_all_were_confirmed() -> None:
    assert ReadStamp().headers() == []
    one = ReadStamp()
    one.add("shard-1", 4, True)
    one.add("shard-1", 6, True)
    assert one.headers() == [(b"x-exdr-seq", b"6"), (b"x-exdr-state", b"confirmed")]
    two = ReadStamp()
    two.add("shard-1", 4, True)
    two.add("shard-2", 9, False)
    assert two.headers() == [
        (b"x-exdr-seq", b"shard-1=4, shard-2=9"),
        (b"x-exdr-state", b"unconfirmed"),
    ]


def test_the_api_description_lists_the_read_headers_on_reads_only() -> None:
    from infra.api import routes
    from infra.api.app import ExchangeAPI

    app = ExchangeAPI(title="t")
    app.include_router(routes.router)
    paths = app.openapi()["paths"]
    for path in ("/v1/book/{symbol}", "/v1/trades", "/v1/orders", "/v1/accounts/me"):
        headers = paths[path]["get"]["responses"]["200"]["headers"]
        assert set(headers) == {"X-Exdr-Seq", "X-Exdr-State"}, path
    assert "headers" not in paths["/v1/orders"]["post"]["responses"]["201"]
    assert "unconfirmed" in paths["/v1/trades"]["get"]["responses"]["503"]["description"]


def test_a_standby_that_started_leaderless_counts_once_its_store_agrees_with_the_history() -> None:
    """...or once it has rejoined: a forked tail (3..5) is set aside first, then it counts."""
    for fork, expected, quarantined in ((None, 5, []), (3, 2, [(3, 1), (4, 1), (5, 1)])):
        rig = make_rig("standby", seq=5)
        rig.controller.role = Role.STANDBY  # no leader when its node started: no rejoin
        rig.app.store.fork = fork
        leader = LeaderInfo("primary", "http://primary", 2, 6)
        asyncio.run(rig.controller.follow(leader))
        assert rig.controller.confirmed_seq() == expected, fork
        assert rig.app.store.quarantined == quarantined
