"""The history overlay's fill from the read models' tracking row: a short tail is indexed at
once, a long one in the background, and the built overlay takes over unless the shard set
records aside meanwhile (then it is built again, up to the shard's seq now); a recovery the undo
journal cannot follow fills it again from the tracking row, never from the start of the WAL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast
from uuid import UUID

import pytest
from eventsourcing.domain import Aggregate

from application.shard.app import ShardApp
from application.wal.records import RecordedEvent, WalRecord
from application.wal.writer import ShardWriter
from domain.commands import Deposit, PlaceOrder
from domain.engine import ShardEngine
from domain.values import DEFAULT_INSTRUMENTS, OrderType, Side
from infra.api.activity import ShardActivity
from infra.api.facade import Facade
from infra.api.keys import KeyStore
from infra.api.leadership import StaticLeadership

SHARD = "shard-1"


def _placed(account: str, client_order_id: str) -> Aggregate.Event:
    """The Order.Placed event of a resting order, as the engine produces it."""
    engine = ShardEngine(SHARD, DEFAULT_INSTRUMENTS)
    engine.execute(Deposit(account, Decimal("1000000"))).touched[0].collect_events()
    result = engine.execute(
        PlaceOrder(account, client_order_id, "BTCUSDT", Side.BUY, OrderType.LIMIT, 1, 400_000)
    )
    assert result.order is not None
    [event] = result.order.collect_events()
    return cast(Aggregate.Event, event)


@dataclass
class Store:
    """The shard's WAL: one order placed per seq from `first`; iter_records as the real one."""

    first: int = 101
    last: int = 0
    events: dict[UUID, Aggregate.Event] = field(default_factory=dict)
    reads: list[tuple[int, int | None]] = field(default_factory=list)

    def iter_records(
        self, shard_id: str, after_seq: int, *, upto_seq: int | None = None, **kwargs: Any
    ) -> list[WalRecord]:
        self.reads.append((after_seq, upto_seq))
        end = self.last if upto_seq is None else min(upto_seq, self.last)
        records = []
        for seq in range(max(after_seq + 1, self.first), end + 1):
            self.events.setdefault(_id_of(seq), _placed("alice", f"o{seq}"))
            records.append(
                WalRecord.seal(
                    shard_id=shard_id,
                    epoch=1,
                    seq=seq,
                    command_type="PlaceOrder",
                    command_key=None,
                    recorded_at_us=seq,
                    events=[RecordedEvent(_id_of(seq), 1, "domain.order:Order.Placed", b"{}")],
                )
            )
        return records


def _id_of(seq: int) -> UUID:
    return UUID(int=seq)


class Engine:
    def open_orders(self) -> list[Any]:
        return []


@dataclass
class App:
    seq: int
    instruments: tuple[Any, ...] = DEFAULT_INSTRUMENTS
    needs_recovery: bool = False
    on_recovered: Any = None
    store: Store = field(default_factory=Store)
    engine: Engine = field(default_factory=Engine)

    def decode_event(self, recorded: RecordedEvent) -> Aggregate.Event:
        return self.store.events[recorded.originator_id]

    def recover(self) -> None:
        self.needs_recovery = False
        if self.on_recovered is not None:
            self.on_recovered(self.seq)


@dataclass
class Writer:
    """Runs a query at once, on the caller's thread."""

    app: App

    def query(self, read: Callable[[Any], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_result(read(self.app))
        return future


def make_facade(app: App, *, sync_records: int = 50_000, tracked: int = 0) -> Facade:
    writer = cast(ShardWriter, Writer(app))
    facade = Facade(
        {SHARD: writer},
        StaticLeadership(leads=True),
        cast(KeyStore, None),
        overlay_sync_records=sync_records,
    )
    facade._tracked[SHARD] = tracked
    return facade


def facade_warming(upto: int) -> tuple[Facade, App]:
    app = App(seq=upto)
    facade = make_facade(app)
    facade.activity[SHARD] = ShardActivity(SHARD, DEFAULT_INSTRUMENTS, seq=upto)
    facade._warming[SHARD] = upto
    return facade, app


def test_a_start_indexes_only_the_records_after_the_tracking_row() -> None:
    app = App(seq=130)
    app.store.last = 130
    facade = make_facade(app, tracked=120)
    facade._fill(SHARD, cast(ShardApp, app))
    assert app.store.reads == [(120, 130)] and not facade.warming_up
    assert facade.activity[SHARD].floor == 120 and facade.activity[SHARD].seq == 130
    assert len(facade.activity[SHARD].account_orders("alice")) == 10
    facade._trim(SHARD, 125, cast(ShardApp, app))
    assert facade.overlay_size == 5


def test_a_tail_longer_than_the_setting_is_indexed_in_the_background(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = App(seq=130)
    facade = make_facade(app, sync_records=20, tracked=100)
    builds: list[tuple[int, int]] = []
    monkeypatch.setattr(facade, "_warm", lambda shard, floor, upto: builds.append((floor, upto)))
    facade._fill(SHARD, cast(ShardApp, app))
    for thread in threading.enumerate():
        if thread.name.startswith("history-overlay-"):
            thread.join(5)
    assert builds == [(100, 130)] and facade.warming_up and app.store.reads == []


def test_the_built_index_takes_over_and_catches_up() -> None:
    facade, app = facade_warming(100)
    app.seq = app.store.last = 130  # 30 orders placed since the warm-up began
    built = ShardActivity(SHARD, DEFAULT_INSTRUMENTS, seq=100)
    assert facade._take_over(SHARD, built, cast(ShardApp, app)) is None
    assert facade.activity[SHARD] is built and not facade.warming_up
    # what was committed meanwhile is indexed before the built index answers
    assert app.store.reads == [(100, 130)]
    assert built.seq == 130
    assert len(built.account_orders("alice")) == 30


def test_records_set_aside_during_the_warm_up_start_it_again() -> None:
    facade, app = facade_warming(100)
    # the region rejoined: what it wrote after seq 80 went to quarantine, the shard recovered
    app.seq = 80
    facade._recovered(SHARD, 80)
    built = ShardActivity(SHARD, DEFAULT_INSTRUMENTS, seq=100)
    assert facade._take_over(SHARD, built, cast(ShardApp, app)) == (0, 80)
    assert facade.warming_up and facade.activity[SHARD] is not built
    again = ShardActivity(SHARD, DEFAULT_INSTRUMENTS, seq=80)
    assert facade._take_over(SHARD, again, cast(ShardApp, app)) is None
    assert facade.activity[SHARD] is again


def test_a_failed_batch_during_the_warm_up_keeps_it() -> None:
    facade, app = facade_warming(100)
    facade._recovered(SHARD, 100)  # the durable seq never goes below the warm-up start
    built = ShardActivity(SHARD, DEFAULT_INSTRUMENTS, seq=100)
    assert facade._take_over(SHARD, built, cast(ShardApp, app)) is None


def test_a_recovery_the_journal_cannot_follow_fills_again_from_the_tracking_row() -> None:
    app = App(seq=100)
    app.store.last = 100
    facade = make_facade(app, tracked=70)
    facade.activity[SHARD] = ShardActivity(SHARD, DEFAULT_INSTRUMENTS, seq=100)
    app.seq = 80  # recovered below what the index holds, and below its journal
    facade._recovered(SHARD, 80)
    assert not facade.warming_up
    assert app.store.reads == [(70, 80)]  # the tail after the tracking row, not the whole WAL
    assert facade.activity[SHARD].seq == 80 and facade.activity[SHARD].floor == 70


def test_a_demotion_that_recovers_first_starts_one_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = App(seq=100)
    facade = make_facade(app, sync_records=10, tracked=50)
    builds: list[tuple[int, int]] = []
    monkeypatch.setattr(facade, "_warm", lambda shard, floor, upto: builds.append((floor, upto)))
    facade.activity[SHARD] = ShardActivity(SHARD, DEFAULT_INSTRUMENTS, seq=120)
    app.needs_recovery = True  # its recovery's hook begins a build itself
    facade.reindex(SHARD)
    for thread in threading.enumerate():
        if thread.name.startswith("history-overlay-"):
            thread.join(5)
    assert builds == [(50, 100)] and facade.activity[SHARD].seq == 100
