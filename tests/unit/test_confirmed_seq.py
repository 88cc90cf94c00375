"""What a node takes as confirmed (the read models stop there): nothing a failover can take back."""

from __future__ import annotations

import asyncio

from application.replication.sync_gate import SyncGate
from infra.coordination.base import LeaderInfo
from infra.failover.state import Role
from tests.unit.controller_harness import SHARD, make_rig


def test_a_leader_counts_what_a_majority_holds_not_what_it_wrote() -> None:
    rig = make_rig("primary", peers=("standby",), seq=10)
    rig.lead()
    rig.controller.gate.standby_stored(7, "standby")
    assert rig.app.seq == 10
    assert rig.controller.confirmed_seq() == 7
    rig.controller.role = Role.HANDING_OVER  # still the leader while it drains
    assert rig.controller.confirmed_seq() == 7


def test_a_shard_without_followers_is_confirmed_by_its_own_commit() -> None:
    rig = make_rig("primary", seq=10)
    rig.controller.gate = SyncGate(SHARD, replicas=1)
    rig.lead()
    assert rig.controller.confirmed_seq() == 10


def test_a_follower_counts_its_records_only_once_its_rejoin_check_is_done() -> None:
    rig = make_rig(seq=12)
    rig.controller.role = Role.STANDBY  # standing by at start-up: nothing checked yet
    assert rig.controller.confirmed_seq() is None
    rig.ensemble.set_leader(SHARD, LeaderInfo("primary", "http://primary", 2, 1))
    rig.ensemble.epochs[SHARD] = [(1, 1), (2, 11)]
    rig.app.store.fork = 11  # its seq 11-12 were written after the fork point

    async def rejoin() -> None:
        rig.controller.role = Role.FENCED
        await rig.controller.become_standby()

    asyncio.run(rejoin())
    assert rig.app.seq == 10  # quarantined first
    assert rig.controller.confirmed_seq() == 10


def test_a_fenced_or_promoting_node_confirms_nothing() -> None:
    rig = make_rig("primary", peers=("standby",), seq=10)
    rig.lead()
    rig.controller.gate.standby_stored(10, "standby")
    rig.controller._fence("deposed")
    assert rig.controller.confirmed_seq() is None
    rig.controller.role = Role.PROMOTING
    assert rig.controller.confirmed_seq() is None
