"""The replay fast paths must produce exactly what the library paths produce."""

from __future__ import annotations

import json
import random
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.domain import (
    Aggregate,
    OriginatorIDError,
    OriginatorVersionError,
    Snapshot,
)

from application.recovery.replay import EventDecoder, RawRow, prefetch, replay_rows
from application.wal.records import (
    GENESIS,
    RecordedEvent,
    WALCorruptionError,
    _checksum_header,
    compute_checksum,
    decode_payload,
    encode_payload,
)
from application.wal.transcoding import make_mapper
from domain.engine import ShardEngine
from domain.order import Order
from domain.values import DEFAULT_INSTRUMENTS, Side
from tests.unit.shard_harness import SHARD, Harness, assert_same_object


def _trading_harness() -> Harness:
    h = Harness()
    h.fund("a", "b", "c")
    h.limit("a", "a1", Side.SELL, 5, 500_000)
    h.limit("a", "a2", Side.SELL, 3, 500_100)
    h.limit("b", "b1", Side.BUY, 7, 500_100)
    h.limit("c", "c1", Side.BUY, 2, 499_000)
    h.market("c", "c2", Side.SELL, 1)
    return h


def test_decoder_builds_the_events_the_mapper_builds() -> None:
    h = _trading_harness()
    mapper = make_mapper()
    decoder = EventDecoder(mapper)
    stored = [mapper.to_stored_event(e) for e in h.events]
    stored += [mapper.to_stored_event(Snapshot.take(a)) for a in h.engine.live_aggregates()]
    for s in stored * 2:  # the second round comes from the caches
        fast = decoder.decode(s.originator_id, s.originator_version, s.topic, s.state)
        assert_same_object(mapper.to_domain_event(s), fast)


def test_decoder_revives_nested_forms_like_the_object_hook() -> None:
    mapper = make_mapper()
    decoder = EventDecoder(mapper)
    value = {
        "a": [{"x": (Side.BUY, Decimal("1.50"))}, [uuid4(), (1, 2)]],
        "b": {"_type_": "not-a-form"},
        "c": {"_type_": 1, "other": 2},
    }
    encoded = mapper.transcoder.encode(value)
    assert repr(decoder._revive_dict(json.loads(encoded))) == repr(
        mapper.transcoder.decode(encoded)
    )


def test_checksum_header_is_the_json_header() -> None:
    rng = random.Random(7)
    alphabet = 'ab"\\\n\x00é☃\U0001f600-'
    for _ in range(500):
        shard = "".join(rng.choice(alphabet) for _ in range(rng.randrange(6)))
        key = rng.choice([None, "".join(rng.choice(alphabet) for _ in range(4))])
        fields = (shard, rng.randrange(5), rng.randrange(2**40), "Place", key, -rng.randrange(9))
        expected = json.dumps(list(fields), separators=(",", ":")).encode() + b"\n"
        assert _checksum_header(*fields, None) == expected
        prev = "".join(rng.choice(alphabet) for _ in range(rng.randrange(5)))
        chained = json.dumps([*fields, prev], separators=(",", ":")).encode() + b"\n"
        assert _checksum_header(*fields, prev) == chained


def test_payload_round_trip_and_truncation() -> None:
    events = [RecordedEvent(uuid4(), v, f"t:{v}", bytes([v]) * v) for v in range(4)]
    payload = encode_payload(events)
    assert decode_payload(payload) == tuple(events)
    for cut in (1, 5, len(payload) - 1):
        with pytest.raises(ValueError):
            decode_payload(payload[:cut])
    with pytest.raises(ValueError):
        decode_payload(payload + b"x")


def _rows(h: Harness) -> list[RawRow]:
    mapper = make_mapper()
    rows: list[RawRow] = []
    prev = GENESIS
    for seq, event in enumerate(h.events, 1):
        s = mapper.to_stored_event(event)
        payload = encode_payload([RecordedEvent(UUID(str(s.originator_id)), s.originator_version,
                                                s.topic, s.state)])
        checksum = compute_checksum(SHARD, 1, seq, "X", None, seq, payload, prev)
        rows.append((seq, 1, "X", None, seq, payload, checksum, prev, None))
        prev = checksum
    return rows


def test_replay_rows_rebuilds_the_engine_and_stops_at_corruption() -> None:
    h = _trading_harness()
    rows = _rows(h)
    decoder = EventDecoder(make_mapper())
    engine = ShardEngine(SHARD, DEFAULT_INSTRUMENTS)
    seen: list[int] = []
    pages = prefetch(iter([rows[:3], rows[3:]]))
    expected, events = replay_rows(SHARD, pages, decoder, engine.apply, expected=1,
                                   on_record=seen.append)
    assert (expected, events) == (len(rows) + 1, len(rows))
    assert seen == list(range(1, len(rows) + 1))
    assert engine.state_hash() == h.engine.state_hash()

    bad = list(rows)
    seq, epoch, ctype, key, at, payload, checksum, prev, mac = bad[4]
    bad[4] = (seq, epoch, ctype, key, at, payload[:-1] + b" ", checksum, prev, mac)
    seen.clear()
    with pytest.raises(WALCorruptionError) as caught:
        replay_rows(SHARD, prefetch(iter([bad])), decoder,
                    ShardEngine(SHARD, DEFAULT_INSTRUMENTS).apply, expected=1,
                    on_record=seen.append)
    assert caught.value.seq == 5 and caught.value.shard_id == SHARD
    assert seen == [1, 2, 3, 4]


def test_prefetch_hands_over_reader_errors_in_order() -> None:
    def pages() -> Any:
        yield [1]
        raise RuntimeError("boom")

    got = []
    with pytest.raises(RuntimeError, match="boom"):
        for page in prefetch(pages()):  # type: ignore[arg-type]
            got.append(page)
    assert got == [[1]]


def test_fast_order_creation_and_replay_match_the_library() -> None:
    h = _trading_harness()
    mapper = make_mapper()
    decoder = EventDecoder(mapper)
    library: dict[UUID, Any] = {}
    fast: dict[UUID, Any] = {}
    for event in h.events:
        s = mapper.to_stored_event(event)
        decoded = decoder.decode(s.originator_id, s.originator_version, s.topic, s.state)
        if isinstance(decoded, Aggregate.Created):
            library[decoded.originator_id] = Aggregate.Created.mutate(decoded, None)
            fast[decoded.originator_id] = decoded.mutate(None)
        else:
            Aggregate.Event.mutate(decoded, library[decoded.originator_id])
            fast[decoded.originator_id].replay(decoded)
        assert_same_object(fast[decoded.originator_id], library[decoded.originator_id])
    assert any(isinstance(a, Order) for a in fast.values())

    order = next(a for a in fast.values() if isinstance(a, Order))
    stale = next(e for e in h.events if e.originator_id == order.id and e.originator_version > 1)
    with pytest.raises(OriginatorVersionError):
        order.replay(stale)
    other = next(a for a in fast.values() if a.id != order.id)
    with pytest.raises(OriginatorIDError):
        other.replay(stale)


def test_decoder_reads_state_with_whitespace_like_the_mapper() -> None:
    h = _trading_harness()
    mapper = make_mapper()
    decoder = EventDecoder(mapper)
    s = mapper.to_stored_event(h.events[-1])
    for state in (b" " + s.state, s.state + b"\n ", b"\t" + s.state + b" "):
        padded = type(s)(s.originator_id, s.originator_version, s.topic, state)
        fast = decoder.decode(s.originator_id, s.originator_version, s.topic, state)
        assert_same_object(mapper.to_domain_event(padded), fast)
