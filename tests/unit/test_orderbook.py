"""OrderBook: price-time priority, FIFO levels, depth, hashes and its own invariants."""

from __future__ import annotations

from uuid import UUID

import pytest

from domain.errors import InvariantViolation, UnknownOrder
from domain.orderbook import OrderBook
from domain.values import Side


def oid(n: int) -> UUID:
    return UUID(int=n)


def book_with(*orders: tuple[int, str, Side, int, int]) -> OrderBook:
    book = OrderBook("T")
    for n, owner, side, price, lots in orders:
        book.add(oid(n), owner, side, price, lots, priority=n)
    return book


def test_best_prices_and_depth() -> None:
    book = book_with((1, "a", Side.BUY, 99, 5), (2, "a", Side.BUY, 98, 1),
                     (3, "b", Side.BUY, 99, 2), (4, "c", Side.SELL, 101, 7))
    assert book.best_bid() == 99
    assert book.best_ask() == 101
    depth = book.depth(5)
    assert depth.bids == ((99, 7, 2), (98, 1, 1))
    assert depth.asks == ((101, 7, 1),)
    assert book.depth(1).bids == ((99, 7, 2),)
    book.validate_internal_state()


def test_match_takes_best_price_then_oldest_first() -> None:
    book = book_with((1, "a", Side.SELL, 101, 3), (2, "b", Side.SELL, 100, 2),
                     (3, "c", Side.SELL, 100, 2))
    fills, left = book.match(Side.BUY, 101, 6, owner="t")
    assert [(f[0], f[2], f[3]) for f in fills] == [(oid(2), 100, 2), (oid(3), 100, 2),
                                                  (oid(1), 101, 2)]
    assert left == 0
    assert book.get(oid(1)) is not None and book.get(oid(1)).remaining_lots == 1  # type: ignore[union-attr]
    assert book.depth(5).asks == ((101, 1, 1),)
    book.validate_internal_state()


def test_match_respects_limit_and_returns_remainder() -> None:
    book = book_with((1, "a", Side.BUY, 100, 2), (2, "a", Side.BUY, 99, 5))
    fills, left = book.match(Side.SELL, 100, 5)
    assert [(f[2], f[3]) for f in fills] == [(100, 2)]
    assert left == 3
    assert book.best_bid() == 99


def test_match_stops_before_own_order() -> None:
    book = book_with((1, "a", Side.SELL, 100, 2), (2, "me", Side.SELL, 100, 2),
                     (3, "b", Side.SELL, 100, 2))
    fills, left = book.match(Side.BUY, None, 6, owner="me")
    assert [f[0] for f in fills] == [oid(1)]
    assert left == 4
    assert len(book) == 2
    book.validate_internal_state()


def test_cancel_removes_and_empty_levels_disappear() -> None:
    book = book_with((1, "a", Side.BUY, 100, 2), (2, "a", Side.BUY, 100, 3))
    book.cancel(oid(1))
    assert book.depth(1).bids == ((100, 3, 1),)
    book.cancel(oid(2))
    assert book.best_bid() is None
    with pytest.raises(UnknownOrder):
        book.cancel(oid(2))
    book.validate_internal_state()


def test_fifo_kept_after_partial_fill_and_late_priority() -> None:
    book = book_with((1, "a", Side.SELL, 100, 5), (3, "b", Side.SELL, 100, 1))
    book.fill(oid(1), 2)
    book.add(oid(2), "c", Side.SELL, 100, 4, priority=2)  # replayed out of order
    assert [e.order_id for e in book.resting()] == [oid(1), oid(2), oid(3)]
    book.validate_internal_state()


def test_state_hash_sees_fifo_order() -> None:
    first = book_with((1, "a", Side.BUY, 100, 1), (2, "b", Side.BUY, 100, 1))
    same = book_with((1, "a", Side.BUY, 100, 1), (2, "b", Side.BUY, 100, 1))
    swapped = OrderBook("T")
    swapped.add(oid(2), "b", Side.BUY, 100, 1, priority=1)
    swapped.add(oid(1), "a", Side.BUY, 100, 1, priority=2)
    assert first.state_hash() == same.state_hash()
    assert first.state_hash() != swapped.state_hash()


def test_validate_catches_a_crossed_book() -> None:
    book = book_with((1, "a", Side.BUY, 101, 1), (2, "b", Side.SELL, 100, 1))
    with pytest.raises(InvariantViolation):
        book.validate_internal_state()


def test_validate_catches_a_wrong_total() -> None:
    book = book_with((1, "a", Side.BUY, 100, 1))
    book._bids[100].total_lots = 7
    with pytest.raises(InvariantViolation):
        book.validate_internal_state()


def test_place_matches_then_rests_the_remainder() -> None:
    book = book_with((1, "a", Side.SELL, 100, 2))
    fills, left, rested = book.place(oid(2), "b", Side.BUY, 101, 5, priority=2)
    assert [(f[0], f[3]) for f in fills] == [(oid(1), 2)] and (left, rested) == (3, True)
    assert book.depth(1).bids == ((101, 3, 1),)
    fills, left, rested = book.place(oid(3), "b", Side.SELL, 101, 1, priority=3)
    assert fills == [] and (left, rested) == (1, False)  # self-trade: never rests crossed
    book.validate_internal_state()
