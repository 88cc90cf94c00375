"""What a deposed epoch sends is not taken: a leader ignores confirmations of an older epoch,
a standby ignores records of an epoch the history says does not own their seq, and a rejoining
region sets aside what it wrote after the fork point."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from application.replication.confirmation import ConfirmationCheck
from application.replication.sync_gate import SyncGate
from application.shard.app import ShardApp
from application.wal.auth import ReplicationKeys
from application.wal.records import WalRecord
from infra.failover.state import Role
from infra.node.confirmations import accept_standby_ack
from projections.replication.replicator import Replicator
from tests.unit.wal_records import sealed_records

SHARD = "shard-1"


KEYS = ReplicationKeys("k1", {"k1": b"stale-epochs-test-key-0123456789"})


def _leader_node(epoch: int) -> tuple[Any, SyncGate, list[WalRecord]]:
    gate = SyncGate(SHARD, timeout_s=1.0)
    records = sealed_records(5, keys=KEYS)
    check = ConfirmationCheck(SHARD, KEYS)
    check.committed(records)
    controller = SimpleNamespace(
        shard_id=SHARD, role=Role.LEADER, app=SimpleNamespace(epoch=epoch, seq=5), gate=gate
    )
    node = SimpleNamespace(
        controllers={SHARD: controller},
        region=SimpleNamespace(name="east"),
        confirmations={},
        ack_checks={SHARD: check},
        rejection_alerts=None,
    )
    return node, gate, records


def test_a_confirmation_of_an_older_epoch_acknowledges_nothing() -> None:
    node, gate, records = _leader_node(epoch=3)
    got: list[bool] = []
    gate.release(5, got.append)
    checksum = records[4].checksum
    accept_standby_ack(node, KEYS.confirmation(SHARD, "west", 2, 5, checksum))
    assert got == [] and gate.standby_seq == 0 and gate.waiting == 1
    accept_standby_ack(node, KEYS.confirmation(SHARD, "west", 3, 5, checksum))
    assert got == [True] and gate.standby_seq == 5


class StandbyApp:
    """A standby's hot state: the records appended, in order."""

    shard_id = SHARD

    def __init__(self) -> None:
        self.seq = 0
        self.appended: list[WalRecord] = []

    def append_replicated(self, records: list[WalRecord]) -> int:
        self.appended.extend(records)
        self.seq = records[-1].seq
        return self.seq


class EmptyPrimary:
    def read_records(self, *args: Any, **kwargs: Any) -> list[WalRecord]:
        return []


def test_records_of_a_deposed_epoch_are_not_replicated() -> None:
    app = StandbyApp()
    replicator = Replicator(cast(ShardApp, app), cast(Any, EmptyPrimary()))
    # epoch 1 (the sealed records') owns nothing any more from seq 1: a deposed writer's tail
    replicator.accept = lambda record: record.epoch == 2
    deposed = [record.to_wire() for record in sealed_records(3)]
    assert replicator.apply_wire(deposed) == 0
    assert app.appended == [] and replicator.stats.stale == 3
    replicator.accept = lambda record: record.epoch == 1
    assert replicator.apply_wire(deposed) == 3
    assert [r.seq for r in app.appended] == [1, 2, 3]


class DivergedStore:
    """A deposed leader's WAL: seqs 1..10 of epoch 2, while epoch 3 took over at seq 7."""

    def __init__(self) -> None:
        self.epochs = {seq: 2 for seq in range(1, 11)}
        self.quarantined: list[tuple[int, str]] = []

    def first_divergent_seq(self, shard_id: str, history: list[tuple[int, int]]) -> int | None:
        owners = {}
        for index, (epoch, start) in enumerate(history):
            end = history[index + 1][1] if index + 1 < len(history) else 2**62
            owners.update({seq: epoch for seq in self.epochs if start <= seq < end})
        forked = [seq for seq, epoch in self.epochs.items() if owners.get(seq, epoch) != epoch]
        return min(forked, default=None)

    def quarantine_from(self, shard_id: str, fork_seq: int, reason: str) -> int:
        moved = [seq for seq in self.epochs if seq >= fork_seq]
        for seq in moved:
            del self.epochs[seq]
        self.quarantined.append((fork_seq, reason))
        return len(moved)


class RejoiningApp:
    def __init__(self, store: DivergedStore) -> None:
        self.store = store
        self.needs_recovery = False
        self.recovered = 0

    def recover(self) -> None:
        self.needs_recovery = False
        self.recovered += 1


def _rejoining(history: list[tuple[int, int]]) -> Any:
    from infra.failover.controller import ShardController

    store = DivergedStore()
    controller = SimpleNamespace(
        shard_id=SHARD,
        history=[],
        coord=SimpleNamespace(epochs=lambda shard_id: list(history)),
        app=RejoiningApp(store),
        region="east",
        ctx=SimpleNamespace(alerts=SimpleNamespace(send=lambda *args, **kwargs: None)),
    )
    return ShardController.rejoin, controller, store


def test_rejoin_sets_aside_what_was_written_after_the_fork() -> None:
    rejoin, controller, store = _rejoining([(2, 1), (3, 7)])
    assert rejoin(controller) == 4
    assert sorted(store.epochs) == [1, 2, 3, 4, 5, 6]
    assert [fork for fork, _ in store.quarantined] == [7]
    assert controller.app.recovered == 1  # the hot state is rebuilt without them


def test_rejoin_keeps_a_history_that_agrees() -> None:
    rejoin, controller, store = _rejoining([(2, 1)])
    assert rejoin(controller) == 0
    assert len(store.epochs) == 10 and store.quarantined == []
