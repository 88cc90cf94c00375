"""A slower follower's confirmations count for that follower.

With three replicas the gate's `standby_seq` is the majority's seq: the faster follower's
position. The slower follower confirms seqs below it; each still says something new about that
follower (`SyncGate.stored_on`), which a switchover to it waits for and the WAL archive holds at.
A confirmation is skipped only when its own region confirmed as much already; the trust checks
(MAC, epoch, the leader's own record, nothing beyond the leader's head) stay as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace
from typing import Any

import pytest

from application.replication.confirmation import ConfirmationCheck
from application.replication.sync_gate import SyncGate
from application.wal.auth import RejectedError, ReplicationKeys
from infra.failover.state import Role
from infra.node.confirmations import accept_standby_ack
from tests.unit.controller_harness import make_rig
from tests.unit.wal_records import sealed_records

SHARD = "shard-1"
KEYS = ReplicationKeys("k1", {"k1": b"slow-follower-test-key-012345678"})


def test_the_check_skips_only_what_the_same_region_confirmed_already() -> None:
    records = sealed_records(10, keys=KEYS)
    check = ConfirmationCheck(SHARD, KEYS)
    check.committed(records)
    confirmed = {"fast": 8, "slow": 3}

    def verdict(region: str, seq: int, epoch: int = 1, checksum: str | None = None) -> Any:
        ack = KEYS.confirmation(SHARD, region, epoch, seq, checksum or records[seq - 1].checksum)
        try:
            return check.verify(ack, head_seq=10, epoch=1, confirmed=confirmed.get)
        except RejectedError as exc:
            return exc.reason.value

    assert verdict("slow", 5) == 5  # below the majority's 8, new for the slower follower
    assert verdict("slow", 3) is None  # what it confirmed already
    assert verdict("fast", 6) is None  # the faster one confirmed 8: nothing new
    assert verdict("fast", 9) == 9
    assert verdict("third", 1) == 1  # a region never heard of: everything is new
    # the trust boundary is unchanged for the slower follower's seqs
    assert verdict("slow", 4, checksum=records[5].checksum) == "mismatch"
    assert verdict("slow", 4, epoch=0) is None  # an older epoch's proves nothing
    ahead = KEYS.confirmation(SHARD, "slow", 1, 11, "0" * 64)
    with pytest.raises(RejectedError):
        check.verify(ahead, head_seq=10, epoch=1, confirmed=confirmed.get)
    forged = {**KEYS.confirmation(SHARD, "slow", 1, 5, records[4].checksum), "seq": 6}
    with pytest.raises(RejectedError):
        check.verify(forged, head_seq=10, epoch=1, confirmed=confirmed.get)
    assert check.rejected == {"mismatch": 1, "ahead": 1, "bad_mac": 1}


def _leader(replicas: int) -> tuple[Any, SyncGate, list[Any]]:
    gate = SyncGate(SHARD, timeout_s=1.0, replicas=replicas)
    records = sealed_records(10, keys=KEYS)
    check = ConfirmationCheck(SHARD, KEYS)
    check.committed(records)
    controller = SimpleNamespace(
        shard_id=SHARD, role=Role.LEADER, app=SimpleNamespace(epoch=1, seq=10), gate=gate
    )
    node = SimpleNamespace(
        controllers={SHARD: controller},
        region=SimpleNamespace(name="east"),
        confirmations={},
        ack_checks={SHARD: check},
        rejection_alerts=None,
    )
    return node, gate, records


def test_the_slower_of_two_followers_advances_its_stored_on() -> None:
    node, gate, records = _leader(replicas=3)

    def confirm(region: str, seq: int) -> None:
        accept_standby_ack(
            node, KEYS.confirmation(SHARD, region, 1, seq, records[seq - 1].checksum)
        )

    confirm("west", 9)
    assert gate.standby_seq == 9 and gate.stored_on("west") == 9
    confirm("south", 4)
    confirm("south", 7)
    assert gate.stored_on("south") == 7  # below the majority's seq, still this follower's news
    assert gate.standby_seq == 9
    confirm("south", 10)
    assert gate.stored_on("south") == 10 and gate.standby_seq == 10
    confirm("south", 6)  # late and reordered: nothing moves back
    assert gate.stored_on("south") == 10
    assert node.confirmations == {"broker": 4}


def test_a_switchover_to_the_slower_follower_completes_once_it_confirmed() -> None:
    rig = make_rig("primary", peers=("standby", "south"), seq=10)
    rig.controller.gate = SyncGate(SHARD, timeout_s=1.0, replicas=3)
    records = sealed_records(10, keys=KEYS)
    check = ConfirmationCheck(SHARD, KEYS)
    check.committed(records)
    node = SimpleNamespace(
        controllers={SHARD: rig.controller},
        region=SimpleNamespace(name="primary"),
        confirmations={},
        ack_checks={SHARD: check},
        rejection_alerts=None,
    )

    async def scenario() -> dict[str, Any]:
        epoch = rig.lead()
        for region in ("standby", "south"):  # the faster one's confirmation arrives first
            ack = KEYS.confirmation(SHARD, region, epoch, 10, records[9].checksum)
            accept_standby_ack(node, ack)
        try:
            return await rig.controller.hand_over("south", timeout_s=0.2)
        finally:
            task = rig.controller.rejoin_task
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    done = asyncio.run(scenario())
    assert done["to_region"] == "south" and done["seq"] == 10
    assert rig.ensemble.handovers[SHARD] == "south"
