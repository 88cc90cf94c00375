"""A standby gets each record twice (the peer link and the broker): the second copy is dropped
unverified, and an altered record is reported once and healed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from application.wal.records import WalRecord
from projections.replication.relay import encode_run
from projections.replication.replicator import Replicator
from tests.unit.wal_records import sealed_records

SHARD = "shard-1"


class _App:
    """The part of ShardApp a Replicator uses."""

    def __init__(self) -> None:
        self.shard_id = SHARD
        self.seq = 0
        self.stored: list[WalRecord] = []

    def append_replicated(self, records: Sequence[WalRecord]) -> int:
        assert records[0].seq == self.seq + 1
        self.stored.extend(records)
        self.seq = records[-1].seq
        return self.seq


class _Primary:
    def __init__(self, records: list[WalRecord]) -> None:
        self.records = records
        self.reads = 0

    def read_records(self, shard_id: str, after_seq: int, limit: int) -> list[WalRecord]:
        self.reads += 1
        return [r for r in self.records if r.seq > after_seq][:limit]


def _replicator(records: list[WalRecord]) -> tuple[Replicator, _App, _Primary, list[Any]]:
    app, primary, alerts = _App(), _Primary(records), []
    replicator = Replicator(
        app,  # type: ignore[arg-type]
        primary,  # type: ignore[arg-type]
        alert=lambda name, message, labels: alerts.append((name, labels)),
    )
    return replicator, app, primary, alerts


def test_the_second_copy_of_a_run_is_dropped_without_the_writer() -> None:
    records = sealed_records(6)
    replicator, app, primary, _ = _replicator(records)
    pushed = encode_run(records[:4], set())
    broker = [encode_run(records[:2], set()), encode_run(records[2:6], set())]
    assert replicator.apply_wire([pushed]) == 4
    left = replicator.unseen(broker)
    assert len(left) == 1  # only the run that brings seq 5 and 6
    assert replicator.apply_wire(left) == 6
    assert [r.seq for r in app.stored] == [1, 2, 3, 4, 5, 6]
    assert replicator.stats.duplicates == 2 + 2  # seq 1-2 by unseen(), 3-4 inside apply
    assert primary.reads == 0


def test_a_record_altered_on_both_paths_is_reported_once_and_healed() -> None:
    records = sealed_records(5)
    replicator, app, primary, alerts = _replicator(records)
    pushed = encode_run(records, {3})
    broker = encode_run(records, {3})
    assert replicator.apply_wire([pushed, broker]) == 5
    assert [r.seq for r in app.stored] == [1, 2, 3, 4, 5]
    assert app.stored[2] == records[2]  # the good copy, read from the primary's store
    assert replicator.stats.corrupt == 1 and replicator.stats.healed == 1
    assert alerts == [("WALRecordCorrupt", {"shard": SHARD, "seq": 3})]
    assert primary.reads == 1
    # a later altered copy of a stored record is a duplicate: dropped, never counted again
    assert replicator.apply_wire([encode_run(records[2:3], {3})]) == 5
    assert replicator.stats.corrupt == 1
