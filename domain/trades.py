"""What one command produced, as handed to the application layer."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.account import Account
from domain.order import Order
from domain.values import Side


@dataclass(frozen=True, slots=True)
class Trade:
    """One execution between a resting maker and an incoming taker."""

    trade_id: int
    symbol: str
    price_ticks: int
    quantity_lots: int
    taker_side: Side
    maker_order_id: UUID
    taker_order_id: UUID
    maker_account: str
    taker_account: str
    maker_fee: Decimal
    taker_fee: Decimal


@dataclass(frozen=True, slots=True)
class CommandResult:
    """Aggregates to save in one transaction, plus what the caller asked about."""

    touched: tuple[Aggregate, ...]
    order: Order | None = None
    account: Account | None = None
    trades: tuple[Trade, ...] = ()
