"""Sealed WAL records for tests of the paths records travel (relay, peer link, replicator)."""

from __future__ import annotations

from uuid import uuid4

from application.wal.auth import ReplicationKeys
from application.wal.records import GENESIS, RecordedEvent, WalRecord


def sealed_records(
    count: int,
    *,
    first: int = 1,
    shard: str = "shard-1",
    prev: str = GENESIS,
    keys: ReplicationKeys | None = None,
) -> list[WalRecord]:
    """`count` one-event deposit records of `shard` with dense seqs from `first`, epoch 1,
    chained from `prev` (and signed with `keys`, if given)."""
    records: list[WalRecord] = []
    for seq in range(first, first + count):
        record = WalRecord.seal(
            shard_id=shard,
            epoch=1,
            seq=seq,
            command_type="Deposit",
            command_key=None,
            recorded_at_us=1_000 + seq,
            events=[RecordedEvent(uuid4(), seq, "domain.account:Account.Deposited", b"{}")],
            prev_checksum=prev,
            sign=None if keys is None else keys.sign_record,
        )
        records.append(record)
        prev = record.checksum
    return records
