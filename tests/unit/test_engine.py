"""ShardEngine behaviour, one rule per test; every test ends with replay/restore checks."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID, uuid4

import pytest
from eventsourcing.domain import Aggregate

from domain.account import Account
from domain.commands import CancelOrder, Command, Deposit, PlaceOrder, Withdraw
from domain.engine import ShardEngine
from domain.errors import (
    DomainError,
    DuplicateClientOrderId,
    InsufficientBalance,
    InsufficientMargin,
    InvalidAmount,
    InvalidLeverage,
    InvalidOrder,
    InvalidPrice,
    InvalidQuantity,
    InvariantViolation,
    ReduceOnlyViolation,
    UnknownAccount,
    UnknownOrder,
    UnknownSymbol,
)
from domain.order import Order
from domain.values import (
    DEFAULT_INSTRUMENTS,
    Liquidity,
    OrderStatus,
    OrderType,
    RejectReason,
    Side,
    TimeInForce,
)
from tests.unit.shard_harness import BTC, SHARD, Harness

BUY, SELL = Side.BUY, Side.SELL
PRICE = 500_000  # 50,000.0 USDT


@pytest.fixture
def h() -> Harness:
    harness = Harness()
    harness.fund("alice", "bob", "carol")
    return harness


def order_id(owner: str, cid: str) -> UUID:
    return Order.create_id(Account.create_id(SHARD, owner), cid)


def test_deposit_opens_account_and_withdraw_debits(h: Harness) -> None:
    result = h.run(Deposit("dave", Decimal("10.5")))
    assert result.account is not None and result.account.balance == Decimal("10.5")
    h.run(Withdraw("dave", Decimal("0.5")))
    assert h.engine.account("dave").balance == Decimal("10")  # type: ignore[union-attr]
    h.check()


def test_limit_order_rests_and_reserves_margin_plus_worst_fee(h: Harness) -> None:
    result = h.limit("alice", "a1", BUY, 10, PRICE)
    order = result.order
    assert order is not None and order.status is OrderStatus.NEW and order.is_open
    # 10 lots * 0.001 * 50,000 = 500 notional; /10 leverage = 50; taker fee 5 bps = 0.25
    assert order.reserved_margin == Decimal("50.25")
    assert h.engine.account("alice").order_margin == Decimal("50.25")  # type: ignore[union-attr]
    assert h.engine.depth(BTC, 1).bids == ((PRICE, 10, 1),)
    assert [type(a).__name__ for a in result.touched] == ["Order", "Account"]
    h.check()


def test_partial_fill_then_rest_with_fees_to_fee_account(h: Harness) -> None:
    h.limit("alice", "a1", SELL, 4, PRICE)
    result = h.limit("bob", "b1", BUY, 10, PRICE + 10)
    taker = result.order
    assert taker is not None and taker.status is OrderStatus.PARTIALLY_FILLED
    assert taker.filled_lots == 4 and taker.remaining_lots == 6
    (trade,) = result.trades
    assert (trade.price_ticks, trade.quantity_lots) == (PRICE, 4)
    assert trade.maker_fee == Decimal("0.04") and trade.taker_fee == Decimal("0.1")
    fees = h.engine.fee_account()
    assert fees is not None and fees.balance == Decimal("0.14")
    assert h.engine.depth(BTC, 1).bids == ((PRICE + 10, 6, 1),)
    assert h.engine.depth(BTC, 1).asks == ()
    fills = {f.originator_id: f for f in h.events if isinstance(f, Order.Filled)}
    assert fills[order_id("alice", "a1")].liquidity is Liquidity.MAKER
    assert fills[taker.id].liquidity is Liquidity.TAKER
    assert h.total_balance() == h.net_deposits
    h.check()


def test_full_fill_closes_both_orders_and_they_leave_memory(h: Harness) -> None:
    maker = h.limit("alice", "a1", SELL, 5, PRICE).order
    taker = h.limit("bob", "b1", BUY, 5, PRICE).order
    assert maker is not None and taker is not None
    assert taker.status is OrderStatus.FILLED
    assert h.engine.order(maker.id) is None and h.engine.order(taker.id) is None
    assert h.engine.account("alice").order_margin == 0  # type: ignore[union-attr]
    assert h.engine.position("bob", BTC).size_lots == 5  # type: ignore[union-attr]
    assert h.engine.position("alice", BTC).size_lots == -5  # type: ignore[union-attr]
    h.check()


def test_touched_lists_each_aggregate_once_in_first_touched_order(h: Harness) -> None:
    h.limit("alice", "a1", SELL, 1, PRICE)
    h.limit("alice", "a2", SELL, 1, PRICE + 1)
    result = h.limit("bob", "b1", BUY, 2, PRICE + 1)
    ids = [a.id for a in result.touched]
    assert len(ids) == len(set(ids))
    assert ids[0] == result.order.id  # type: ignore[union-attr]
    assert len(result.trades) == 2
    h.check()


def test_cancel_releases_the_reservation(h: Harness) -> None:
    placed = h.limit("alice", "a1", BUY, 10, PRICE).order
    assert placed is not None
    result = h.run(CancelOrder("alice", placed.id))
    assert result.order is not None and result.order.status is OrderStatus.CANCELLED
    assert h.engine.account("alice").order_margin == 0  # type: ignore[union-attr]
    assert h.engine.depth(BTC, 1).bids == ()
    h.check()


def test_ioc_remainder_expires(h: Harness) -> None:
    h.limit("alice", "a1", SELL, 3, PRICE)
    result = h.limit("bob", "b1", BUY, 5, PRICE, TimeInForce.IOC)
    order = result.order
    assert order is not None and order.status is OrderStatus.EXPIRED
    assert order.filled_lots == 3 and order.reject_reason is RejectReason.IOC_REMAINDER
    assert h.engine.depth(BTC, 1) .bids == ()
    assert h.engine.account("bob").order_margin == 0  # type: ignore[union-attr]
    h.check()


def test_fok_fills_completely_or_leaves_no_trace(h: Harness) -> None:
    h.limit("alice", "a1", SELL, 3, PRICE)
    before = h.engine.depth(BTC, 5)
    missed = h.limit("bob", "b1", BUY, 5, PRICE, TimeInForce.FOK)
    assert missed.order is not None and missed.order.status is OrderStatus.EXPIRED
    assert missed.order.reject_reason is RejectReason.FOK_NOT_FILLABLE
    assert missed.trades == () and h.engine.depth(BTC, 5) == before
    filled = h.limit("bob", "b2", BUY, 3, PRICE, TimeInForce.FOK)
    assert filled.order is not None and filled.order.status is OrderStatus.FILLED
    h.check()


def test_post_only_rests_or_is_rejected_when_it_would_cross(h: Harness) -> None:
    h.limit("alice", "a1", SELL, 3, PRICE)
    rejected = h.limit("bob", "b1", BUY, 1, PRICE, post_only=True).order
    assert rejected is not None and rejected.status is OrderStatus.REJECTED
    assert rejected.reject_reason is RejectReason.POST_ONLY_WOULD_CROSS
    rested = h.limit("bob", "b2", BUY, 1, PRICE - 1, post_only=True).order
    assert rested is not None and rested.status is OrderStatus.NEW
    assert h.engine.account("bob").order_margin == rested.reserved_margin  # type: ignore[union-attr]
    h.check()


def test_market_without_liquidity_is_rejected(h: Harness) -> None:
    order = h.market("bob", "b1", BUY, 1).order
    assert order is not None and order.status is OrderStatus.REJECTED
    assert order.reject_reason is RejectReason.NO_LIQUIDITY
    h.check()


def test_market_never_trades_beyond_the_price_band(h: Harness) -> None:
    h.limit("alice", "a1", SELL, 2, PRICE)
    h.limit("alice", "a2", SELL, 2, PRICE * 10_500 // 10_000)  # exactly at the band: fills
    h.limit("alice", "a3", SELL, 2, PRICE * 10_500 // 10_000 + 1)  # beyond: never
    result = h.market("bob", "b1", BUY, 10)
    assert [t.quantity_lots for t in result.trades] == [2, 2]
    order = result.order
    assert order is not None and order.status is OrderStatus.EXPIRED
    assert order.reject_reason is RejectReason.PRICE_BAND
    assert h.engine.depth(BTC, 1).asks == ((PRICE * 10_500 // 10_000 + 1, 2, 1),)
    h.check()


def test_self_trade_expires_the_taker_and_keeps_the_maker(h: Harness) -> None:
    h.limit("bob", "b0", SELL, 1, PRICE - 1)
    h.limit("alice", "a1", SELL, 2, PRICE)
    result = h.limit("alice", "a2", BUY, 5, PRICE)
    assert result.trades[0].quantity_lots == 1 and len(result.trades) == 1
    order = result.order
    assert order is not None and order.status is OrderStatus.EXPIRED
    assert order.reject_reason is RejectReason.SELF_TRADE
    assert h.engine.depth(BTC, 1).asks == ((PRICE, 2, 1),)
    h.check()


def test_reduce_only_may_only_shrink(h: Harness) -> None:
    with pytest.raises(ReduceOnlyViolation):
        h.limit("bob", "b0", SELL, 1, PRICE, reduce_only=True)  # flat
    h.limit("alice", "a1", SELL, 4, PRICE)
    h.limit("bob", "b1", BUY, 4, PRICE)  # bob long 4
    with pytest.raises(ReduceOnlyViolation):
        h.limit("bob", "b2", BUY, 1, PRICE, reduce_only=True)  # same side
    with pytest.raises(ReduceOnlyViolation):
        h.limit("bob", "b3", SELL, 5, PRICE, reduce_only=True)  # beyond the position
    h.limit("bob", "b4", SELL, 3, PRICE + 5, reduce_only=True)
    h.limit("bob", "b5", SELL, 2, PRICE + 6, reduce_only=True)
    result = h.limit("carol", "c1", BUY, 10, PRICE + 6)
    # b4 fills 3, b5 only 1 (bob is then flat) and its remainder expires
    assert [t.quantity_lots for t in result.trades] == [3, 1]
    assert h.engine.position("bob", BTC).size_lots == 0  # type: ignore[union-attr]
    b5 = h.engine.order(order_id("bob", "b5"))
    assert b5 is None
    expired = [e for e in h.events if isinstance(e, Order.Expired)]
    assert expired[-1].reason is RejectReason.REDUCE_ONLY_WOULD_INCREASE
    h.check()


def test_realized_pnl_on_reduce_close_and_flip(h: Harness) -> None:
    h.limit("alice", "a1", SELL, 4, PRICE)
    h.limit("bob", "b1", BUY, 4, PRICE)  # bob long 4 @ 50,000
    h.limit("carol", "c1", BUY, 1, PRICE + 1000)
    h.limit("bob", "b2", SELL, 1, PRICE + 1000)  # bob sells 1 @ 50,100: +0.1
    bob = h.engine.position("bob", BTC)
    assert bob is not None and bob.size_lots == 3 and bob.realized_pnl == Decimal("0.1")
    assert bob.entry_price == Decimal("50000")
    h.limit("carol", "c2", BUY, 5, PRICE - 1000)
    h.limit("bob", "b3", SELL, 5, PRICE - 1000)  # closes 3 at -0.1 each, opens short 2
    assert bob.size_lots == -2 and bob.realized_pnl == Decimal("0.1") - Decimal("0.3")
    assert bob.entry_price == Decimal("49900")
    h.limit("bob", "b4", BUY, 2, PRICE - 1000)
    h.limit("carol", "c3", SELL, 2, PRICE - 1000)
    h.limit("alice", "a2", BUY, 4, PRICE)
    h.limit("carol", "c4", SELL, 4, PRICE)
    assert all(p.is_flat for p in h.engine.positions())
    assert h.total_realized() == 0
    assert h.total_balance() == h.net_deposits
    h.check()


def test_leverage_must_match_what_the_symbol_already_uses(h: Harness) -> None:
    h.limit("alice", "a1", BUY, 1, PRICE - 5, leverage=20)
    with pytest.raises(InvalidLeverage):
        h.limit("alice", "a2", BUY, 1, PRICE - 5, leverage=10)
    h.check()


def test_deterministic_ids() -> None:
    account = Account.create_id("s", "o")
    assert account == Account.create_id("s", "o") != Account.create_id("s2", "o")
    assert Order.create_id(account, "x") == Order.create_id(account, "x")
    assert Account.fee_account_id("s") == Account.create_id("s", "__fees__")


REFUSALS: list[tuple[Command, type[DomainError]]] = [
    (PlaceOrder("alice", "x", "DOGEUSDT", BUY, OrderType.LIMIT, 1, PRICE), UnknownSymbol),
    (PlaceOrder("nobody", "x", BTC, BUY, OrderType.LIMIT, 1, PRICE), UnknownAccount),
    (PlaceOrder("alice", "x", BTC, BUY, OrderType.LIMIT, 1), InvalidPrice),
    (PlaceOrder("alice", "x", BTC, BUY, OrderType.LIMIT, 1, 0), InvalidPrice),
    (PlaceOrder("alice", "x", BTC, BUY, OrderType.MARKET, 1, PRICE), InvalidPrice),
    (PlaceOrder("alice", "x", BTC, BUY, OrderType.LIMIT, 0, PRICE), InvalidQuantity),
    (PlaceOrder("alice", "x", BTC, BUY, OrderType.LIMIT, 10**9, PRICE), InvalidQuantity),
    (PlaceOrder("alice", "x", BTC, BUY, OrderType.LIMIT, 1, PRICE, leverage=0), InvalidLeverage),
    (PlaceOrder("alice", "x", BTC, BUY, OrderType.LIMIT, 1, PRICE, leverage=101),
     InvalidLeverage),
    (PlaceOrder("alice", "x", BTC, BUY, OrderType.MARKET, 1, post_only=True), InvalidOrder),
    (PlaceOrder("alice", "x", BTC, BUY, OrderType.LIMIT, 1, PRICE, TimeInForce.IOC,
                post_only=True), InvalidOrder),
    (PlaceOrder("alice", "x", BTC, BUY, OrderType.LIMIT, 900_000, PRICE), InsufficientMargin),
    (PlaceOrder("alice", "open", BTC, BUY, OrderType.LIMIT, 1, PRICE - 9),
     DuplicateClientOrderId),
    (PlaceOrder("alice", "x", BTC, SELL, OrderType.LIMIT, 1, PRICE, reduce_only=True),
     ReduceOnlyViolation),
    (CancelOrder("alice", uuid4()), UnknownOrder),
    (CancelOrder("bob", order_id("alice", "open")), UnknownOrder),
    (CancelOrder("nobody", order_id("alice", "open")), UnknownAccount),
    (Deposit("alice", Decimal(0)), InvalidAmount),
    (Deposit("alice", Decimal("0.000000001")), InvalidAmount),
    (Withdraw("alice", Decimal(-1)), InvalidAmount),
    (Withdraw("alice", Decimal("1000000")), InsufficientBalance),
    (Withdraw("nobody", Decimal(1)), UnknownAccount),
]


@pytest.mark.parametrize(("command", "error"), REFUSALS,
                         ids=[e.__name__ for _, e in REFUSALS])
def test_refusals_leave_state_untouched(h: Harness, command: Command,
                                        error: type[DomainError]) -> None:
    h.limit("alice", "open", BUY, 1, PRICE - 10)
    h.limit("bob", "resting", SELL, 1, PRICE + 10)
    before = h.engine.state_hash()
    with pytest.raises(error) as caught:
        h.engine.execute(command)
    assert caught.value.code == error.code and str(caught.value)
    assert h.engine.state_hash() == before
    assert all(not a.pending_events for a in h.engine.live_aggregates())
    h.check()


def test_taker_refused_when_fills_at_better_prices_need_more_margin() -> None:
    h = Harness()
    h.fund("maker", amount="1000000")
    h.limit("maker", "m1", BUY, 100, 1_000_000)
    budget = Decimal("1000.55")  # 100 lots sold at 50,000: margin 500 + fee 0.25 would fit...
    h.fund("seller", amount=str(budget))
    before = h.engine.state_hash()
    with pytest.raises(InsufficientMargin):  # ...but it trades at 100,000: margin 1000 + 0.5
        h.limit("seller", "s1", SELL, 100, PRICE, leverage=10)
    assert h.engine.state_hash() == before
    h.check()


def test_reduce_only_holds_only_the_fee(h: Harness) -> None:
    h.limit("alice", "a1", SELL, 4, PRICE)
    h.limit("bob", "b1", BUY, 4, PRICE)
    order = h.limit("bob", "b2", SELL, 4, PRICE + 100, reduce_only=True).order
    assert order is not None and order.reserved_margin == Decimal("0.10002")  # 5 bps of 200.04
    h.check()


def test_the_fee_account_takes_no_commands(h: Harness) -> None:
    h.limit("alice", "a1", SELL, 4, PRICE)
    h.limit("bob", "b1", BUY, 4, PRICE)
    with pytest.raises(UnknownAccount):
        h.run(Withdraw("__fees__", Decimal("0.01")))
    h.check()


def test_recorded_events_equal_normally_constructed_ones(h: Harness) -> None:
    h.limit("alice", "a1", SELL, 4, PRICE)
    h.limit("bob", "b1", BUY, 6, PRICE)
    h.market("carol", "c1", SELL, 2)
    for event in h.events:
        rebuilt = type(event)(**vars(event))
        assert rebuilt == event and vars(rebuilt) == vars(event)


def test_validate_catches_an_account_out_of_step_with_its_orders(h: Harness) -> None:
    h.limit("alice", "a1", BUY, 1, PRICE)
    h.engine.account("alice").order_margin += 1  # type: ignore[union-attr]
    with pytest.raises(InvariantViolation):
        h.engine.validate_internal_state()


def test_replay_refuses_foreign_events(h: Harness) -> None:
    class Stranger(Aggregate):
        pass

    with pytest.raises(TypeError):
        h.engine.apply(Stranger().collect_events()[0])


def test_market_that_empties_the_book_expires_for_lack_of_liquidity(h: Harness) -> None:
    h.limit("alice", "a1", SELL, 2, PRICE)
    order = h.market("bob", "b1", BUY, 5).order
    assert order is not None and order.status is OrderStatus.EXPIRED
    assert order.filled_lots == 2 and order.reject_reason is RejectReason.NO_LIQUIDITY
    h.check()


def test_one_event_per_account_and_position_per_command(h: Harness) -> None:
    h.limit("alice", "a1", SELL, 2, PRICE)
    h.limit("alice", "a2", SELL, 3, PRICE + 1)
    h.limit("bob", "b1", SELL, 1, PRICE + 2)
    alice_before = h.engine.account("alice").balance  # type: ignore[union-attr]
    seen = len(h.events)
    result = h.limit("carol", "c1", BUY, 6, PRICE + 2)
    assert len(result.trades) == 3
    events = h.events[seen:]
    kinds = [type(e).__qualname__ for e in events]
    assert kinds.count("Account.Settled") == 3  # alice, bob, carol: once each
    assert kinds.count("Position.Traded") == 3
    assert kinds.count("Account.FeeCollected") == 1
    assert kinds.count("Order.Filled") == 6  # each execution, on both orders
    alice = h.engine.account("alice")
    assert alice is not None
    (settled,) = [e for e in events if isinstance(e, Account.Settled)
                  and e.originator_id == alice.id]
    assert settled.fee == sum(t.maker_fee for t in result.trades if t.maker_account == "alice")
    assert settled.balance == alice_before - settled.fee + settled.realized_pnl == alice.balance
    fees = h.engine.fee_account()
    assert fees is not None
    assert fees.balance == sum(t.maker_fee + t.taker_fee for t in result.trades)
    assert h.total_balance() == h.net_deposits
    h.check()


def test_records_written_before_settled_still_replay() -> None:
    """Histories with one MarginChanged, FeeCharged and PnlRealized per fill stay readable."""
    engine = ShardEngine(SHARD, DEFAULT_INSTRUMENTS)
    account = Account.open(SHARD, "old")
    account.trigger_event(Account.Deposited, amount=Decimal(100))
    account.trigger_event(Account.MarginChanged, order_margin=Decimal(0),
                          position_margin=Decimal(5))
    account.trigger_event(Account.FeeCharged, amount=Decimal("0.25"), symbol=BTC)
    account.trigger_event(Account.PnlRealized, amount=Decimal("1.5"), symbol=BTC)
    for event in account.collect_events():
        engine.apply(event)  # type: ignore[arg-type]
    replayed = engine.account("old")
    assert replayed is not None
    assert (replayed.balance, replayed.position_margin) == (Decimal("101.25"), Decimal(5))
