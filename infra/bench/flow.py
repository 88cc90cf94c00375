"""Generated order flow for demos, benchmarks and crash tests: seeded, realistic, reproducible.

`steady_commands` is a market in steady state (open orders bounded whatever the length), for
what measures a long history; `generate_commands` keeps most orders resting (a book that fills
up), for tests and demos that want a deep book from few commands."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterator, Sequence
from decimal import Decimal
from uuid import UUID

from domain.account import Account
from domain.commands import CancelOrder, Command, Deposit, PlaceOrder
from domain.order import Order
from domain.values import Instrument, OrderType, Side, TimeInForce

MID_PRICES = {"BTCUSDT": Decimal("50000"), "ETHUSDT": Decimal("3000"), "SOLUSDT": Decimal("150")}


def owners(count: int) -> list[str]:
    return [f"trader-{i:04d}" for i in range(count)]


def generate_commands(
    shard_id: str,
    instruments: Sequence[Instrument],
    count: int,
    *,
    seed: int = 7,
    accounts: int = 50,
    deposit: Decimal = Decimal("10000000"),
    prefix: str = "c",
) -> Iterator[Command]:
    """Deposits for every account, then `count` commands: mostly passive limits, some takers.

    Mix: 70 % passive limit (GTC, some post-only), 10 % aggressive limit (GTC or IOC), 5 % market,
    15 % cancels of earlier orders. Order ids are derived the way the domain derives them, so
    cancels name real orders without asking the engine.
    """
    rng = random.Random(seed)
    names = owners(accounts)
    for name in names:
        yield Deposit(name, deposit)
    open_ids: list[tuple[str, UUID]] = []
    mids = {
        i.symbol: i.price_to_ticks(MID_PRICES.get(i.symbol, Decimal("100"))) for i in instruments
    }
    for n in range(count):
        inst = rng.choice(instruments)
        owner = rng.choice(names)
        roll = rng.random()
        mid = mids[inst.symbol]
        spread = max(1, mid // 2000)
        if roll < 0.15 and open_ids:
            who, order_id = open_ids.pop(rng.randrange(len(open_ids)))
            yield CancelOrder(who, order_id)
            continue
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        client_id = f"{prefix}{n}"
        qty = rng.randint(1, 20)
        if roll < 0.85:
            offset = rng.randint(1, 20) * spread
            price = mid - offset if side is Side.BUY else mid + offset
            yield PlaceOrder(
                owner,
                client_id,
                inst.symbol,
                side,
                OrderType.LIMIT,
                qty,
                price,
                TimeInForce.GTC,
                post_only=rng.random() < 0.2,
            )
            order_id = Order.create_id(Account.create_id(shard_id, owner), client_id)
            open_ids.append((owner, order_id))
            if len(open_ids) > 5000:
                open_ids.pop(0)
        elif roll < 0.95:
            offset = rng.randint(0, 5) * spread
            price = mid + offset if side is Side.BUY else mid - offset
            tif = TimeInForce.IOC if rng.random() < 0.5 else TimeInForce.GTC
            yield PlaceOrder(owner, client_id, inst.symbol, side, OrderType.LIMIT, qty, price, tif)
        else:
            yield PlaceOrder(owner, client_id, inst.symbol, side, OrderType.MARKET, qty)


def steady_commands(
    shard_id: str,
    instruments: Sequence[Instrument],
    count: int | None = None,
    *,
    seed: int = 7,
    accounts: int = 50,
    deposit: Decimal = Decimal("10000000"),
    prefix: str = "s",
    resting: int = 2000,
    fund_every: int = 20_000,
) -> Iterator[Command]:
    """A day of a market in steady state: the open orders stay near `resting` whatever `count`.

    As on a real venue most orders do not live long: makers quote a few spreads from the mid
    and pull most quotes again soon after (cancels pick among the newest), takers cross with
    IOC limits or market orders, which never rest; when the quotes the flow has placed reach
    `resting`, the oldest is cancelled before a new one is quoted. So what a shard holds open
    (books, margin, the checkpoint) is bounded while its history grows, which is what a
    benchmark of a long history has to model. The flow tracks the quotes it placed, not the
    fills: a cancel of a quote a taker has filled meanwhile is refused by the engine and stores
    nothing, and the quotes really open are at most the ones tracked.

    Mix once funded: 45 % quotes (GTC limits 1-20 spreads away from the mid, some post-only),
    37 % cancels of one of the newest 64 quotes of the symbol, 13 % IOC limits 0-5 spreads
    through the mid, 5 % market orders. Every account gets `deposit` first and again every
    `fund_every` commands (fees and losses are paid out of it). `count` None: without end.
    Prices are integer ticks from exact Decimal mids; quantities integer lots; seeded.
    """
    if resting < 1 or fund_every < 1:
        raise ValueError("steady flow: resting >= 1 and fund_every >= 1")
    rng = random.Random(seed)
    names = owners(accounts)
    quotes: dict[str, deque[tuple[str, UUID]]] = {i.symbol: deque() for i in instruments}
    open_quotes = 0
    mids = {
        i.symbol: i.price_to_ticks(MID_PRICES.get(i.symbol, Decimal("100"))) for i in instruments
    }
    n = 0
    while count is None or n < count:
        if n % fund_every == 0:
            for name in names:
                yield Deposit(name, deposit)
        n += 1
        inst = rng.choice(instruments)
        book = quotes[inst.symbol]
        mid = mids[inst.symbol]
        spread = max(1, mid // 2000)
        roll = rng.random()
        if open_quotes >= resting:
            fullest = max(quotes.values(), key=len)
            who, order_id = fullest.popleft()
            open_quotes -= 1
            yield CancelOrder(who, order_id)
            continue
        if roll < 0.37:
            if book:
                index = len(book) - 1 - rng.randrange(min(64, len(book)))
                who, order_id = book[index]
                del book[index]
                open_quotes -= 1
                yield CancelOrder(who, order_id)
            continue
        owner = rng.choice(names)
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        client_id = f"{prefix}{n}"
        qty = rng.randint(1, 20)
        if roll < 0.82:
            offset = rng.randint(1, 20) * spread
            price = mid - offset if side is Side.BUY else mid + offset
            yield PlaceOrder(
                owner,
                client_id,
                inst.symbol,
                side,
                OrderType.LIMIT,
                qty,
                price,
                TimeInForce.GTC,
                post_only=rng.random() < 0.2,
            )
            book.append((owner, Order.create_id(Account.create_id(shard_id, owner), client_id)))
            open_quotes += 1
        elif roll < 0.95:
            price = mid + rng.randint(0, 5) * spread * (1 if side is Side.BUY else -1)
            yield PlaceOrder(
                owner, client_id, inst.symbol, side, OrderType.LIMIT, qty, price, TimeInForce.IOC
            )
        else:
            yield PlaceOrder(owner, client_id, inst.symbol, side, OrderType.MARKET, qty)
