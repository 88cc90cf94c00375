"""Price-time order book of one symbol, after exchange-core's OrderBookNaiveImpl.

Each side keeps a dict price -> level and a sorted list of prices (bisect), so the best
price is a list end. A level is an insertion-ordered dict order_id -> entry: FIFO with O(1)
removal, plus a running total. Prices and sizes are integers (ticks, lots). Maps are keyed
by the order id's 128-bit integer: UUID.__hash__ is a Python-level call, int's is not.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left, insort
from collections.abc import Iterator
from dataclasses import dataclass
from uuid import UUID

from domain.errors import InvariantViolation, UnknownOrder
from domain.values import Side

BookFill = tuple[UUID, str, int, int]
"""(maker order id, maker owner, price_ticks, quantity_lots) of one match."""

_BUY = Side.BUY  # a module global: one lookup instead of two in the hot loops

DepthLevel = tuple[int, int, int]
"""(price_ticks, quantity_lots, order_count) of one price level."""


@dataclass(frozen=True, slots=True)
class BookDepth:
    """Aggregated top of book, best prices first."""

    symbol: str
    bids: tuple[DepthLevel, ...]
    asks: tuple[DepthLevel, ...]


class RestingOrder:
    """The book's view of an order: just what matching needs."""

    __slots__ = ("order_id", "owner", "price_ticks", "priority", "reduce_only", "remaining_lots",
                 "side")

    def __init__(self, order_id: UUID, owner: str, side: Side, price_ticks: int,
                 remaining_lots: int, priority: int, reduce_only: bool) -> None:
        self.order_id = order_id
        self.owner = owner
        self.side = side
        self.price_ticks = price_ticks
        self.remaining_lots = remaining_lots
        self.priority = priority
        self.reduce_only = reduce_only


class PriceLevel:
    """FIFO of resting orders at one price with its total volume."""

    __slots__ = ("last_priority", "orders", "price_ticks", "total_lots")

    def __init__(self, price_ticks: int) -> None:
        self.price_ticks = price_ticks
        self.total_lots = 0
        self.last_priority = 0  # highest priority ever appended: an upper bound, cheap to keep
        self.orders: dict[int, RestingOrder] = {}


class OrderBook:
    """Resting limit orders of one symbol; matching is price-time priority."""

    __slots__ = ("_ask_prices", "_asks", "_bid_prices", "_bids", "_orders", "symbol")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self._bids: dict[int, PriceLevel] = {}
        self._asks: dict[int, PriceLevel] = {}
        self._bid_prices: list[int] = []  # ascending, best bid last
        self._ask_prices: list[int] = []  # ascending, best ask first
        self._orders: dict[int, RestingOrder] = {}

    def __len__(self) -> int:
        return len(self._orders)

    def __contains__(self, order_id: object) -> bool:
        return isinstance(order_id, UUID) and order_id.int in self._orders

    def get(self, order_id: UUID) -> RestingOrder | None:
        """The resting entry of an order, if it rests here."""
        return self._orders.get(order_id.int)

    def best_bid(self) -> int | None:
        """Highest resting buy price."""
        return self._bid_prices[-1] if self._bid_prices else None

    def best_ask(self) -> int | None:
        """Lowest resting sell price."""
        return self._ask_prices[0] if self._ask_prices else None

    def best_opposite(self, side: Side) -> int | None:
        """Best price a taker of this side would meet."""
        if side == _BUY:
            return self._ask_prices[0] if self._ask_prices else None
        return self._bid_prices[-1] if self._bid_prices else None

    def rests_beyond(self, side: Side, limit_ticks: int) -> bool:
        """True if some opposite liquidity lies past a taker's limit (e.g. the price band)."""
        if side == _BUY:
            return bool(self._ask_prices) and self._ask_prices[-1] > limit_ticks
        return bool(self._bid_prices) and self._bid_prices[0] < limit_ticks

    def would_cross(self, side: Side, price_ticks: int) -> bool:
        """True if a limit order at this price would trade on arrival."""
        if side == _BUY:
            return bool(self._ask_prices) and price_ticks >= self._ask_prices[0]
        return bool(self._bid_prices) and price_ticks <= self._bid_prices[-1]

    def add(self, order_id: UUID, owner: str, side: Side, price_ticks: int, quantity_lots: int,
            priority: int = 0, reduce_only: bool = False) -> None:
        """Rest an order at the back of its level, or at its place in priority order if the
        level already holds an order of a later priority."""
        key = order_id.int
        entry = RestingOrder(order_id, owner, side, price_ticks, quantity_lots, priority,
                             reduce_only)
        if self._orders.setdefault(key, entry) is not entry:
            raise InvariantViolation(f"order {order_id} already rests in {self.symbol}")
        if side == _BUY:
            levels, prices = self._bids, self._bid_prices
        else:
            levels, prices = self._asks, self._ask_prices
        level = levels.get(price_ticks)
        if level is None:
            level = levels[price_ticks] = PriceLevel(price_ticks)
            insort(prices, price_ticks)
        orders = level.orders
        if priority >= level.last_priority:
            orders[key] = entry
            level.last_priority = priority
        else:
            ordered = sorted([*orders.values(), entry], key=lambda e: e.priority)
            orders.clear()
            orders.update((e.order_id.int, e) for e in ordered)
        level.total_lots += quantity_lots

    def place(self, order_id: UUID, owner: str, side: Side, price_ticks: int | None,
              quantity_lots: int, priority: int = 0) -> tuple[list[BookFill], int, bool]:
        """Match an incoming order, then rest a limit order's remainder (exchange-core's
        newOrder); returns (fills, unfilled lots, rested). A remainder stopped by self-trade
        prevention does not rest: it would cross its own order."""
        if price_ticks is not None and not self.would_cross(side, price_ticks):
            self.add(order_id, owner, side, price_ticks, quantity_lots, priority)
            return [], quantity_lots, True
        fills, left = self.match(side, price_ticks, quantity_lots, owner)
        if left and price_ticks is not None and not self.would_cross(side, price_ticks):
            self.add(order_id, owner, side, price_ticks, left, priority)
            return fills, left, True
        return fills, left, False

    def cancel(self, order_id: UUID) -> RestingOrder:
        """Take an order out of the book, returning its entry."""
        entry = self._orders.pop(order_id.int, None)
        if entry is None:
            raise UnknownOrder(f"order {order_id} does not rest in {self.symbol}")
        self._unlink(entry, entry.remaining_lots)
        return entry

    def fill(self, order_id: UUID, quantity_lots: int) -> None:
        """Reduce a resting order by an executed quantity, removing it when done."""
        key = order_id.int
        entry = self._orders[key]
        if quantity_lots >= entry.remaining_lots:
            del self._orders[key]
            self._unlink(entry, entry.remaining_lots)
            return
        entry.remaining_lots -= quantity_lots
        levels = self._bids if entry.side == _BUY else self._asks
        levels[entry.price_ticks].total_lots -= quantity_lots

    def _unlink(self, entry: RestingOrder, lots: int) -> None:
        if entry.side == _BUY:
            levels, prices = self._bids, self._bid_prices
        else:
            levels, prices = self._asks, self._ask_prices
        level = levels[entry.price_ticks]
        del level.orders[entry.order_id.int]
        level.total_lots -= lots
        if not level.orders:
            del levels[entry.price_ticks]
            del prices[bisect_left(prices, entry.price_ticks)]

    def matchable(self, side: Side, limit_ticks: int | None) -> Iterator[RestingOrder]:
        """Resting orders a taker of this side could hit, in price-time order; read-only."""
        if side == _BUY:
            levels = self._asks
            for price in self._ask_prices:
                if limit_ticks is not None and price > limit_ticks:
                    return
                yield from levels[price].orders.values()
        else:
            levels = self._bids
            for price in reversed(self._bid_prices):
                if limit_ticks is not None and price < limit_ticks:
                    return
                yield from levels[price].orders.values()

    def match(self, side: Side, limit_ticks: int | None, quantity_lots: int,
              owner: str | None = None) -> tuple[list[BookFill], int]:
        """Match an incoming order; returns fills and the unfilled lots.

        Stops before a resting order of the same owner (self-trade prevention: the taker's
        remainder is left to the caller to expire).
        """
        fills: list[BookFill] = []
        if side == _BUY:
            levels, prices, best_index = self._asks, self._ask_prices, 0
        else:
            levels, prices, best_index = self._bids, self._bid_prices, -1
        orders_by_id = self._orders
        left = quantity_lots
        while left and prices:
            price = prices[best_index]
            if limit_ticks is not None and (
                price > limit_ticks if best_index == 0 else price < limit_ticks
            ):
                break
            level = levels[price]
            orders = level.orders
            while left and orders:
                entry = next(iter(orders.values()))
                if entry.owner == owner:
                    return fills, left
                lots = entry.remaining_lots if entry.remaining_lots < left else left
                fills.append((entry.order_id, entry.owner, price, lots))
                left -= lots
                level.total_lots -= lots
                if lots == entry.remaining_lots:
                    key = entry.order_id.int
                    del orders[key]
                    del orders_by_id[key]
                else:
                    entry.remaining_lots -= lots
            self._drop_empty(levels, prices, price, level)
        return fills, left

    @staticmethod
    def _drop_empty(levels: dict[int, PriceLevel], prices: list[int], price: int,
                    level: PriceLevel) -> None:
        if not level.orders:
            del levels[price]
            del prices[bisect_left(prices, price)]

    def depth(self, levels: int) -> BookDepth:
        """Top `levels` price levels each side as (price_ticks, quantity_lots, order_count)."""
        bids = tuple(
            (p, self._bids[p].total_lots, len(self._bids[p].orders))
            for p in reversed(self._bid_prices[-levels:] if levels > 0 else [])
        )
        asks = tuple(
            (p, self._asks[p].total_lots, len(self._asks[p].orders))
            for p in self._ask_prices[:levels]
        )
        return BookDepth(self.symbol, bids, asks)

    def resting(self) -> Iterator[RestingOrder]:
        """Every resting order: bids best first, then asks best first, FIFO within a level."""
        for price in reversed(self._bid_prices):
            yield from self._bids[price].orders.values()
        for price in self._ask_prices:
            yield from self._asks[price].orders.values()

    def canonical_lines(self) -> Iterator[str]:
        """Stable text of levels and FIFO order; what state hashes are made of."""
        yield f"book {self.symbol}"
        for side, levels, prices in (("B", self._bids, reversed(self._bid_prices)),
                                     ("A", self._asks, iter(self._ask_prices))):
            for price in prices:
                level = levels[price]
                yield f"{side} {price} {level.total_lots}"
                for e in level.orders.values():
                    yield (f" {e.order_id} {e.owner} {e.remaining_lots} {e.priority}"
                           f" {e.reduce_only:d}")

    def state_hash(self) -> str:
        """sha256 hex of the canonical encoding; equal books hash equal after replay."""
        return hashlib.sha256("\n".join(self.canonical_lines()).encode()).hexdigest()

    def validate_internal_state(self) -> None:
        """Check totals, sort order, map consistency and that the book is not crossed."""
        seen = 0
        for side, levels, prices in ((Side.BUY, self._bids, self._bid_prices),
                                     (Side.SELL, self._asks, self._ask_prices)):
            if prices != sorted(set(prices)) or set(prices) != set(levels):
                raise InvariantViolation(f"{self.symbol} {side}: price index out of sync")
            for price, level in levels.items():
                if not level.orders:
                    raise InvariantViolation(f"{self.symbol} {side} {price}: empty level")
                total = 0
                last_priority: int | None = None
                for key, e in level.orders.items():
                    order_id = e.order_id
                    if key != order_id.int or self._orders.get(key) is not e or e.side != side:
                        raise InvariantViolation(f"{self.symbol}: order {order_id} not indexed")
                    if e.price_ticks != price or e.remaining_lots <= 0:
                        raise InvariantViolation(f"{self.symbol}: bad entry {order_id}")
                    if last_priority is not None and e.priority < last_priority:
                        raise InvariantViolation(f"{self.symbol} {price}: FIFO out of order")
                    last_priority = e.priority
                    total += e.remaining_lots
                    seen += 1
                if total != level.total_lots:
                    raise InvariantViolation(f"{self.symbol} {side} {price}: total mismatch")
        if seen != len(self._orders):
            raise InvariantViolation(f"{self.symbol}: id map holds orders not in levels")
        bid, ask = self.best_bid(), self.best_ask()
        if bid is not None and ask is not None and bid >= ask:
            raise InvariantViolation(f"{self.symbol}: crossed book {bid} >= {ask}")
