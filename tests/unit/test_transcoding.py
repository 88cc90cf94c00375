"""Stored events must decode to exactly what was stored: enums stay enums, tuples stay tuples."""

from __future__ import annotations

from decimal import Decimal
from uuid import uuid4

from eventsourcing.persistence import DecimalAsStr, UUIDAsHex

from application.wal.transcoding import TypedJSONTranscoder
from domain.values import Liquidity, Side


def test_enums_and_tuples_round_trip() -> None:
    transcoder = TypedJSONTranscoder()
    transcoder.register(DecimalAsStr())
    transcoder.register(UUIDAsHex())
    value = {
        "side": Side.SELL,
        "fills": [(1, 500_000, 3, Decimal("0.015"), Liquidity.MAKER)],
        "id": uuid4(),
        "nested": {"pair": (Side.BUY, "x")},
    }
    decoded = transcoder.decode(transcoder.encode(value))
    assert decoded == value
    assert decoded["side"] is Side.SELL
    assert type(decoded["fills"][0]) is tuple
    assert decoded["fills"][0][4] is Liquidity.MAKER


def test_fast_path_writes_what_the_library_path_writes() -> None:
    from datetime import UTC, datetime

    from eventsourcing.persistence import DatetimeAsISO

    from application.wal.transcoding import _box

    transcoder = TypedJSONTranscoder()
    for transcoding in (DecimalAsStr(), UUIDAsHex(), DatetimeAsISO()):
        transcoder.register(transcoding)
    value = {
        "at": datetime(2026, 11, 25, 12, 0, tzinfo=UTC),
        "side": Side.BUY,
        "fills": [(2, 1, 1, Decimal("-0.5"), Liquidity.TAKER)],
        "ids": [uuid4(), None, True, 3],
    }
    library = super(TypedJSONTranscoder, transcoder).encode(_box(value))
    assert transcoder.encode(value) == library
    assert transcoder.decode(library) == value
