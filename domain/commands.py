"""Commands a shard accepts; plain values so they can be logged, replayed and compared."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

from domain.values import OrderType, Side, TimeInForce


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    """Place a limit or market order for an account."""

    account: str
    client_order_id: str
    symbol: str
    side: Side
    order_type: OrderType
    quantity_lots: int
    price_ticks: int | None = None
    time_in_force: TimeInForce = TimeInForce.GTC
    post_only: bool = False
    reduce_only: bool = False
    leverage: int = 10


@dataclass(frozen=True, slots=True)
class CancelOrder:
    """Cancel the open remainder of one of the account's orders."""

    account: str
    order_id: UUID


@dataclass(frozen=True, slots=True)
class Deposit:
    """Credit collateral; opens the account on first use. With a `deposit_id` (the funding
    system's transfer id) a deposit is credited once however often it is sent."""

    account: str
    amount: Decimal
    deposit_id: str | None = None


@dataclass(frozen=True, slots=True)
class Withdraw:
    """Debit collateral, never beyond what is available."""

    account: str
    amount: Decimal


Command = PlaceOrder | CancelOrder | Deposit | Withdraw
