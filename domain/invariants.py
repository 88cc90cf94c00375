"""Cross-checks of a shard's in-memory state, run by tests (after commands and after
recovery), the demo and the matching benchmark.

Everything here is derivable from the aggregates, so a mismatch is always a bug (an
InvariantViolation), never a client error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal

from domain.account import Account
from domain.errors import InvariantViolation
from domain.order import Order
from domain.orderbook import OrderBook
from domain.position import Position
from domain.values import Instrument, money


def check_shard(instruments: Mapping[str, Instrument], books: Mapping[str, OrderBook],
                orders: Iterable[Order], accounts: Iterable[Account],
                positions: Iterable[Position],
                leverage_in_use: Mapping[tuple[str, str], list[int]]) -> None:
    """Books valid; each open order rests with its remaining size and reservation; account
    margins equal the sums over their orders and positions; leverage bookkeeping agrees."""
    orders = list(orders)
    for book in books.values():
        book.validate_internal_state()
    order_margin: dict[str, Decimal] = {}
    for order in orders:
        entry = books[order.symbol].get(order.id)
        if not order.is_open or entry is None or entry.remaining_lots != order.remaining_lots:
            raise InvariantViolation(f"open order {order.id} and its book entry disagree")
        if order.reserved_margin != order.reserve_per_lot * order.remaining_lots:
            raise InvariantViolation(f"order {order.id}: reservation out of step")
        order_margin[order.owner] = order_margin.get(order.owner, Decimal(0)) + (
            order.reserved_margin)
    if sum(len(b) for b in books.values()) != len(orders):
        raise InvariantViolation("books hold orders the engine does not")
    position_margin: dict[str, Decimal] = {}
    for position in positions:
        instrument = instruments[position.symbol]
        expected = money(instrument.margin_e8(position.cost_ticklots, position.leverage))
        if position.margin != expected or (position.size_lots == 0) != (
                position.cost_ticklots == 0):
            raise InvariantViolation(f"position {position.id}: margin or cost inconsistent")
        position_margin[position.owner] = position_margin.get(
            position.owner, Decimal(0)) + position.margin
    for account in accounts:
        if account.order_margin != order_margin.get(account.owner, Decimal(0)):
            raise InvariantViolation(f"account {account.owner}: order margin out of step")
        if account.position_margin != position_margin.get(account.owner, Decimal(0)):
            raise InvariantViolation(f"account {account.owner}: position margin out of step")
    in_use: dict[tuple[str, str], list[int]] = {}
    for order in orders:
        counted = in_use.setdefault((order.owner, order.symbol), [order.leverage, 0])
        if counted[0] != order.leverage:
            raise InvariantViolation(f"{order.owner} {order.symbol}: mixed leverage")
        counted[1] += 1
    if in_use != dict(leverage_in_use):
        raise InvariantViolation("leverage bookkeeping out of step")
