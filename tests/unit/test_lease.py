"""The leader's lease: sized from the session ZooKeeper negotiated, renewed by a read after
sync(), and checked again before an acknowledgement leaves."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any, cast

import pytest
from kazoo.protocol.connection import ConnectionHandler
from kazoo.protocol.serialization import Connect

from application.shard.app import PreparedBatch, ShardApp
from application.wal.writer import LeaseLapsedError, NotLeaderError, ShardWriter
from domain.commands import Command
from domain.values import DEFAULT_INSTRUMENTS
from infra.api.errors import ApiError
from infra.api.facade import Facade
from infra.api.keys import KeyStore
from infra.api.leadership import StaticLeadership
from infra.coordination.zookeeper import Coordinator

WAIT_S = 5.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _handshake(coord: Coordinator) -> None:
    """kazoo's connect request for the session asked for; the server answers (`clamped`)."""
    request = Connect(0, 0, 60_000, 0, b"\x00" * 16, False)
    coord.zk._connection._invoke(1.0, request)


@pytest.fixture
def clamped(monkeypatch: pytest.MonkeyPatch) -> int:
    """A server that clamps every requested session to 4 s (maxSessionTimeout = 20 ticks)."""
    negotiated_ms = 4000

    def invoke(self: Any, timeout: float, request: Any, xid: int | None = None) -> Any:
        assert isinstance(request, Connect)
        return Connect(0, 0, negotiated_ms, 0x1234, b"\x00" * 16, False), 0

    monkeypatch.setattr(ConnectionHandler, "_invoke", invoke)
    return negotiated_ms


def test_the_lease_is_sized_from_the_negotiated_session_not_the_requested_one(
    clamped: int,
) -> None:
    coord = Coordinator(
        "127.0.0.1:1", "a", "http://a", root="/exdr/t", session_timeout_s=60.0, clock=Clock()
    )
    _handshake(coord)
    negotiated_s = clamped / 1000
    assert coord.session_timeout_s == negotiated_s
    assert coord.lease_s < negotiated_s - (coord.sync_margin_s + coord.clock_margin_s) + 1e-9
    assert coord.lease_s > negotiated_s / 2  # as long as the bound allows (elections fit)


def test_an_explicit_lease_never_exceeds_the_negotiated_bound(clamped: int) -> None:
    coord = Coordinator(
        "127.0.0.1:1",
        "a",
        "http://a",
        root="/exdr/t",
        session_timeout_s=60.0,
        lease_s=20.0,
        clock=Clock(),
    )
    assert coord.lease_s == 20.0  # before the handshake: what was asked
    _handshake(coord)
    assert coord.lease_s <= clamped / 1000 - (coord.sync_margin_s + coord.clock_margin_s)


class FakeZk:
    """Records the renewal's calls; a sync takes `sync_s` of the fake clock."""

    def __init__(self, coord: Coordinator, clock: Clock, sync_s: float) -> None:
        self.coord = coord
        self.clock = clock
        self.sync_s = sync_s
        self.calls: list[str] = []

    def sync(self, path: str) -> str:
        self.calls.append(f"sync {path}")
        self.clock.now += self.sync_s
        return path

    def get(self, path: str) -> tuple[bytes, object]:
        self.calls.append(f"get {path}")
        self.coord._stop.set()  # one renewal round
        return b'{"region": "a"}', object()


def test_renewal_syncs_before_it_reads_and_counts_from_before_the_sync() -> None:
    clock = Clock()
    coord = Coordinator(
        "127.0.0.1:1", "a", "http://a", root="/exdr/t", session_timeout_s=2.0, clock=clock
    )
    fake = FakeZk(coord, clock, sync_s=0.3)
    coord.zk = cast(Any, fake)
    coord._leading.add("s1")
    started = clock.now
    coord._renew_loop()
    leader = coord._path("s1", "leader")
    assert fake.calls == [f"sync {leader}", f"get {leader}"]
    assert coord._lease_until["s1"] == pytest.approx(started + coord.lease_s)
    clock.now = started + coord.lease_s - 0.01
    assert coord.is_leader("s1")
    clock.now = started + coord.lease_s
    assert not coord.is_leader("s1")


class OneShotStore:
    """A ShardApp stand-in whose commit lets the test lapse the lease before the ack."""

    shard_id = "shard-1"
    background_checkpoint = None
    checkpoint_due = False

    def __init__(self, on_commit: Any) -> None:
        self.on_commit = on_commit

    def enable_key_filter(self) -> None:
        pass

    def prepare(self, commands: Sequence[Command], presenters: Any = None) -> PreparedBatch:
        return PreparedBatch(results=list(commands), first_seq=1)

    def commit(self, batch: PreparedBatch) -> None:
        self.on_commit()
        batch.committed = True

    def fail(self, batch: PreparedBatch, exc: BaseException) -> None:
        batch.failed = True


def test_no_acknowledgement_leaves_once_the_lease_lapsed_after_dispatch() -> None:
    leads = threading.Event()
    leads.set()
    store = OneShotStore(on_commit=leads.clear)  # the lease runs out while the batch commits
    writer = ShardWriter(cast(ShardApp, store))
    writer.guard = leads.is_set
    writer.start()
    try:
        future: Future[Any] = writer.submit_presented(cast(Command, "order"), None)
        with pytest.raises(LeaseLapsedError):
            future.result(WAIT_S)
        # refused at dispatch too, before anything is prepared
        with pytest.raises(NotLeaderError):
            writer.submit_presented(cast(Command, "next"), None).result(WAIT_S)
    finally:
        writer.stop()


def test_an_acknowledgement_leaves_while_the_lease_holds() -> None:
    store = OneShotStore(on_commit=lambda: None)
    writer = ShardWriter(cast(ShardApp, store))
    writer.guard = lambda: True
    writer.start()
    try:
        assert writer.submit_presented(cast(Command, "order"), None).result(WAIT_S) == "order"
    finally:
        writer.stop()


class LapsingWriter:
    """A writer whose command committed but whose lease lapsed before the acknowledgement."""

    def __init__(self) -> None:
        self.app = SimpleNamespace(
            instruments=DEFAULT_INSTRUMENTS, on_recovered=None, shard_id="shard-1"
        )

    def submit_presented(self, command: Command, present: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_exception(LeaseLapsedError("lease lapsed before the acknowledgement"))
        return future


def test_the_facade_answers_a_lapsed_lease_with_503() -> None:
    facade = Facade(
        {"shard-1": cast(ShardWriter, LapsingWriter())},
        StaticLeadership(leads=True),  # the watchdog still thinks it leads: the writer knows
        cast(KeyStore, None),
    )
    with pytest.raises(ApiError) as refused:
        asyncio.run(facade.submit("shard-1", cast(Command, "order"), lambda outcome: outcome))
    assert (refused.value.status, refused.value.code) == (503, "lease_lapsed")


def test_a_hand_over_still_acknowledges_what_it_took_while_the_lease_holds() -> None:
    taking = threading.Event()
    taking.set()
    store = OneShotStore(on_commit=taking.clear)  # the hand-over stops intake meanwhile
    writer = ShardWriter(cast(ShardApp, store))
    writer.guard = taking.is_set
    writer.ack_guard = lambda: True  # the lease holds
    writer.start()
    try:
        assert writer.submit_presented(cast(Command, "order"), None).result(WAIT_S) == "order"
    finally:
        writer.stop()
