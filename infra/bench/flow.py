"""Generated order flow for demos, benchmarks and crash tests: seeded, realistic, reproducible."""

from __future__ import annotations

import random
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
