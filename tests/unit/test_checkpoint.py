"""The columnar checkpoint must restore exactly what a snapshot per aggregate restores."""

from __future__ import annotations

import json

import pytest
from eventsourcing.domain import Aggregate, Snapshot

from application.checkpoints.checkpoint import (
    CheckpointFormatError,
    decode_state,
    encode_state,
    is_columnar,
)
from application.recovery.replay import EventDecoder
from application.wal.transcoding import make_mapper, plain_form
from domain.engine import ShardEngine
from domain.values import DEFAULT_INSTRUMENTS, Side
from tests.unit.shard_harness import SHARD, Harness, assert_same_object


def _busy_harness() -> Harness:
    h = Harness()
    h.fund(*(f"t{i}" for i in range(6)))
    for i in range(80):  # enough rows for shared columns, partial fills on some
        owner = f"t{i % 6}"
        side = Side.SELL if i % 2 else Side.BUY
        price = 500_000 + (100 if side is Side.SELL else -100) * (i % 7 + 1)
        h.limit(owner, f"o{i}", side, 3 + i % 4, price)
    h.limit("t0", "sweep-buy", Side.BUY, 5, 500_300)
    h.limit("t1", "sweep-sell", Side.SELL, 4, 499_800)
    return h


def _via_snapshots(aggregates: list[Aggregate]) -> list[Aggregate]:
    mapper = make_mapper()
    decoder = EventDecoder(mapper)
    restored = []
    for aggregate in aggregates:
        s = mapper.to_stored_event(Snapshot.take(aggregate))
        snapshot = decoder.decode(s.originator_id, s.originator_version, s.topic, s.state)
        restored.append(snapshot.mutate(None))
    return restored


def _encode(engine: ShardEngine) -> bytes:
    transcoder = make_mapper().transcoder
    return encode_state(
        engine.live_aggregates(), engine.counters(), lambda v: plain_form(transcoder, v)
    )


def test_columnar_state_restores_what_snapshots_restore() -> None:
    h = _busy_harness()
    live = h.engine.live_aggregates()
    assert any(getattr(a, "fills", None) for a in live), "want a partially filled order"
    state = _encode(h.engine)
    assert is_columnar(state)
    columns = json.loads(state[4:])["groups"][-1]["columns"]
    assert {c[0] for c in columns} >= {"raw", "uuid", "decimal", "datetime", "shared", "forms"}

    aggregates, counters = decode_state(state, EventDecoder(make_mapper()).revive)
    assert counters == h.engine.counters()
    expected = _via_snapshots(live)
    assert len(aggregates) == len(expected)
    for restored, reference in zip(aggregates, expected, strict=True):
        assert_same_object(restored, reference)

    engine = ShardEngine.restore(SHARD, DEFAULT_INSTRUMENTS, aggregates, counters)
    engine.validate_internal_state()
    assert engine.state_hash() == h.engine.state_hash()


def test_restored_aggregates_are_independent() -> None:
    h = _busy_harness()
    aggregates, _ = decode_state(_encode(h.engine), EventDecoder(make_mapper()).revive)
    lists = [a._pending_events for a in aggregates]
    assert len({id(x) for x in lists}) == len(lists)


@pytest.mark.parametrize(
    "state",
    [b"CKP2{", b'CKP2{"counters":{},"groups":[{"topic":"domain.order:Order"}]}'],
)
def test_undecodable_state_is_a_format_error(state: bytes) -> None:
    with pytest.raises(CheckpointFormatError):
        decode_state(state, EventDecoder(make_mapper()).revive)
