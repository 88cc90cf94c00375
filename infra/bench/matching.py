"""Matching benchmark: the order book alone, then the same flow through ShardEngine.execute.

The flow is a seeded mix of mostly passive limit orders around a mid price, marketable
limit and market orders, and cancels of resting orders, the shape a busy perpetual sees.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

from domain.account import Account
from domain.commands import CancelOrder, Command, Deposit, PlaceOrder
from domain.engine import ShardEngine
from domain.errors import DomainError
from domain.order import Order
from domain.orderbook import OrderBook
from domain.values import DEFAULT_INSTRUMENTS, OrderType, Side

SHARD = "bench"
SYMBOL = "BTCUSDT"
MID_TICKS = 500_000
ACCOUNTS = 200
PASSIVE_SHARE = 0.70
CANCEL_SHARE = 0.18


@dataclass(frozen=True, slots=True)
class FlowItem:
    """One step of the flow, in the book's terms and as a domain command."""

    kind: str  # "limit", "market" or "cancel"
    order_id: UUID
    owner: str
    side: Side
    price_ticks: int | None
    quantity_lots: int
    command: Command


def generate_flow(orders: int, seed: int) -> list[FlowItem]:
    """Seeded flow; cancels target orders that are still resting in a shadow book."""
    rng = random.Random(seed)
    owners = [f"trader-{n}" for n in range(ACCOUNTS)]
    account_ids = {o: Account.create_id(SHARD, o) for o in owners}
    shadow = OrderBook(SYMBOL)
    resting: list[UUID] = []
    flow: list[FlowItem] = []
    for n in range(orders):
        owner = owners[rng.randrange(ACCOUNTS)]
        roll = rng.random()
        if roll < CANCEL_SHARE and resting:
            index = rng.randrange(len(resting))
            resting[index], resting[-1] = resting[-1], resting[index]
            order_id = resting.pop()
            entry = shadow.get(order_id)
            if entry is not None:
                shadow.cancel(order_id)
                flow.append(
                    FlowItem(
                        "cancel",
                        order_id,
                        entry.owner,
                        entry.side,
                        None,
                        0,
                        CancelOrder(entry.owner, order_id),
                    )
                )
                continue
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        lots = rng.randint(1, 20)
        client_order_id = f"c{n}"
        order_id = Order.create_id(account_ids[owner], client_order_id)
        if roll < CANCEL_SHARE + PASSIVE_SHARE:
            offset = rng.randint(1, 40)
            price = MID_TICKS - offset if side is Side.BUY else MID_TICKS + offset
            command: Command = PlaceOrder(
                owner, client_order_id, SYMBOL, side, OrderType.LIMIT, lots, price
            )
            flow.append(FlowItem("limit", order_id, owner, side, price, lots, command))
        elif roll < 0.96:
            price = MID_TICKS + 10 if side is Side.BUY else MID_TICKS - 10
            command = PlaceOrder(owner, client_order_id, SYMBOL, side, OrderType.LIMIT, lots, price)
            flow.append(FlowItem("limit", order_id, owner, side, price, lots, command))
        else:
            command = PlaceOrder(owner, client_order_id, SYMBOL, side, OrderType.MARKET, lots)
            flow.append(FlowItem("market", order_id, owner, side, None, lots, command))
        item = flow[-1]
        if shadow.place(order_id, owner, side, item.price_ticks, lots, n)[2]:
            resting.append(order_id)
    return flow


def run_book(flow: list[FlowItem]) -> float:
    """Orders per second through the OrderBook alone."""
    book = OrderBook(SYMBOL)
    place, cancel, get = book.place, book.cancel, book.get
    started = time.perf_counter()
    for priority, item in enumerate(flow):
        if item.kind == "cancel":
            if get(item.order_id) is not None:
                cancel(item.order_id)
            continue
        place(item.order_id, item.owner, item.side, item.price_ticks, item.quantity_lots, priority)
    return len(flow) / (time.perf_counter() - started)


def run_domain(flow: list[FlowItem]) -> tuple[float, list[int]]:
    """Orders per second through ShardEngine.execute, with per-command latencies in ns."""
    engine = ShardEngine(SHARD, DEFAULT_INSTRUMENTS)
    for n in range(ACCOUNTS):
        result = engine.execute(Deposit(f"trader-{n}", Decimal(10) ** 12))
        for aggregate in result.touched:
            aggregate.collect_events()
    latencies: list[int] = []
    clock = time.perf_counter_ns
    execute = engine.execute
    started = time.perf_counter()
    for item in flow:
        t0 = clock()
        try:
            result = execute(item.command)
        except DomainError:
            pass
        else:
            for aggregate in result.touched:
                aggregate.collect_events()
        latencies.append(clock() - t0)
    elapsed = time.perf_counter() - started
    engine.validate_internal_state()
    return len(flow) / elapsed, latencies


@contextmanager
def matching_gc() -> Iterator[None]:
    """GC settings of a matching process: the book keeps ~10^5 live entries, and default
    thresholds rescan them every few hundred allocations (about a third of book time)."""
    old = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


def run(orders: int, seed: int = 1) -> dict[str, float | int]:
    """Benchmark figures for `exchange-dr bench matching`."""
    flow = generate_flow(orders, seed)
    with matching_gc():
        book_rate = run_book(flow)
        domain_rate, latencies = run_domain(flow)
    latencies.sort()
    return {
        "orders": len(flow),
        "book_orders_per_second": round(book_rate, 1),
        "domain_orders_per_second": round(domain_rate, 1),
        "p50_us": latencies[len(latencies) // 2] / 1000,
        "p99_us": latencies[min(len(latencies) - 1, len(latencies) * 99 // 100)] / 1000,
    }


if __name__ == "__main__":
    print(run(200_000))
