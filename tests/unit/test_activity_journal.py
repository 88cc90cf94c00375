"""The activity index's undo journal: taking back commands beyond a seq restores the index as it
was at that seq, and says so when the journal no longer reaches that far."""

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
        return copy.deepcopy((index.orders, index._order_ids, index._fills, index.seq))


@pytest.fixture
def shard() -> Indexed:
    indexed = Indexed()
    for account in ("alice", "bob", "carol"):
        indexed.run(Deposit(account, Decimal("1000000")))
    return indexed


def test_rollback_restores_the_index_as_it_was(shard: Indexed) -> None:
    shard.place("alice", "a1", Side.SELL, 5)
    shard.place("carol", "c1", Side.SELL, 5, 500_100)
    before, at = shard.state(), shard.seq
    # what a failed batch did: a new order, a fill of two makers, a cancel-free sweep
    shard.place("bob", "b1", Side.BUY, 7, 500_100)
    shard.place("alice", "a2", Side.BUY, 1, 400_000)
    assert shard.index.list_fills("bob", symbol=None, start=0, limit=10).items
    assert shard.index.rollback(at)
    assert shard.state() == before
    assert shard.index.list_fills("bob", symbol=None, start=0, limit=10).items == ()


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
    assert (
        len(shard.index.list_orders("alice", symbol=None, status=None, start=0, limit=10).items)
        == 4
    )
