"""Checkpoints written before the columnar layout still restore the state they captured."""

from __future__ import annotations

import json
from typing import cast
from uuid import UUID

import pytest
from eventsourcing.domain import Snapshot

from application.checkpoints.checkpoint import is_columnar
from application.checkpoints.legacy import decode_snapshots
from application.recovery.replay import EventDecoder
from application.wal.records import RecordedEvent, encode_payload
from application.wal.transcoding import make_mapper
from domain.engine import ShardEngine
from domain.values import DEFAULT_INSTRUMENTS, Side
from tests.unit.shard_harness import SHARD, Harness


def _legacy_state(engine: ShardEngine) -> bytes:
    """Counters (length-prefixed JSON), then one snapshot per aggregate framed as a payload."""
    mapper = make_mapper()
    stored = [mapper.to_stored_event(Snapshot.take(a)) for a in engine.live_aggregates()]
    counters = json.dumps(engine.counters()).encode()
    payload = encode_payload(
        [
            RecordedEvent(cast(UUID, s.originator_id), s.originator_version, s.topic, s.state)
            for s in stored
        ]
    )
    return len(counters).to_bytes(4, "big") + counters + payload


def test_legacy_state_restores_the_same_engine() -> None:
    h = Harness()
    h.fund("a", "b")
    h.limit("a", "o1", Side.BUY, 3, 499_000)
    h.limit("b", "o2", Side.SELL, 2, 501_000)
    state = _legacy_state(h.engine)
    assert not is_columnar(state)
    aggregates, counters = decode_snapshots(state, EventDecoder(make_mapper()).decode)
    restored = ShardEngine.restore(SHARD, DEFAULT_INSTRUMENTS, aggregates, counters)
    assert restored.state_hash() == h.engine.state_hash()


def test_truncated_legacy_state_is_a_value_error() -> None:
    h = Harness()
    h.fund("a")
    state = _legacy_state(h.engine)
    with pytest.raises(ValueError, match="undecodable checkpoint"):
        decode_snapshots(state[:-3], EventDecoder(make_mapper()).decode)
