"""Planning a PlaceOrder against unchanged state: every refusal is raised from here.

The plan lists the fills (resting entry, lots) in price-time order and what happens to the
remainder; the engine then only executes it. FOK plans that fall short carry no fills.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from uuid import UUID

from domain.account import Account
from domain.commands import PlaceOrder
from domain.errors import (
    DuplicateClientOrderId,
    InsufficientMargin,
    InvalidLeverage,
    InvalidOrder,
    InvalidPrice,
    ReduceOnlyViolation,
)
from domain.order import Order
from domain.orderbook import OrderBook, RestingOrder
from domain.position import Position, apply_trade
from domain.values import Instrument, OrderType, RejectReason, TimeInForce, money


@dataclass(slots=True)
class Placement:
    """Outcome of matching an incoming order, decided before anything changes."""

    order_id: UUID
    reserve_per_lot_e8: int = 0
    reject_reason: RejectReason | None = None
    fills: list[tuple[RestingOrder, int]] = field(default_factory=list)
    maker_expiries: list[RestingOrder] = field(default_factory=list)
    rests: bool = False
    expire_reason: RejectReason | None = None
    taker_after: tuple[int, int, int, int] = (0, 0, 0, 0)
    """The taker's position (size, cost) after the fills, their realized PnL and fees."""


def check_order_shape(command: PlaceOrder, instrument: Instrument) -> None:
    """Refuse malformed prices, quantities, leverage and flag combinations."""
    instrument.check_quantity_lots(command.quantity_lots)
    if command.order_type == OrderType.LIMIT:
        if command.price_ticks is None:
            raise InvalidPrice("a limit order needs a price", field="price_ticks")
        if command.price_ticks <= 0:
            raise InvalidPrice("price must be positive", field="price_ticks")
    else:
        if command.price_ticks is not None:
            raise InvalidPrice("a market order takes no price", field="price_ticks")
        if command.post_only:
            raise InvalidOrder("a market order cannot be post-only", field="post_only")
    if command.post_only and command.time_in_force != TimeInForce.GTC:
        raise InvalidOrder("post-only orders must be GTC", field="time_in_force")
    if not 1 <= command.leverage <= instrument.max_leverage:
        raise InvalidLeverage(
            f"leverage {command.leverage} outside 1..{instrument.max_leverage}",
            field="leverage",
        )


def plan_placement(
    command: PlaceOrder,
    instrument: Instrument,
    account: Account,
    position: Position | None,
    book: OrderBook,
    open_orders: Mapping[int, Order],
    leverage_in_use: int | None,
    positions: Mapping[tuple[str, str], Position],
) -> Placement:
    """Decide the whole outcome of a placement, raising DomainError on any refusal."""
    check_order_shape(command, instrument)
    if leverage_in_use is not None and command.leverage != leverage_in_use:
        raise InvalidLeverage(
            f"{command.symbol} already uses leverage {leverage_in_use}", field="leverage"
        )
    order_id = Order.create_id(account._id, command.client_order_id)
    if order_id.int in open_orders:
        raise DuplicateClientOrderId(
            f"client order id {command.client_order_id!r} is already open",
            field="client_order_id",
        )
    side = command.side
    size = position.size_lots if position is not None else 0
    if command.reduce_only and (size * side.sign >= 0 or command.quantity_lots > abs(size)):
        raise ReduceOnlyViolation(
            f"reduce-only {side} of {command.quantity_lots} lots would not shrink position"
            f" {size}", field="reduce_only",
        )

    limit = command.price_ticks
    if limit is None:
        best = book.best_opposite(side)
        if best is None:
            return Placement(order_id, reject_reason=RejectReason.NO_LIQUIDITY)
        limit = instrument.band_price_ticks(side, best)
    per_lot = instrument.reserve_per_lot_e8(limit, command.leverage, command.reduce_only)
    plan = Placement(order_id, per_lot)
    required = money(per_lot * command.quantity_lots)
    if required > account.balance - account.order_margin - account.position_margin:
        raise InsufficientMargin(
            f"order needs {required} of margin and fees, available {account.available}",
            field="quantity_lots",
        )
    if not book.would_cross(side, limit):
        if command.order_type == OrderType.MARKET:
            plan.expire_reason = RejectReason.PRICE_BAND
        elif command.time_in_force == TimeInForce.IOC:
            plan.expire_reason = RejectReason.IOC_REMAINDER
        elif command.time_in_force == TimeInForce.FOK:
            plan.expire_reason = RejectReason.FOK_NOT_FILLABLE
        else:
            plan.rests = True
        return plan
    if command.post_only:
        plan.reject_reason = RejectReason.POST_ONLY_WOULD_CROSS
        return plan

    left = _walk_book(command, limit, book, positions, plan)
    if left and command.time_in_force == TimeInForce.FOK:
        plan.fills.clear()
        plan.maker_expiries.clear()
        plan.expire_reason = RejectReason.FOK_NOT_FILLABLE
        return plan
    if left and plan.expire_reason is None:
        if command.order_type == OrderType.MARKET:
            plan.expire_reason = (
                RejectReason.PRICE_BAND if book.rests_beyond(side, limit)
                else RejectReason.NO_LIQUIDITY
            )
        elif command.time_in_force == TimeInForce.IOC:
            plan.expire_reason = RejectReason.IOC_REMAINDER
        else:
            plan.rests = True
    _check_taker_affordable(command, instrument, account, position, plan, left)
    return plan


def _walk_book(command: PlaceOrder, limit: int, book: OrderBook,
               positions: Mapping[tuple[str, str], Position], plan: Placement) -> int:
    """Collect fills in price-time order; returns the lots left unfilled."""
    left = command.quantity_lots
    maker_sign = -command.side.sign
    maker_sizes: dict[str, int] = {}
    for entry in book.matchable(command.side, limit):
        if entry.owner == command.account:
            plan.expire_reason = RejectReason.SELF_TRADE
            break
        lots = entry.remaining_lots if entry.remaining_lots < left else left
        if entry.reduce_only or entry.owner in maker_sizes:
            size = maker_sizes.get(entry.owner)
            if size is None:
                held = positions.get((entry.owner, command.symbol))
                size = held.size_lots if held is not None else 0
            if entry.reduce_only:
                cap = abs(size) if size * maker_sign < 0 else 0
                if cap < lots:
                    lots = cap
                    plan.maker_expiries.append(entry)
            maker_sizes[entry.owner] = size + maker_sign * lots
        if lots:
            plan.fills.append((entry, lots))
            left -= lots
            if not left:
                break
    return left


def _check_taker_affordable(command: PlaceOrder, instrument: Instrument, account: Account,
                            position: Position | None, plan: Placement, left: int) -> None:
    """Refuse when the exact fills (fees, margin at fill prices) exceed available balance."""
    size = position.size_lots if position is not None else 0
    cost = position.cost_ticklots if position is not None else 0
    margin_before = position.margin if position is not None else Decimal(0)
    realized = 0
    fees = 0
    sign = command.side.sign
    for entry, lots in plan.fills:
        size, cost, pnl = apply_trade(size, cost, sign * lots, entry.price_ticks)
        realized += pnl
        fees += instrument.fee_e8(entry.price_ticks * lots, instrument.taker_fee_bps)
    if not plan.fills and not plan.rests:
        return
    plan.taker_after = (size, cost, realized, fees)
    margin_after = money(instrument.margin_e8(cost, command.leverage))
    rest = money(plan.reserve_per_lot_e8 * left) if plan.rests else Decimal(0)
    available = (
        account.available
        + money(realized * instrument.contract_e8 - fees)
        - rest
        - (margin_after - margin_before)
    )
    if available < 0:
        raise InsufficientMargin(
            f"order would leave available balance at {available}", field="quantity_lots"
        )
