"""Listings merged from the read models and the overlay: for any tracking row, paging through
the merge gives exactly the orders and fills of the whole history, in placement and trade order,
with each order's newest view; nothing twice across the seam, nothing missing."""

from __future__ import annotations

import copy
import random
from decimal import Decimal
from uuid import UUID

import pytest

from application.shard.app import Outcome
from application.views import FillView, OrderView
from domain.commands import CancelOrder, Command, Deposit, PlaceOrder
from domain.engine import ShardEngine
from domain.errors import DomainError
from domain.values import DEFAULT_INSTRUMENTS, OrderType, Side, TimeInForce
from infra.api.activity import ShardActivity, fill_position
from infra.api.history import FillSlice, OrderSlice, merge_fills, merge_orders, wanted

SHARD = "shard-t"
ACCOUNTS = ("alice", "bob", "carol")


class History:
    """An engine whose outcomes feed a never-trimmed overlay (the truth) and a trimmed one."""

    def __init__(self) -> None:
        self.engine = ShardEngine(SHARD, DEFAULT_INSTRUMENTS)
        self.truth = ShardActivity(SHARD, DEFAULT_INSTRUMENTS)
        self.overlay = ShardActivity(SHARD, DEFAULT_INSTRUMENTS)
        self.seq = 0
        self.placed: dict[UUID, int] = {}
        for account in ACCOUNTS:
            self.engine.execute(Deposit(account, Decimal("1000000")))

    def run(self, command: Command) -> None:
        try:
            result = self.engine.execute(command)
        except DomainError:
            return
        for aggregate in result.touched:
            aggregate.collect_events()
        self.seq += 1
        outcome = Outcome(self.seq, command, result, result.order)
        self.truth.record(outcome)
        self.overlay.record(outcome)
        if result.order is not None and isinstance(command, PlaceOrder):
            self.placed[result.order.id] = self.seq

    def random_command(self, rng: random.Random) -> None:
        account = rng.choice(ACCOUNTS)
        open_ids = [v.order_id for v in self.truth.orders.values() if v.is_open]
        if open_ids and rng.random() < 0.3:
            order_id = rng.choice(open_ids)
            self.run(CancelOrder(self.truth.orders[order_id].account, order_id))
            return
        self.run(
            PlaceOrder(
                account,
                f"c{self.seq}-{rng.random()}",
                "BTCUSDT",
                rng.choice((Side.BUY, Side.SELL)),
                OrderType.LIMIT,
                rng.randint(1, 4),
                500_000 + rng.randint(-8, 8),
                time_in_force=TimeInForce.IOC if rng.random() < 0.3 else TimeInForce.GTC,
            )
        )


class FakeReadModels:
    """The read models as they stood at the tracking row: the views and fills up to it."""

    def __init__(self, history: History) -> None:
        self.tracked = history.seq
        self.orders = copy.deepcopy(history.truth.orders)
        self.placed = dict(history.placed)
        self.fills = copy.deepcopy(history.truth._fills)

    def order_slice(
        self, account: str, status: str | None, after: int, limit: int, ids: list[UUID]
    ) -> OrderSlice:
        rows = sorted(
            (
                (view, self.placed[view.order_id])
                for view in self.orders.values()
                if view.account == account
                and self.placed[view.order_id] > after
                and (status is None or view.status == status)
            ),
            key=lambda row: row[1],
        )[:limit]
        by_id = {i: (self.orders[i], self.placed[i]) for i in ids if i in self.orders}
        return OrderSlice(tuple(rows), len(rows) < limit, by_id)

    def fill_slice(self, account: str, after: int, limit: int) -> FillSlice:
        fills = [f for f in self.fills.get(account, []) if fill_position(f) > after]
        maker = tuple(f for f in fills if str(f.liquidity) == "MAKER")[:limit]
        taker = tuple(f for f in fills if str(f.liquidity) == "TAKER")[:limit]
        return FillSlice(maker, len(maker) < limit, taker, len(taker) < limit)


def page_orders(
    sql: FakeReadModels, overlay: ShardActivity, account: str, status: str | None, limit: int
) -> list[OrderView]:
    found: list[OrderView] = []
    after: int | None = 0
    while after is not None:
        mine = overlay.account_orders(account)
        rows, ids = wanted(mine, sql.tracked, limit)
        slice_ = sql.order_slice(account, status, after, rows, ids)
        page, after = merge_orders(
            slice_, mine, symbol=None, status=status, after=after, limit=limit
        )
        assert len(page) <= limit
        found.extend(page)
    return found


def page_fills(
    sql: FakeReadModels, overlay: ShardActivity, account: str, limit: int
) -> list[FillView]:
    found: list[FillView] = []
    after: int | None = 0
    while after is not None:
        page, after = merge_fills(
            sql.fill_slice(account, after, limit + 1),
            overlay.account_fills(account),
            symbol=None,
            after=after,
            limit=limit,
        )
        found.extend(page)
    return found


@pytest.mark.parametrize("projected_last", [True, False])
@pytest.mark.parametrize("seed", range(30))
def test_paging_across_the_seam_gives_the_whole_history(seed: int, projected_last: bool) -> None:
    """The overlay trimmed at one tracking row; then, in either order, the overlay read and the
    read models read at a later tracking row (the projector moved, or lags behind the overlay):
    the merge is the history as of the later of the two reads."""
    rng = random.Random(seed)
    history = History()
    for _ in range(rng.randint(0, 60)):
        history.random_command(rng)
    history.overlay.trim(history.seq)
    for _ in range(rng.randint(0, 40)):
        history.random_command(rng)
    if projected_last:
        overlay = copy.deepcopy(history.overlay)  # read first
        for _ in range(rng.randint(0, 20)):  # committed and projected before the SQL read
            history.random_command(rng)
        read_models = FakeReadModels(history)
    else:
        read_models = FakeReadModels(history)  # the projector lags behind the overlay's read
        for _ in range(rng.randint(0, 40)):
            history.random_command(rng)
        overlay = copy.deepcopy(history.overlay)
    limit = rng.randint(1, 7)
    for account in ACCOUNTS:
        for status in (None, "NEW", "FILLED", "CANCELLED", "PARTIALLY_FILLED", "EXPIRED"):
            expected = sorted(
                (
                    v
                    for v in history.truth.orders.values()
                    if v.account == account and (status is None or v.status == status)
                ),
                key=lambda v: history.placed[v.order_id],
            )
            assert page_orders(read_models, overlay, account, status, limit) == expected
        expected_fills = sorted(history.truth._fills.get(account, []), key=fill_position)
        assert page_fills(read_models, overlay, account, limit) == expected_fills


def test_an_order_whose_status_changed_after_projection_moves_between_filters() -> None:
    history = History()
    history.run(PlaceOrder("alice", "a1", "BTCUSDT", Side.SELL, OrderType.LIMIT, 2, 500_000))
    read_models = FakeReadModels(history)  # projected while NEW
    history.overlay.trim(history.seq)
    history.run(PlaceOrder("bob", "b1", "BTCUSDT", Side.BUY, OrderType.LIMIT, 2, 500_000))
    assert page_orders(read_models, history.overlay, "alice", "NEW", 10) == []
    [filled] = page_orders(read_models, history.overlay, "alice", "FILLED", 10)
    assert filled.client_order_id == "a1" and filled.seq == history.seq
