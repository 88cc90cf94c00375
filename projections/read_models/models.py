"""Read models: what the WAL says about orders, trades, positions and balances, as tables.

Created only by the Alembic migration 0003. Prices and sizes are kept both as the engine's
integers (ticks, lots, tick-lots) and as exact NUMERIC values on the instrument's grid; money
is NUMERIC(38, 8) (every amount is a multiple of 1e-8). `seq` is the WAL seq that last changed
a row, so a reader can tell how fresh it is.
"""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

from sqlalchemy import BigInteger, Index, Numeric, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

MONEY = Numeric(38, 8)
AMOUNT = Numeric(38, 12)
"""Prices and quantities: tick and lot sizes go down to 1e-3 and below, values stay exact."""


class ReadModelBase(DeclarativeBase):
    """Declarative base of the read-model tables (kept apart from the event store's)."""


class OrderRow(ReadModelBase):
    """One order as it stands after the last WAL record that touched it."""

    __tablename__ = "rm_orders"
    __table_args__ = (
        # listings: an account's orders on a shard in placement order, all or by status (0008)
        Index("rm_orders_account_placed_idx", "shard", "account", "placed_seq"),
        Index("rm_orders_account_status_placed_idx", "shard", "account", "status", "placed_seq"),
        Index("rm_orders_client_order_idx", "account", "client_order_id"),
    )

    order_id: Mapped[UUID] = mapped_column(primary_key=True)
    shard: Mapped[str] = mapped_column(String)
    account: Mapped[str] = mapped_column(String)
    client_order_id: Mapped[str] = mapped_column(String)
    symbol: Mapped[str] = mapped_column(String)
    side: Mapped[str] = mapped_column(String(4))
    order_type: Mapped[str] = mapped_column(String(8))
    time_in_force: Mapped[str] = mapped_column(String(3))
    post_only: Mapped[bool]
    reduce_only: Mapped[bool]
    leverage: Mapped[int]
    price_ticks: Mapped[int | None] = mapped_column(BigInteger)
    quantity_lots: Mapped[int] = mapped_column(BigInteger)
    filled_lots: Mapped[int] = mapped_column(BigInteger)
    price: Mapped[Decimal | None] = mapped_column(AMOUNT)
    quantity: Mapped[Decimal] = mapped_column(AMOUNT)
    filled_quantity: Mapped[Decimal] = mapped_column(AMOUNT)
    reserved_margin: Mapped[Decimal] = mapped_column(MONEY)
    fees: Mapped[Decimal] = mapped_column(MONEY)
    status: Mapped[str] = mapped_column(String(16))
    reject_reason: Mapped[str | None] = mapped_column(String(32))
    placed_seq: Mapped[int] = mapped_column(BigInteger)
    seq: Mapped[int] = mapped_column(BigInteger)


class TradeRow(ReadModelBase):
    """One execution; trade ids are dense per shard."""

    __tablename__ = "rm_trades"
    __table_args__ = (
        # listings: an account's fills on a shard in trade order, one index per side (0008)
        Index("rm_trades_maker_listing_idx", "shard", "maker_account", "trade_id"),
        Index("rm_trades_taker_listing_idx", "shard", "taker_account", "trade_id"),
    )

    shard: Mapped[str] = mapped_column(String, primary_key=True)
    trade_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    symbol: Mapped[str] = mapped_column(String)
    price_ticks: Mapped[int] = mapped_column(BigInteger)
    quantity_lots: Mapped[int] = mapped_column(BigInteger)
    price: Mapped[Decimal] = mapped_column(AMOUNT)
    quantity: Mapped[Decimal] = mapped_column(AMOUNT)
    taker_side: Mapped[str] = mapped_column(String(4))
    maker_order_id: Mapped[UUID]
    taker_order_id: Mapped[UUID]
    maker_account: Mapped[str] = mapped_column(String)
    taker_account: Mapped[str] = mapped_column(String)
    maker_fee: Mapped[Decimal] = mapped_column(MONEY)
    taker_fee: Mapped[Decimal] = mapped_column(MONEY)
    seq: Mapped[int] = mapped_column(BigInteger)


class PositionRow(ReadModelBase):
    """Exposure of one account in one symbol (flat positions are kept)."""

    __tablename__ = "rm_positions"
    __table_args__ = (
        Index("rm_positions_account_symbol_idx", "shard", "account", "symbol", unique=True),
    )

    position_id: Mapped[UUID] = mapped_column(primary_key=True)
    shard: Mapped[str] = mapped_column(String)
    account: Mapped[str] = mapped_column(String)
    symbol: Mapped[str] = mapped_column(String)
    leverage: Mapped[int]
    size_lots: Mapped[int] = mapped_column(BigInteger)
    cost_ticklots: Mapped[int] = mapped_column(BigInteger)
    size: Mapped[Decimal] = mapped_column(AMOUNT)
    entry_cost: Mapped[Decimal] = mapped_column(MONEY)
    margin: Mapped[Decimal] = mapped_column(MONEY)
    realized_pnl: Mapped[Decimal] = mapped_column(MONEY)
    seq: Mapped[int] = mapped_column(BigInteger)


class BalanceRow(ReadModelBase):
    """Collateral of one account on one shard; available = balance - both margins."""

    __tablename__ = "rm_balances"
    __table_args__ = (Index("rm_balances_account_idx", "shard", "account", unique=True),)

    account_id: Mapped[UUID] = mapped_column(primary_key=True)
    shard: Mapped[str] = mapped_column(String)
    account: Mapped[str] = mapped_column(String)
    balance: Mapped[Decimal] = mapped_column(MONEY)
    order_margin: Mapped[Decimal] = mapped_column(MONEY)
    position_margin: Mapped[Decimal] = mapped_column(MONEY)
    available: Mapped[Decimal] = mapped_column(MONEY)
    seq: Mapped[int] = mapped_column(BigInteger)


class TrackingRow(ReadModelBase):
    """How far a projection has applied a shard's WAL; written in the same transaction."""

    __tablename__ = "rm_tracking"

    projection: Mapped[str] = mapped_column(String, primary_key=True)
    shard: Mapped[str] = mapped_column(String, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    # the record at `seq`: the same seq on another fork has another checksum (migration 0007)
    epoch: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    checksum: Mapped[str | None] = mapped_column(String(64))


class ConfirmedRow(ReadModelBase):
    """The seq of a shard that no failover can take back, as this region's node knows it, and
    the record there. Written by the node, moved forward only; projections stop at it."""

    __tablename__ = "wal_confirmed"

    shard: Mapped[str] = mapped_column(String, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    epoch: Mapped[int] = mapped_column(BigInteger)
    checksum: Mapped[str] = mapped_column(String(64))


READ_MODEL_TABLES = ("rm_orders", "rm_trades", "rm_positions", "rm_balances")
"""The view tables a rebuild empties (tracking rows are reset separately)."""
