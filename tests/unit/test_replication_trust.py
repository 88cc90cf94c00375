"""What reaches a standby unverified changes nothing: not the applied seq, the lag or the gaps.

Anyone who can write to the broker can send a message; only a record that carries a valid MAC
of the regions' key and continues the shard's hash chain may move the standby's bookkeeping.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from application.wal.records import WalRecord
from projections.replication.replicator import Replicator
from tests.unit.wal_records import sealed_records

SHARD = "shard-1"


class _App:
    def __init__(self) -> None:
        self.shard_id = SHARD
        self.seq = 0
        self.stored: list[WalRecord] = []

    def append_replicated(self, records: Sequence[WalRecord]) -> int:
        self.stored.extend(records)
        self.seq = records[-1].seq
        return self.seq


class _Primary:
    def __init__(self, records: list[WalRecord]) -> None:
        self.records = records

    def read_records(self, shard_id: str, after_seq: int, limit: int) -> list[WalRecord]:
        return [r for r in self.records if r.seq > after_seq][:limit]

    def head(self, shard_id: str) -> Any:
        class _Head:
            seq = self.records[-1].seq if self.records else 0

        return _Head()


def _garbage(seq: int) -> bytes:
    return orjson.dumps(
        {
            "shard_id": SHARD,
            "epoch": 10**6,
            "seq": seq,
            "command_type": "Deposit",
            "command_key": None,
            "recorded_at_us": 1,
            "payload": "AAAAAA==",
            "checksum": "0" * 64,
        }
    )


def test_a_garbage_message_with_a_huge_seq_moves_no_bookkeeping() -> None:
    records = sealed_records(3)
    app = _App()
    replicator = Replicator(app, _Primary(records))  # type: ignore[arg-type]
    replicator.apply_wire([orjson.dumps(r.to_wire()) for r in records])
    assert app.seq == 3
    replicator.apply_wire([_garbage(10**12)])
    assert app.seq == 3
    assert replicator.stats.last_seen_seq == 3
    assert replicator.lag_records() == 0
    assert replicator.stats.rejected == {"checksum": 1}
