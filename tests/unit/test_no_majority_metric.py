"""The metric behind the ReplicationNoMajority rule: 1 on the leader of a shard whose strict gate
refuses commands for want of a majority, 0 once one confirms again, and never 1 on a follower."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from application.replication.sync_gate import SyncGate, SyncPolicy
from infra.failover.state import Role
from infra.metrics.dr_metrics import NodeCollector

SHARD = "shard-1"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _node(gate: SyncGate, role: Role) -> Any:
    app = SimpleNamespace(seq=gate.standby_seq + 2, events_written=0)
    return SimpleNamespace(
        region=SimpleNamespace(name="primary"),
        controllers={},
        ack_checks={},
        confirmations={},
        archiving=None,
        projection=None,
        coordinator=None,
        writers={SHARD: SimpleNamespace(app=app)},
        role_of=lambda _shard: role,
        gates={SHARD: gate},
        replicators={},
    )


def _no_majority(node: Any) -> float:
    for family in NodeCollector(node).collect():
        if family.name == "replication_no_majority":
            (sample,) = family.samples
            assert sample.labels == {"shard": SHARD}
            return float(sample.value)
    raise AssertionError("replication_no_majority not exported")


def test_the_leader_reports_no_majority_until_a_follower_confirms() -> None:
    clock = Clock()
    gate = SyncGate(SHARD, policy=SyncPolicy.STRICT, timeout_s=0.5, replicas=3, clock=clock)
    node = _node(gate, Role.LEADER)
    assert _no_majority(node) == 0.0
    refused: list[bool] = []
    gate.release(1, refused.append)
    clock.now += 0.6
    gate.tick()
    assert refused == [False]
    assert _no_majority(node) == 1.0
    gate.standby_stored(1, "witness")  # one follower back: leader + witness are a majority
    assert _no_majority(node) == 0.0


def test_a_follower_never_reports_no_majority() -> None:
    clock = Clock()
    gate = SyncGate(SHARD, policy=SyncPolicy.STRICT, timeout_s=0.5, replicas=3, clock=clock)
    gate.release(1, lambda _ok: None)
    clock.now += 0.6
    gate.tick()  # refused while it led; deposed since
    assert gate.no_majority
    assert _no_majority(_node(gate, Role.STANDBY)) == 0.0
