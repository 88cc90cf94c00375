"""Test harness: an engine that keeps every event it produced, for replay checks."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

from eventsourcing.domain import Aggregate

from domain.commands import Command, Deposit, PlaceOrder
from domain.engine import CommandResult, ShardEngine
from domain.values import DEFAULT_INSTRUMENTS, OrderType, Side, TimeInForce

SHARD = "shard-t"
BTC = "BTCUSDT"


def assert_same_object(a: Any, b: Any) -> None:
    """Same class, same attributes in the same order, equal reprs and types of every value."""
    assert type(a) is type(b)
    assert list(vars(a)) == list(vars(b))
    assert repr(vars(a)) == repr(vars(b))
    assert [type(v) for v in vars(a).values()] == [type(v) for v in vars(b).values()]


class Harness:
    """Runs commands like the application would: execute, then collect events."""

    def __init__(self) -> None:
        self.engine = ShardEngine(SHARD, DEFAULT_INSTRUMENTS)
        self.events: list[Aggregate.Event] = []
        self.net_deposits = Decimal(0)

    def run(self, command: Command) -> CommandResult:
        result = self.engine.execute(command)
        for aggregate in result.touched:
            events = aggregate.collect_events()
            assert events, f"{aggregate!r} touched without events"
            self.events.extend(events)  # type: ignore[arg-type]
        if isinstance(command, Deposit):
            self.net_deposits += command.amount
        elif type(command).__name__ == "Withdraw":
            self.net_deposits -= command.amount  # type: ignore[union-attr]
        return result

    def fund(self, *owners: str, amount: str = "1000000") -> None:
        for owner in owners:
            self.run(Deposit(owner, Decimal(amount)))

    def limit(self, owner: str, cid: str, side: Side, lots: int, price: int,
              tif: TimeInForce = TimeInForce.GTC, **flags: object) -> CommandResult:
        return self.run(PlaceOrder(owner, cid, BTC, side, OrderType.LIMIT, lots, price, tif,
                                   **flags))  # type: ignore[arg-type]

    def market(self, owner: str, cid: str, side: Side, lots: int,
               **flags: object) -> CommandResult:
        return self.run(PlaceOrder(owner, cid, BTC, side, OrderType.MARKET, lots,
                                   **flags))  # type: ignore[arg-type]

    def replayed(self) -> ShardEngine:
        fresh = ShardEngine(SHARD, DEFAULT_INSTRUMENTS)
        for event in self.events:
            fresh.apply(event)
        return fresh

    def restored(self) -> ShardEngine:
        return ShardEngine.restore(SHARD, DEFAULT_INSTRUMENTS,
                                   copy.deepcopy(self.engine.live_aggregates()),
                                   self.engine.counters())

    def check(self) -> None:
        """Internal state valid, and replay and restore both reproduce it exactly."""
        self.engine.validate_internal_state()
        expected = self.engine.state_hash()
        replayed = self.replayed()
        replayed.validate_internal_state()
        assert replayed.state_hash() == expected
        restored = self.restored()
        restored.validate_internal_state()
        assert restored.state_hash() == expected

    def total_balance(self) -> Decimal:
        return sum((a.balance for a in self.engine.accounts()), Decimal(0))

    def total_realized(self) -> Decimal:
        return sum((p.realized_pnl for p in self.engine.positions()), Decimal(0))
