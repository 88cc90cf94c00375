"""Immutable read views of the shard's aggregates, safe to hand to another thread.

Views are taken on the writer thread (in a presenter or a query) and never change afterwards,
so HTTP handlers read them without touching aggregates the writer is mutating. Prices and
quantities are rebuilt from ticks and lots on the instrument's grid, money stays Decimal: every
JSON form carries them as exact strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

from domain.account import Account
from domain.commands import PlaceOrder
from domain.order import Order
from domain.orderbook import BookDepth
from domain.position import Position
from domain.values import Instrument, Liquidity, Side


def decimal_text(value: Decimal) -> str:
    """Fixed-point text of an exact Decimal (never exponent notation)."""
    return format(value, "f")


@dataclass(frozen=True, slots=True)
class OrderView:
    """An order as its owner sees it; `seq` is the WAL seq of the command the view comes from
    (the one that last changed the order, or for a retried placement the one that stored it)."""

    order_id: UUID
    shard: str
    account: str
    client_order_id: str
    symbol: str
    side: str
    order_type: str
    price: Decimal | None
    quantity: Decimal
    filled_quantity: Decimal
    status: str
    reject_reason: str | None
    time_in_force: str
    post_only: bool
    reduce_only: bool
    leverage: int
    reserved_margin: Decimal
    seq: int

    @classmethod
    def of(cls, order: Order, instrument: Instrument, shard: str, seq: int) -> OrderView:
        return cls(
            order_id=order.id,
            shard=shard,
            account=order.owner,
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=str(order.side),
            order_type=str(order.order_type),
            price=None
            if order.price_ticks is None
            else instrument.ticks_to_price(order.price_ticks),
            quantity=instrument.lots_to_quantity(order.quantity_lots),
            filled_quantity=instrument.lots_to_quantity(order.filled_lots),
            status=str(order.status),
            reject_reason=None if order.reject_reason is None else str(order.reject_reason),
            time_in_force=str(order.time_in_force),
            post_only=order.post_only,
            reduce_only=order.reduce_only,
            leverage=order.leverage,
            reserved_margin=order.reserved_margin,
            seq=seq,
        )

    @property
    def is_open(self) -> bool:
        return self.status in ("NEW", "PARTIALLY_FILLED")

    def to_json(self) -> dict[str, Any]:
        return {
            "order_id": str(self.order_id),
            "shard": self.shard,
            "account": self.account,
            "client_order_id": self.client_order_id,
            "symbol": self.symbol,
            "side": self.side,
            "type": self.order_type,
            "price": None if self.price is None else decimal_text(self.price),
            "quantity": decimal_text(self.quantity),
            "filled_quantity": decimal_text(self.filled_quantity),
            "status": self.status,
            "reject_reason": self.reject_reason,
            "time_in_force": self.time_in_force,
            "post_only": self.post_only,
            "reduce_only": self.reduce_only,
            "leverage": self.leverage,
            "reserved_margin": decimal_text(self.reserved_margin),
            "seq": self.seq,
        }


def same_order(order: Order, command: PlaceOrder) -> bool:
    """Whether a retried placement asks for exactly the order that was first placed."""
    return (
        order.owner == command.account
        and order.client_order_id == command.client_order_id
        and order.symbol == command.symbol
        and order.side == command.side
        and order.order_type == command.order_type
        and order.price_ticks == command.price_ticks
        and order.quantity_lots == command.quantity_lots
        and order.time_in_force == command.time_in_force
        and order.post_only == command.post_only
        and order.reduce_only == command.reduce_only
        and order.leverage == command.leverage
    )


@dataclass(frozen=True, slots=True)
class AccountView:
    """Collateral of one account on one shard."""

    account: str
    shard: str
    balance: Decimal
    order_margin: Decimal
    position_margin: Decimal
    available: Decimal

    @classmethod
    def of(cls, account: Account, shard: str) -> AccountView:
        return cls(
            account=account.owner,
            shard=shard,
            balance=account.balance,
            order_margin=account.order_margin,
            position_margin=account.position_margin,
            available=account.available,
        )

    @classmethod
    def empty(cls, owner: str, shard: str) -> AccountView:
        zero = Decimal(0)
        return cls(owner, shard, zero, zero, zero, zero)

    def to_json(self) -> dict[str, Any]:
        return {
            "shard": self.shard,
            "balance": decimal_text(self.balance),
            "order_margin": decimal_text(self.order_margin),
            "position_margin": decimal_text(self.position_margin),
            "reserved_margin": decimal_text(self.order_margin + self.position_margin),
            "available": decimal_text(self.available),
        }


@dataclass(frozen=True, slots=True)
class PositionView:
    """Exposure in one symbol; `entry_cost` is exact, `entry_price` its rounded average."""

    account: str
    shard: str
    symbol: str
    size: Decimal
    entry_cost: Decimal
    entry_price: Decimal | None
    leverage: int
    margin: Decimal
    realized_pnl: Decimal

    @classmethod
    def of(cls, position: Position, instrument: Instrument, shard: str) -> PositionView:
        entry = position.entry_price
        return cls(
            account=position.owner,
            shard=shard,
            symbol=position.symbol,
            size=instrument.lots_to_quantity(position.size_lots),
            entry_cost=instrument.notional(position.cost_ticklots, 1),
            entry_price=None if entry is None else entry.quantize(instrument.tick_size / 10**8),
            leverage=position.leverage,
            margin=position.margin,
            realized_pnl=position.realized_pnl,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "shard": self.shard,
            "symbol": self.symbol,
            "size": decimal_text(self.size),
            "entry_cost": decimal_text(self.entry_cost),
            "entry_price": None if self.entry_price is None else decimal_text(self.entry_price),
            "leverage": self.leverage,
            "margin": decimal_text(self.margin),
            "realized_pnl": decimal_text(self.realized_pnl),
        }


@dataclass(frozen=True, slots=True)
class FillView:
    """One execution from one account's side: the trade as that account sees it."""

    trade_id: int
    shard: str
    account: str
    symbol: str
    order_id: UUID
    side: Side
    price: Decimal
    quantity: Decimal
    fee: Decimal
    liquidity: Liquidity
    seq: int

    def to_json(self) -> dict[str, Any]:
        return {
            "trade_id": self.trade_id,
            "shard": self.shard,
            "symbol": self.symbol,
            "order_id": str(self.order_id),
            "side": str(self.side),
            "price": decimal_text(self.price),
            "quantity": decimal_text(self.quantity),
            "fee": decimal_text(self.fee),
            "liquidity": str(self.liquidity),
            "seq": self.seq,
        }


def book_json(depth: BookDepth, instrument: Instrument, shard: str, seq: int) -> dict[str, Any]:
    """Aggregated levels with prices and quantities as exact strings."""

    def levels(rows: tuple[tuple[int, int, int], ...]) -> list[dict[str, Any]]:
        return [
            {
                "price": decimal_text(instrument.ticks_to_price(price)),
                "quantity": decimal_text(instrument.lots_to_quantity(lots)),
                "orders": count,
            }
            for price, lots, count in rows
        ]

    return {
        "symbol": depth.symbol,
        "shard": shard,
        "seq": seq,
        "bids": levels(depth.bids),
        "asks": levels(depth.asks),
    }
