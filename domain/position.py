"""Position aggregate: signed size and exact entry cost of one account in one symbol.

Entry cost is an integer sum of price_ticks*lots. A partial reduce removes cost*closed//size,
so cost is conserved and, once everyone is flat, realized PnL over all accounts sums to zero.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.base import ExchangeAggregate, uuid5_fast

_POSITION_NAMESPACE = uuid5(NAMESPACE_URL, "exchange-dr:position")


def apply_trade(size_lots: int, cost_ticklots: int, delta_lots: int,
                price_ticks: int) -> tuple[int, int, int]:
    """New (size, cost, realized tick-lots) after a signed trade; pure so the engine can plan."""
    if size_lots == 0 or (size_lots > 0) == (delta_lots > 0):
        return size_lots + delta_lots, cost_ticklots + price_ticks * delta_lots, 0
    held = abs(size_lots)
    closed = min(abs(delta_lots), held)
    removed = abs(cost_ticklots) * closed // held
    if cost_ticklots < 0:
        removed = -removed
    closed_delta = closed if delta_lots > 0 else -closed
    realized = -price_ticks * closed_delta - removed
    size_lots += closed_delta
    cost_ticklots -= removed
    opened = delta_lots - closed_delta
    return size_lots + opened, cost_ticklots + price_ticks * opened, realized


class Position(ExchangeAggregate):
    """Exposure of one account in one symbol."""

    class Opened(Aggregate.Created):
        """First trade of the account in the symbol."""

        account_id: UUID
        owner: str
        symbol: str
        tick_size: Decimal
        leverage: int

    class Traded(Aggregate.Event):
        """New size, cost and margin after one command's executions for this position (trade_id
        is the last of them); realized PnL of those executions."""

        trade_id: int
        size_lots: int
        cost_ticklots: int
        leverage: int
        margin: Decimal
        realized_pnl: Decimal

        def apply(self, aggregate: Any) -> None:
            position: Position = aggregate
            position.size_lots = self.size_lots
            position.cost_ticklots = self.cost_ticklots
            position.leverage = self.leverage
            position.margin = self.margin
            position.realized_pnl += self.realized_pnl

    def __init__(self, account_id: UUID, owner: str, symbol: str, tick_size: Decimal,
                 leverage: int) -> None:
        self.account_id = account_id
        self.owner = owner
        self.symbol = symbol
        self.tick_size = tick_size
        self.leverage = leverage
        self.size_lots = 0
        self.cost_ticklots = 0
        self.margin = Decimal(0)
        self.realized_pnl = Decimal(0)

    @staticmethod
    def create_id(account_id: UUID, symbol: str) -> UUID:
        """Deterministic id: one position per account and symbol."""
        return uuid5_fast(_POSITION_NAMESPACE, f"{account_id.hex}/{symbol}")

    @classmethod
    def open(cls, account_id: UUID, owner: str, symbol: str, tick_size: Decimal,
             leverage: int) -> Position:
        """Create the position on the account's first trade in the symbol."""
        return cls._create(cls.Opened, id=cls.create_id(account_id, symbol),
                           account_id=account_id, owner=owner, symbol=symbol,
                           tick_size=tick_size, leverage=leverage)

    @property
    def is_flat(self) -> bool:
        """No exposure."""
        return self.size_lots == 0

    @property
    def entry_price(self) -> Decimal | None:
        """Average entry price, derived from the exact cost; None when flat."""
        if self.size_lots == 0:
            return None
        return Decimal(self.cost_ticklots) / Decimal(self.size_lots) * self.tick_size

    def trade(self, trade_id: int, size_lots: int, cost_ticklots: int, leverage: int,
              margin: Decimal, realized_pnl: Decimal) -> None:
        """Record the engine-computed result of one command's executions."""
        self._record(self.Traded, trade_id=trade_id, size_lots=size_lots,
                           cost_ticklots=cost_ticklots, leverage=leverage, margin=margin,
                           realized_pnl=realized_pnl)

    def canonical(self) -> str:
        """Stable text of the position for state hashes."""
        return (
            f"position {self.id} {self.version} {self.owner} {self.symbol} {self.size_lots}"
            f" {self.cost_ticklots} {self.leverage} {self.margin.normalize()}"
            f" {self.realized_pnl.normalize()}"
        )
