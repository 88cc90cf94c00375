"""The post-drill audit recomputes balances and positions from trades alone, and notices lies."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from eventsourcing.domain import Aggregate

from domain.commands import CancelOrder, Deposit, PlaceOrder, Withdraw
from domain.errors import DomainError
from domain.order import Order
from domain.values import DEFAULT_INSTRUMENTS, Liquidity, OrderType, Side, TimeInForce
from infra.drills.audit import INPUT_TOPICS, compare, recompute
from tests.unit.shard_harness import BTC, SHARD, Harness

BUY, SELL = Side.BUY, Side.SELL
ETH = "ETHUSDT"
PRICE = 500_000


def audit(h: Harness, events: list[Aggregate.Event] | None = None) -> list[str]:
    expected = recompute(h.events if events is None else events, SHARD, DEFAULT_INSTRUMENTS)
    return compare(expected, h.engine)


def eth(h: Harness, owner: str, cid: str, side: Side, lots: int, price: int) -> None:
    h.run(PlaceOrder(owner, cid, ETH, side, OrderType.LIMIT, lots, price))


@pytest.fixture
def h() -> Harness:
    """Partial fills, a multi-maker sweep, flips, IOC, cancels, two symbols, a withdrawal."""
    h = Harness()
    h.fund("alice", "bob", "carol", "dave", amount="100000")
    h.run(Withdraw("dave", Decimal("123.45678901")))
    h.limit("alice", "a1", SELL, 4, PRICE)
    h.limit("bob", "b1", BUY, 10, PRICE + 10)  # partial: 4 filled, 6 rest
    h.limit("carol", "c1", SELL, 8, PRICE + 10)  # fills bob's 6, rests 2
    h.limit("alice", "a2", BUY, 20, PRICE - 100)
    h.limit("bob", "b2", SELL, 15, PRICE - 100)  # bob +10 -> -5, alice -4 -> +11
    h.run(CancelOrder("carol", Order.create_id(h.engine.account("carol").id, "c1")))  # type: ignore[union-attr]
    # dave holds the best and the third level, carol the second: one sweep, three makers
    h.limit("dave", "d1", SELL, 3, PRICE - 50)
    h.limit("carol", "c2", SELL, 2, PRICE - 40)
    h.limit("dave", "d2", SELL, 7, PRICE - 30)
    h.limit("alice", "a3", BUY, 11, PRICE - 30, TimeInForce.IOC)  # sweeps all three
    h.market("bob", "b3", BUY, 9)  # takes dave's last lot, the rest expires
    h.limit("dave", "d3", BUY, 7, PRICE + 7)
    h.limit("alice", "a4", SELL, 30, PRICE + 7)  # alice flips again, rests the rest
    eth(h, "carol", "ce1", SELL, 5, 300_000)
    eth(h, "dave", "de1", BUY, 3, 300_001)
    eth(h, "bob", "be1", BUY, 2, 299_500)
    eth(h, "dave", "de2", SELL, 1, 299_000)  # dave reduces against bob
    h.check()
    return h


def test_a_clean_history_has_no_mismatches(h: Harness) -> None:
    expected = recompute(h.events, SHARD, DEFAULT_INSTRUMENTS)
    assert compare(expected, h.engine) == []
    fills = [e for e in h.events if isinstance(e, Order.Filled)]
    assert expected.trades * 2 == len(fills) == 2 * len({f.trade_id for f in fills})
    assert expected.trades >= 10
    sizes = {(p.owner, p.symbol): p.size_lots for p in h.engine.positions()}
    assert sizes[("bob", BTC)] < 0 < sizes[("alice", BTC)] and sizes[("dave", ETH)] == 2
    assert any(t.realized_ticklots for t in expected.positions.values())
    fee_account = h.engine.fee_account()
    assert fee_account is not None and fee_account.balance > 0
    assert any(o.filled_lots for o in h.engine.open_orders())


@pytest.mark.parametrize("seed", range(6))
def test_random_flows_recompute_exactly(seed: int) -> None:
    rng = random.Random(seed)
    owners = ("ann", "ben", "cat", "dan", "eve")
    h = Harness()
    h.fund(*owners, amount="50000")
    placed: list[tuple[str, str]] = []
    for n in range(300):
        owner = rng.choice(owners)
        roll = rng.random()
        symbol, mid = (BTC, PRICE) if rng.random() < 0.7 else (ETH, 300_000)
        try:
            if roll < 0.8:
                market = rng.random() < 0.1
                h.run(
                    PlaceOrder(
                        owner,
                        f"o{n}",
                        symbol,
                        rng.choice((BUY, SELL)),
                        OrderType.MARKET if market else OrderType.LIMIT,
                        rng.randint(1, 25),
                        None if market else mid + rng.randint(-30, 30),
                        rng.choice([TimeInForce.GTC] * 5 + [TimeInForce.IOC, TimeInForce.FOK]),
                        reduce_only=rng.random() < 0.1,
                        leverage=10,
                    )
                )
                placed.append((owner, f"o{n}"))
            elif roll < 0.9 and placed:
                who, cid = rng.choice(placed)
                h.run(CancelOrder(who, Order.create_id(h.engine.account(who).id, cid)))  # type: ignore[union-attr]
            elif roll < 0.95:
                h.run(Deposit(owner, Decimal(rng.randint(1, 9 * 10**10)).scaleb(-8)))
            else:
                h.run(Withdraw(owner, Decimal(rng.randint(1, 300))))
        except DomainError:
            continue
    assert audit(h) == []


def test_a_dropped_fill_is_reported_as_one_sided(h: Harness) -> None:
    victim = next(
        e for e in h.events if isinstance(e, Order.Filled) and e.liquidity is Liquidity.MAKER
    )
    lines = audit(h, [e for e in h.events if e is not victim])
    assert any(
        f"trade {victim.trade_id}: seen on one side only (TAKER fill" in line
        and str(victim.originator_id) in line
        for line in lines
    ), lines
    # the trade is not counted, so both sides' positions and balances disagree with the shard
    assert any("size_lots expected" in line for line in lines)
    assert any("balance expected" in line for line in lines)


def test_an_altered_balance_names_account_field_and_both_values(h: Harness) -> None:
    account = h.engine.account("carol")
    assert account is not None
    right = account.balance
    account.balance += Decimal("0.01")
    lines = audit(h)
    assert (
        f"account {account.id} (carol): balance expected {right.normalize():f}, actual "
        f"{(right + Decimal('0.01')).normalize():f}" in lines
    )
    assert any(line.startswith("conservation: balances") for line in lines)


def test_an_altered_position_breaks_its_line_and_conservation(h: Harness) -> None:
    position = h.engine.position("dave", ETH)
    assert position is not None
    position.size_lots += 1
    lines = audit(h)
    assert any(
        f"position {position.id} (dave {ETH}): size_lots expected 2, actual 3" == line
        for line in lines
    ), lines
    assert f"conservation {ETH}: position sizes sum to 1 lots, not 0" in lines


def test_a_duplicated_trade_id_is_reported_and_counted_once(h: Harness) -> None:
    fill = next(e for e in h.events if isinstance(e, Order.Filled))
    lines = audit(h, [*h.events, fill])
    assert lines == [
        f"trade {fill.trade_id}: duplicated trade id, 3 fills recorded "
        f"({2 if fill.liquidity is Liquidity.MAKER else 1} maker, "
        f"{1 if fill.liquidity is Liquidity.MAKER else 2} taker)"
    ]


def test_sides_that_disagree_on_price_are_not_counted(h: Harness) -> None:
    fill = next(
        e for e in h.events if isinstance(e, Order.Filled) and e.liquidity is Liquidity.TAKER
    )
    forged = object.__new__(Order.Filled)
    object.__setattr__(forged, "__dict__", {**fill.__dict__, "price_ticks": fill.price_ticks + 1})
    events = [forged if e is fill else e for e in h.events]
    lines = audit(h, events)
    assert any(
        line.startswith(f"trade {fill.trade_id}: sides disagree: maker ") and "not counted" in line
        for line in lines
    ), lines


def test_the_recomputation_reads_no_applied_state() -> None:
    """Settled, Traded, FeeCollected and margins are what is audited, never an input."""
    names = {topic.rsplit(":", 1)[1] for topic in INPUT_TOPICS}
    assert names == {
        "Account.Opened",
        "Account.Deposited",
        "Account.Withdrawn",
        "Order.Placed",
        "Order.Filled",
    }
