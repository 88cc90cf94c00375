"""A ShardController with no servers: the fake coordination (fake_coordination.py), a writer
thread of its own, a hot state that is only a seq and an epoch, a relay that only runs."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, cast

import httpx

from application.replication.sync_gate import ReplicationMode, SyncGate, SyncPolicy
from infra.failover.controller import ControllerContext, ShardController
from infra.failover.state import Role
from infra.settings import FailoverSettings
from projections.replication.replicator import ReplicationStats
from tests.unit.fake_coordination import FakeCoordination, FakeEnsemble

SHARD = "shard-1"


@dataclass
class FakeStore:
    """The region's WAL as a list of (seq, epoch)."""

    records: list[tuple[int, int]] = field(default_factory=list)
    relay_position: int = 0
    quarantined: list[tuple[int, int]] = field(default_factory=list)
    fork: int | None = None

    def save_relay_position(self, shard: str, seq: int) -> None:
        self.relay_position = seq

    def first_divergent_seq(self, shard: str, history: Any) -> int | None:
        return self.fork

    def quarantine_from(self, shard: str, seq: int, why: str) -> int:
        moved = [r for r in self.records if r[0] >= seq]
        self.records = [r for r in self.records if r[0] < seq]
        self.quarantined += moved
        return len(moved)


@dataclass
class FakeApp:
    shard_id: str = SHARD
    epoch: int = 1
    store: FakeStore = field(default_factory=FakeStore)
    needs_recovery: bool = False
    log_only: bool = False  # a full replica, not a witness

    @property
    def seq(self) -> int:
        return self.store.records[-1][0] if self.store.records else 0

    def write(self, count: int, epoch: int | None = None) -> None:
        for _ in range(count):
            self.store.records.append((self.seq + 1, self.epoch if epoch is None else epoch))

    def recover(self) -> None:
        self.needs_recovery = False


class FakeWriter:
    """Runs queries one at a time on a thread of its own, like ShardWriter."""

    def __init__(self, app: FakeApp) -> None:
        self.app = app
        self._queue: queue.SimpleQueue[tuple[Callable[[Any], Any], Future[Any]]] = (
            queue.SimpleQueue()
        )
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def query(self, read: Callable[[Any], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self._queue.put((read, future))
        return future

    def _run(self) -> None:
        while True:
            read, future = self._queue.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(read(self.app))
            except Exception as exc:
                future.set_exception(exc)


@dataclass
class FakeReplicator:
    """The standby side: what the leader's store holds beyond ours, and how slowly it comes."""

    app: FakeApp
    primary_head: int = 0
    primary_epoch: int = 1
    catch_up_s: float = 0.0
    lag_s: float = 0.0
    frozen: bool = False
    primary: Any = None
    stats: ReplicationStats = field(default_factory=ReplicationStats)
    catch_ups: int = 0

    def catch_up(self, *, everything: bool = True) -> int:
        self.catch_ups += 1
        time.sleep(self.catch_up_s)
        if not self.frozen:
            self.app.write(self.primary_head - self.app.seq, epoch=self.primary_epoch)
        return self.app.seq

    def deliver(self, count: int) -> None:
        """Records that came on the topic or the peer link (on the writer thread)."""
        if not self.frozen:
            self.app.write(count, epoch=self.primary_epoch)
            self.primary_head = max(self.primary_head, self.app.seq)

    def lag_seconds(self) -> float:
        return self.lag_s if self.lag_records() else 0.0

    def lag_records(self) -> int:
        return max(0, self.primary_head - self.app.seq)


class FakeRelay:
    def __init__(self) -> None:
        self.position = 0
        self._stopping = False
        self.runs = 0

    async def run(self) -> None:
        self.runs += 1
        while not self._stopping:
            await asyncio.sleep(0.01)

    def stop(self) -> None:
        self._stopping = True


class Alerts:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []
        self.labels: dict[str, Any] = {}  # the labels of the last alert of each name

    def send(self, severity: str, name: str, message: str, labels: Any = None) -> None:
        self.sent.append((severity, name, message))
        self.labels[name] = labels

    @property
    def names(self) -> list[str]:
        return [name for _, name, _ in self.sent]


@dataclass
class Rig:
    controller: ShardController
    coord: FakeCoordination
    ensemble: FakeEnsemble
    app: FakeApp
    writer: FakeWriter
    replicator: FakeReplicator
    alerts: Alerts
    promoted: list[int] = field(default_factory=list)
    demoted: list[int] = field(default_factory=list)

    leader_health: int = 200  # what the leader's /health answers

    def on_writer(self, fn: Callable[[FakeApp], Any]) -> Any:
        return self.writer.query(fn).result(5)

    def client(self) -> httpx.AsyncClient:
        """The health round's HTTP client: the leader answers `leader_health`."""
        return httpx.AsyncClient(
            transport=httpx.MockTransport(lambda _: httpx.Response(self.leader_health))
        )

    def wire_deposal(self) -> None:
        """As the node does: a deposal reported by the coordination fences the controller."""
        loop = asyncio.get_running_loop()

        def deposed(shard: str, why: str) -> None:
            def schedule() -> None:
                self.controller.rejoin_task = asyncio.ensure_future(
                    self.controller.deposed(why)
                )

            loop.call_soon_threadsafe(schedule)

        self.coord.on_deposed = deposed

    def lead(self) -> int:
        """Make this region the shard's leader, as a finished promotion leaves it."""
        epoch = self.coord.take_leadership(
            SHARD, applied_seq=self.app.seq, min_epoch=self.app.epoch
        )
        self.app.epoch = epoch
        self.controller.role = Role.LEADER
        self.controller.leader_region = self.coord.region
        self.coord.calls.clear()  # the set-up is not what the row is about
        self.coord.on_loop.clear()
        return epoch


FAST = FailoverSettings(
    health_interval_s=0.05, failover_after_s=0.1, max_lag_s=2.0, store_loss_after_s=0.1
)


def make_rig(
    region: str = "standby",
    *,
    ensemble: FakeEnsemble | None = None,
    peers: tuple[str, ...] = ("primary",),
    failover: FailoverSettings = FAST,
    seq: int = 0,
    epoch: int = 1,
    mode: ReplicationMode = ReplicationMode.SYNC,
) -> Rig:
    from types import SimpleNamespace

    ensemble = ensemble or FakeEnsemble()
    coord = FakeCoordination(ensemble, region)
    app = FakeApp(epoch=epoch)
    app.write(seq)
    writer = FakeWriter(app)
    replicator = FakeReplicator(app, primary_head=seq)
    gate = SyncGate(SHARD, mode=mode, policy=SyncPolicy.STRICT, timeout_s=1.0)
    alerts = Alerts()
    rig_box: list[Rig] = []

    def promoted(controller: Any) -> None:
        rig_box[0].promoted.append(controller.app.seq)

    def demoted(controller: Any) -> None:
        rig_box[0].demoted.append(controller.app.seq)

    context = ControllerContext(
        coordination=coord,
        region=region,
        peers=peers,
        failover=failover,
        alerts=alerts,
        open_store=lambda name: cast(Any, SimpleNamespace(store=FakeStore())),
        on_promoted=promoted,
        on_demoted=demoted,
    )
    controller = ShardController(
        context,
        SHARD,
        cast(Any, writer),
        cast(Any, replicator),
        gate,
        cast(Any, FakeRelay()),
    )
    controller.leader_region = peers[0]
    controller.leader_views[peers[0]] = cast(Any, SimpleNamespace(store=FakeStore()))
    rig = Rig(controller, coord, ensemble, app, writer, replicator, alerts)
    rig_box.append(rig)
    return rig
