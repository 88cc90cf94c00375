"""The steady-state flow of the history benchmark keeps what is open bounded by its setting,
however long it runs: the open orders of a shard fed by it stop growing."""

from __future__ import annotations

import itertools

import pytest

from domain.commands import CancelOrder, PlaceOrder
from domain.engine import ShardEngine
from domain.errors import DomainError
from domain.values import DEFAULT_INSTRUMENTS, OrderType, TimeInForce
from infra.bench.flow import steady_commands

SHARD = "shard-1"
INSTRUMENTS = [i for i in DEFAULT_INSTRUMENTS if i.symbol in ("BTCUSDT", "ETHUSDT")]


def _open_after(engine: ShardEngine, flow: object, steps: int) -> tuple[int, int]:
    refused = 0
    for command in itertools.islice(flow, steps):  # type: ignore[call-overload]
        try:
            engine.execute(command)
        except DomainError:
            refused += 1
    return len(engine.open_orders()), refused


def test_open_orders_stay_bounded_as_the_history_grows() -> None:
    engine = ShardEngine(SHARD, INSTRUMENTS)
    flow = steady_commands(SHARD, INSTRUMENTS, seed=3, resting=300, accounts=20)
    early, _ = _open_after(engine, flow, 6_000)
    late, refused = _open_after(engine, flow, 24_000)
    assert 0 < early <= 300
    assert 0 < late <= 300
    assert refused < 24_000 // 4  # most commands are stored: the history really grows


def test_flow_is_seeded_and_its_orders_mix_quotes_cancels_and_takers() -> None:
    first = list(steady_commands(SHARD, INSTRUMENTS, 2000, seed=5))
    again = list(steady_commands(SHARD, INSTRUMENTS, 2000, seed=5))
    assert first == again
    assert first != list(steady_commands(SHARD, INSTRUMENTS, 2000, seed=6))
    places = [c for c in first if isinstance(c, PlaceOrder)]
    cancels = [c for c in first if isinstance(c, CancelOrder)]
    takers = [
        c for c in places if c.time_in_force is TimeInForce.IOC or c.order_type is OrderType.MARKET
    ]
    assert len(cancels) > len(first) // 4
    assert len(takers) > len(first) // 10
    assert all(isinstance(c.quantity_lots, int) for c in places)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="resting"):
        next(steady_commands(SHARD, INSTRUMENTS, 10, resting=0))
