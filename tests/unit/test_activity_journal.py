"""The history overlay's undo journal: taking back commands beyond a seq restores the overlay as
it was at that seq, and says so when the journal no longer reaches that far; trimming behind the
read models' tracking row keeps only the unprojected tail."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest

from application.shard.app import Outcome
from domain.commands import Command, Deposit, PlaceOrder
from domain.engine import ShardEngine
from domain.values import DEFAULT_INSTRUMENTS, OrderType, Side
from infra.api import activity as activity_module
from infra.api.activity import ShardActivity

SHARD = "shard-t"


class Indexed:
    """An engine whose outcomes feed an activity index, one seq per command."""

    def __init__(self) -> None:
        self.engine = ShardEngine(SHARD, DEFAULT_INSTRUMENTS)
        for account in ("alice", "bob", "carol", "dave"):
            self.engine.execute(Deposit(account, Decimal("1000000")))
        self.index = ShardActivity(SHARD, DEFAULT_INSTRUMENTS)
        self.seq = 0

    def run(self, command: Command) -> None:
        result = self.engine.execute(command)
        for aggregate in result.touched:
            aggregate.collect_events()
        self.seq += 1
        self.index.record(Outcome(self.seq, command, result, result.order))

    def place(self, account: str, cid: str, side: Side, lots: int, ticks: int = 500_000) -> None:
        self.run(PlaceOrder(account, cid, "BTCUSDT", side, OrderType.LIMIT, lots, ticks))

    def state(self) -> tuple[Any, ...]:
        index = self.index
        return copy.deepcopy(
            (index.orders, index._placed, index._order_ids, index._fills, index.seq)
        )


@pytest.fixture
def shard() -> Indexed:
    return Indexed()


def test_rollback_restores_the_index_as_it_was(shard: Indexed) -> None:
    shard.place("alice", "a1", Side.SELL, 5)
    shard.place("carol", "c1", Side.SELL, 5, 500_100)
    before, at = shard.state(), shard.seq
    # what a failed batch did: a new order, a fill of two makers, a cancel-free sweep
    shard.place("bob", "b1", Side.BUY, 7, 500_100)
    shard.place("alice", "a2", Side.BUY, 1, 400_000)
    assert shard.index.account_fills("bob")
    assert shard.index.rollback(at)
    assert shard.state() == before
    assert shard.index.account_fills("bob") == []


def test_rollback_beyond_the_journal_asks_for_a_rebuild(
    shard: Indexed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(activity_module, "UNDO_SEQS", 3)
    for n in range(6):
        shard.place("alice", f"a{n}", Side.SELL, 1, 500_000 + n)
    assert not shard.index.rollback(shard.seq - 4)
    before, at = shard.state(), shard.seq - 2
    assert shard.index.rollback(at)
    assert shard.state() != before and shard.index.seq == at
    assert len(shard.index.account_orders("alice")) == 4


def test_trim_keeps_only_what_follows_the_tracking_row(shard: Indexed) -> None:
    shard.place("alice", "a1", Side.SELL, 5)
    placed_at = shard.seq
    shard.place("bob", "b1", Side.BUY, 2, 500_000)  # fills 2 of alice's 5
    traded_at = shard.seq
    shard.place("carol", "c1", Side.SELL, 1, 600_000)
    index = shard.index
    assert index.size == 3 + 2

    assert index.trim(placed_at) == 0  # alice's order changed after: its newest view stays
    assert index.trim(traded_at) == 4  # both fills, bob's order, alice's order
    assert index.floor == traded_at
    assert [v.client_order_id for v, _ in index.account_orders("carol")] == ["c1"]
    assert index.account_orders("alice") == [] and index.account_fills("bob") == []
    assert index.size == 1

    # a later change of an order placed before the floor comes back, its placement unknown
    shard.place("dave", "d1", Side.BUY, 1, 500_000)
    [(view, placed)] = index.account_orders("alice")
    assert view.filled_quantity == Decimal("0.003") and placed is None
    [(_, dave_placed)] = index.account_orders("dave")
    assert dave_placed == shard.seq


def test_rollback_of_a_change_to_a_trimmed_order_leaves_it_to_the_read_models(
    shard: Indexed,
) -> None:
    shard.place("alice", "a1", Side.SELL, 5)
    shard.index.trim(shard.seq)
    before, at = shard.state(), shard.seq
    shard.place("bob", "b1", Side.BUY, 2, 500_000)
    assert len(shard.index.account_orders("alice")) == 1
    assert shard.index.rollback(at)
    assert shard.state() == before
