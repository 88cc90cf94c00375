"""Stored events must decode to exactly what was stored: enums stay enums, tuples stay tuples."""

from __future__ import annotations

from decimal import Decimal
from uuid import uuid4

from eventsourcing.persistence import DecimalAsStr, UUIDAsHex

from application.transcoding import TypedJSONTranscoder
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
