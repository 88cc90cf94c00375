"""The projector applies a delivered record only where it continues the shard's hash chain; a
signed record of another history is replaced by the region's own copy."""

from __future__ import annotations

from typing import Any

import pytest

from application.wal.auth import ReplicationKeys
from application.wal.chain import ChainBrokenError
from application.wal.records import WalRecord
from projections.read_models.projector import ReadModelProjector
from tests.unit.wal_records import sealed_records

SHARD = "shard-1"
KEYS = ReplicationKeys("k1", {"k1": b"0123456789abcdef-k1"})


class _Store:
    def __init__(self, records: list[WalRecord]) -> None:
        self.records = records

    def read_records(self, shard_id: str, after_seq: int, limit: int) -> list[WalRecord]:
        return [r for r in self.records if r.seq > after_seq][:limit]


# the anchor: the checksum of the record at the tracked seq (3), kept in the tracking row
def _projector(stored: list[WalRecord]) -> ReadModelProjector:
    return ReadModelProjector(None, _Store(stored), [])  # type: ignore[arg-type]


def test_a_record_of_another_history_is_replaced_by_the_stores_copy() -> None:
    real = sealed_records(5, keys=KEYS)
    other = sealed_records(1, first=4, prev=real[1].checksum, keys=KEYS)[0]
    delivered: dict[int, Any] = {4: other, 5: real[4]}
    projector = _projector(real)
    linked, behind = projector._chained(SHARD, 3, real[2].checksum, [other, real[4]], delivered)
    assert linked == [real[3], real[4]] and behind is None


def test_a_refused_record_the_store_lacks_stops_the_batch_there() -> None:
    real = sealed_records(5, keys=KEYS)
    other = sealed_records(1, first=4, prev=real[1].checksum, keys=KEYS)[0]
    projector = _projector(real[:3])
    linked, behind = projector._chained(SHARD, 3, real[2].checksum, [other], {4: other})
    assert linked == [] and behind is not None


def test_the_stores_own_broken_chain_is_corruption() -> None:
    real = sealed_records(3, keys=KEYS)
    stray = sealed_records(1, first=4, prev="f" * 64, keys=KEYS)[0]
    projector = _projector([*real, stray])
    with pytest.raises(ChainBrokenError):
        projector._chained(SHARD, 3, real[2].checksum, [stray], {})
