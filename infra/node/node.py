"""`exchange-dr node --region R`: one region's process: shards, REST facade, relay, replicator,
ZooKeeper leadership and the failover manager.

Each shard has a role here (infra/failover/controller.py).
The leader writes (batched writer), relays
every committed WAL record to the shard's topic, sends it on the peer link to each standby
when the regions share a token (infra/replication/peer_link.py) and, in sync mode, holds each
acknowledgement until a standby confirmed the record. A standby applies those records (the
peer link's runs and the Faust agent's messages, whichever comes first -> Replicator) into its
own store and keeps its hot state in memory, so promotion needs no replay.
Both serve the REST facade; a standby answers commands with not_leader and the leader's URL.
The facade runs in its own thread and event loop; Faust owns the main thread (signals, stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import faust
import httpx
import orjson
import uvicorn

from application.replication.sync_gate import ReplicationMode, SyncGate, SyncPolicy
from application.wal.writer import ShardWriter
from infra.api import peer
from infra.api.app import create_app
from infra.bootstrap import make_key_store, make_shard_app, make_writer, migrate
from infra.coordination.zookeeper import Coordinator, LeaderInfo
from infra.failover.controller import FailoverSettings, ShardController, StoreProbe, send_alert
from infra.metrics.dr_metrics import NodeCollector
from infra.node.heap import HeapPolicy
from infra.replication.peer_link import RecordPush, host_port
from infra.replication.rawhttp import ConnectionPool
from infra.settings import Region, Settings
from infra.wal.archive_service import ArchiveService, start_archiving
from projections.app import FETCH_MAX_WAIT_MS, PEER_LINK_FETCH_WAIT_MS, make_faust_app
from projections.replication.relay import Relay, encode_run
from projections.replication.replicator import Replicator
from projections.topics import acks_topic_name, topic_prefix, wal_topic_name

log = logging.getLogger("exchange_dr.node")

PEER_ACK_TIMEOUT_S = 0.5
QUERY_TIMEOUT_S = 10.0  # a writer-thread call that takes longer is logged, never waited on forever
RELAY_LINGER_S = 0.02
MAX_APPLY_MESSAGES = 500  # broker messages (each a run of records) per apply on a standby


@dataclass
class Node:
    """Everything one region runs, wired; `start_api` and the Faust worker run it."""

    settings: Settings
    region: Region
    faust_app: faust.App
    failover: FailoverSettings
    coordinator: Coordinator | None = None
    controllers: dict[str, ShardController] = field(default_factory=dict)
    api_server: uvicorn.Server | None = None
    api_app: Any = None
    started_at: float = field(default_factory=time.monotonic)
    confirmations: dict[str, int] = field(default_factory=dict)  # by path: push, direct, broker
    # a standby's intake of the peer link's record runs, by shard
    intakes: dict[str, Callable[[bytes], Future[dict[str, Any] | None] | None]] = field(
        default_factory=dict
    )
    archiving: ArchiveService | None = None  # the WAL archiver (infra/wal/archive_service.py)

    # views used by metrics and the facade
    @property
    def writers(self) -> dict[str, ShardWriter]:
        return {s: c.writer for s, c in self.controllers.items()}

    @property
    def gates(self) -> dict[str, SyncGate]:
        return {s: c.gate for s, c in self.controllers.items() if c.role == "leader"}

    @property
    def replicators(self) -> dict[str, Replicator]:
        return {s: c.replicator for s, c in self.controllers.items() if c.role == "standby"}

    @property
    def leads(self) -> bool:
        return any(c.role == "leader" for c in self.controllers.values())

    def role_of(self, shard_id: str) -> str:
        return self.controllers[shard_id].role

    def replica_lag_ms(self, shard_id: str) -> float | None:
        controller = self.controllers.get(shard_id)
        if controller is None or controller.role != "standby":
            return None
        return controller.replicator.lag_seconds() * 1000

    def leader_region_name(self, shard_id: str) -> str | None:
        return self.controllers[shard_id].leader_region

    def is_leader(self, shard_id: str) -> bool:
        """The Leadership port for the facade: the shard's role and a live lease."""
        controller = self.controllers.get(shard_id)
        return controller is not None and controller.accepting()

    def leader_url(self, shard_id: str) -> str | None:
        if self.coordinator is None:
            return None
        url = self.coordinator.leader_url(shard_id)
        if url == self.region.api_url and not self.is_leader(shard_id):
            return None  # our own stale view (cut off, lease lapsed): we do not know who leads
        return url

    def on_promoted(self, controller: ShardController) -> None:
        facade = getattr(getattr(self.api_app, "state", None), "facade", None)
        if facade is not None:
            # the index followed replication; from now on it follows the shard's commands
            facade.activity[controller.shard_id].seq = controller.app.seq

    def on_demoted(self, controller: ShardController) -> None:
        facade = getattr(getattr(self.api_app, "state", None), "facade", None)
        if facade is not None:
            facade.reindex(controller.shard_id)


def preferred_leader(settings: Settings) -> str:
    """Who leads a brand-new cluster: EXDR_LEADER_REGION (default: the first region)."""
    return os.environ.get("EXDR_LEADER_REGION", "").strip() or settings.regions[0].name


def build_node(settings: Settings, region_name: str) -> Node:
    region = settings.region_named(region_name)
    migrate(region.pg_dsn)
    faust_app = make_faust_app(
        settings,
        f"exdr-{topic_prefix()}-{region.name}",
        fetch_wait_ms=PEER_LINK_FETCH_WAIT_MS if settings.peer_token else FETCH_MAX_WAIT_MS,
    )
    node = Node(settings, region, faust_app, FailoverSettings.from_env(os.environ))
    session_s = float(os.environ.get("EXDR_ZK_SESSION_MS", "2000")) / 1000
    node.coordinator = Coordinator(
        settings.zk_hosts,
        region.name,
        region.api_url,
        root=f"/exdr/{topic_prefix()}",
        session_timeout_s=session_s,
    )
    acks_topic = faust_app.topic(
        acks_topic_name(), key_type=bytes, value_type=bytes, value_serializer="raw"
    )
    for shard_id in settings.shards():
        app = make_shard_app(settings, shard_id, dsn=region.pg_dsn)
        app.recover()
        writer = make_writer(settings, app)
        topic = faust_app.topic(
            wal_topic_name(shard_id), key_type=bytes, value_type=bytes, value_serializer="raw"
        )
        gate = SyncGate(
            shard_id,
            mode=ReplicationMode(settings.replication_mode),
            policy=SyncPolicy(settings.sync_policy),
            timeout_s=settings.sync_timeout_ms / 1000,
        )
        # with the peer link carrying records first, the topic can gather them into fuller
        # messages (Kafka's linger.ms)
        relay = Relay(
            shard_id, app.store, topic, linger_s=RELAY_LINGER_S if settings.peer_token else 0.0
        )
        tamper = os.environ.get("EXDR_FAULT_TAMPER_SEQS", "").strip()
        relay.tamper_seqs = {int(s) for s in tamper.split(",") if s.strip()}
        replicator = Replicator(app, app.store)  # pointed at the leader's store by follow()
        stall = os.environ.get("EXDR_FAULT_STALL_AFTER_SEQ", "").strip()
        replicator.stall_after_seq = int(stall) if stall else None
        controller = ShardController(node, shard_id, writer, replicator, gate, relay)
        controller.store_probe = StoreProbe(region.pg_dsn, timeout_s=1.0)
        replicator.accept = lambda r, c=controller: c.record_is_current(r.seq, r.epoch)
        if settings.peer_token:
            controller.pushes = [
                RecordPush(
                    shard_id,
                    peer_region.name,
                    peer_region.api_url,
                    settings.peer_token,
                    functools.partial(encode_run, tamper=set(relay.tamper_seqs)),
                    functools.partial(accept_standby_ack, node, path="push"),
                )
                for peer_region in settings.peers(region.name)
            ]
        writer.gate = gate
        writer.on_committed = _fan_out(relay, controller.pushes)
        writer.guard = controller.accepting
        writer.start()
        node.controllers[shard_id] = controller
        _wire_standby(node, controller, topic, acks_topic)
    _wire_acks(node, acks_topic)
    _wire_failover(node)

    @faust_app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _joined(app: Any, assigned: Any, **_: Any) -> None:
        if not getattr(node, "_joined", False):
            node._joined = True  # type: ignore[attr-defined]
            log.info(
                "group joined after %.2fs region=%s",
                time.monotonic() - node.started_at,
                region.name,
            )

    return node


def _fan_out(relay: Relay, pushes: list[RecordPush]) -> Callable[[Sequence[Any]], None]:
    """The writer's commit hook: every committed run to the topic's relay and the peer links."""
    if not pushes:
        return relay.offer

    def offer(records: Sequence[Any]) -> None:
        relay.offer(records)
        for push in pushes:
            push.offer(records)

    return offer


async def take_initial_roles(node: Node) -> None:
    """Lead a brand-new shard if preferred; otherwise follow whoever leads (rejoining first)."""
    coord = node.coordinator
    assert coord is not None
    for shard_id, controller in node.controllers.items():
        leader = await asyncio.to_thread(coord.refresh_leader, shard_id)
        deadline = time.monotonic() + coord.session_timeout_s * 2
        while leader is not None and leader.region == node.region.name:
            # our previous life's session has not expired yet: it cannot be used, wait it out
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
            leader = await asyncio.to_thread(coord.refresh_leader, shard_id)
        history = await asyncio.to_thread(coord.epochs, shard_id)
        if leader is None and not history and node.region.name == preferred_leader(node.settings):
            epoch = await asyncio.to_thread(
                coord.take_leadership,
                shard_id,
                applied_seq=controller.app.seq,
                min_epoch=controller.app.epoch,
            )

            def adopt(app: Any, epoch: int = epoch) -> int:
                app.epoch = epoch
                return int(app.seq)

            await asyncio.wrap_future(controller.writer.query(adopt))
            controller.history = await asyncio.to_thread(coord.epochs, shard_id)
            controller.start_relay()
            controller.role = "leader"
            log.warning(
                "bootstrap leader shard=%s region=%s epoch=%s", shard_id, node.region.name, epoch
            )
        elif leader is not None and leader.region != node.region.name:
            controller.role = "fenced"
            await controller.become_standby()
        else:
            controller.history = history
            controller.role = "standby"
            log.warning("shard=%s has no leader: standing by for the failover manager", shard_id)


def accept_standby_ack(node: Node, ack: dict[str, Any], *, path: str = "broker") -> None:
    """A standby's confirmation (from the acks topic or its direct request): every record up
    to ack["seq"] is stored in its region. Thread-safe (the gate locks)."""
    controller = node.controllers.get(str(ack.get("shard", "")))
    if controller is None or ack.get("region") == node.region.name:
        return
    if controller.role not in ("leader", "handing_over"):
        return
    if int(ack.get("epoch", 0)) < controller.app.epoch:
        return  # confirmations of an older epoch prove nothing about ours
    node.confirmations[path] = node.confirmations.get(path, 0) + 1
    controller.gate.standby_stored(int(ack["seq"]))


def _wire_acks(node: Node, acks_topic: Any) -> None:
    @node.faust_app.agent(acks_topic)
    async def standby_confirmed(stream: Any) -> None:
        async for value in stream:
            accept_standby_ack(node, orjson.loads(value))


class PeerConfirmer:
    """A standby's direct confirmations to its shard's leader (infra/api/peer.py): at most one
    request in flight; what arrives meanwhile is folded into the next (a confirmation of seq
    covers every record before it). Failures are dropped: the acks topic carries them too."""

    def __init__(self, node: Node, shard_id: str, token: str) -> None:
        self.node = node
        self.shard_id = shard_id
        self._token = token
        self._latest: dict[str, Any] | None = None
        self._task: asyncio.Future[None] | None = None
        self._pools: dict[str, tuple[ConnectionPool, bytes]] = {}

    def offer(self, ack: dict[str, Any]) -> None:
        self._latest = ack
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._send())

    async def _send(self) -> None:
        while self._latest is not None:
            ack, self._latest = self._latest, None
            coordinator = self.node.coordinator
            url = None if coordinator is None else coordinator.leader_url(self.shard_id)
            if url is None or url == self.node.region.api_url:
                continue
            pool, head = self._pool(url)
            body = orjson.dumps(ack)
            request = head + str(len(body)).encode() + b"\r\n\r\n" + body
            with contextlib.suppress(TimeoutError, OSError):
                await asyncio.wait_for(pool.send(request), PEER_ACK_TIMEOUT_S)

    def _pool(self, url: str) -> tuple[ConnectionPool, bytes]:
        entry = self._pools.get(url)
        if entry is None:
            host, port = host_port(url)
            head = (
                f"POST {peer.PATH} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"X-Exdr-Peer-Token: {self._token}\r\nContent-Type: application/json\r\n"
                "Content-Length: "
            ).encode()
            entry = self._pools[url] = (ConnectionPool(host, port, 1), head)
        return entry


def _wire_standby(node: Node, controller: ShardController, topic: Any, acks_topic: Any) -> None:
    shard_id = controller.shard_id
    writer = controller.writer
    replicator = controller.replicator

    def _apply(values: list[Any], _: object) -> int:
        seq = replicator.apply_wire(values)
        _index(seq)
        return seq

    def _catch_up(_: object) -> int:
        seq = replicator.catch_up(everything=False)
        _index(seq)
        return seq

    def _index(seq: int) -> None:
        facade = getattr(getattr(node.api_app, "state", None), "facade", None)
        if facade is None:
            return
        activity = facade.activity[shard_id]
        if activity.seq >= seq:
            return
        applied = replicator.last_applied
        if applied and applied[0].seq <= activity.seq + 1:
            # what was just stored and applied: no read back, no second decoding
            activity.index_records(writer.app, applied, writer.app.replicated_events)
        else:
            activity.index_records(
                writer.app, writer.app.store.iter_records(shard_id, activity.seq, upto_seq=seq)
            )

    # direct confirmations only where acknowledgements wait for them (configured sync mode)
    token = node.settings.peer_token
    sync = node.settings.replication_mode == ReplicationMode.SYNC
    direct = PeerConfirmer(node, shard_id, token) if token and sync else None

    def confirmation(seq: int) -> dict[str, Any]:
        return {
            "shard": shard_id,
            "region": node.region.name,
            "seq": seq,
            "epoch": writer.app.epoch,
            "at_us": time.time_ns() // 1000,
        }

    async def confirm(seq: int) -> None:
        ack = confirmation(seq)
        if direct is not None:
            direct.offer(ack)  # the fast path; the topic is the one that always works
        await acks_topic.send(key=shard_id.encode(), value=orjson.dumps(ack))

    def _apply_pushed(body: bytes, app: Any) -> dict[str, Any] | None:
        if controller.role != "standby":
            return None
        return confirmation(_apply([body], app))

    def take_pushed(body: bytes) -> Future[dict[str, Any] | None] | None:
        """A run from the leader's peer link (any thread): the future of its confirmation, due
        once the run is stored; None if this region is not a standby of the shard."""
        if controller.role != "standby":
            return None
        return writer.query(functools.partial(_apply_pushed, body))

    node.intakes[shard_id] = take_pushed

    # Deliveries are batched by what arrives while the writer applies the previous batch: no
    # timer (Faust's take(within=...) wakes every `within` even when nothing comes, which on a
    # quiet standby cost a steady share of a core and added its period to every record's lag).
    arrived: list[Any] = []
    wake = asyncio.Event()

    async def apply_arrived() -> None:
        while True:
            await wake.wait()
            wake.clear()
            await asyncio.sleep(0)  # the rest of a fetch that is being delivered joins in
            values = arrived[:MAX_APPLY_MESSAGES]
            del arrived[: len(values)]
            if arrived:
                wake.set()
            if controller.role != "standby":
                continue
            # what the peer link already brought is dropped here, without the writer's time
            values = replicator.unseen(values)
            if not values:
                continue
            try:
                seq = await asyncio.wait_for(
                    asyncio.wrap_future(writer.query(functools.partial(_apply, values))),
                    QUERY_TIMEOUT_S,
                )
            except Exception as exc:
                # the records stay unapplied; catch_up pulls them from the leader's store
                log.error("replication failed shard=%s error=%s", shard_id, exc)
                continue
            await confirm(seq)

    @node.faust_app.agent(topic)
    async def replicate(stream: Any) -> None:
        # offsets may run ahead of what is applied: the store's seq, not the consumer's
        # offset, says what the standby has (a restart catches up from the leader's store)
        applier = asyncio.ensure_future(apply_arrived())
        try:
            async for value in stream:
                if controller.role == "standby":
                    arrived.append(value)
                    wake.set()
        finally:
            applier.cancel()

    @node.faust_app.timer(0.5)  # type: ignore[untyped-decorator]
    async def catch_up() -> None:
        # a broker that lost its topics, or a quiet leader: the store is the source of truth
        if controller.role != "standby" or node.coordinator is None:
            return
        if node.coordinator.leader(shard_id) is None:
            return  # nobody to copy from; the failover manager decides
        try:
            seq = await asyncio.wait_for(
                asyncio.wrap_future(writer.query(_catch_up)), QUERY_TIMEOUT_S
            )
        except Exception as exc:
            log.warning("catch-up from the leader's store failed shard=%s error=%s", shard_id, exc)
            return
        if seq:
            await confirm(seq)


def _wire_failover(node: Node) -> None:
    interval = node.failover.health_interval_s
    client = httpx.AsyncClient()
    started = asyncio.Event()

    @node.faust_app.task  # type: ignore[untyped-decorator]
    async def roles() -> None:
        coord = node.coordinator
        assert coord is not None
        loop = asyncio.get_running_loop()
        await asyncio.to_thread(coord.start, list(node.controllers))

        def leader_changed(shard: str, info: LeaderInfo | None) -> None:
            controller = node.controllers[shard]
            if info is not None and info.region != node.region.name:
                loop.call_soon_threadsafe(controller.follow, info)

        def deposed(shard: str, why: str) -> None:
            controller = node.controllers[shard]

            def schedule() -> None:
                controller.rejoin_task = asyncio.ensure_future(controller.deposed(why))

            loop.call_soon_threadsafe(schedule)

        coord.on_leader_change = leader_changed
        coord.on_deposed = deposed
        await take_initial_roles(node)
        started.set()

    @node.faust_app.task  # type: ignore[untyped-decorator]
    async def health() -> None:
        await started.wait()
        while True:
            began = time.monotonic()
            try:
                await asyncio.gather(
                    *(c.check(client) for c in node.controllers.values()),
                    *(c.check_store() for c in node.controllers.values()),
                )
            except Exception as exc:  # a round that failed is a round; the next one comes
                log.error("health round failed: %s", exc)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - began)))

    @node.faust_app.task  # type: ignore[untyped-decorator]
    async def expire_waits() -> None:
        while True:
            for controller in node.controllers.values():
                controller.gate.tick()
            # deadlines are of a second or more: a 20 ms check costs a tenth of the wake-ups
            await asyncio.sleep(0.02)


def start_api(node: Node) -> threading.Thread:
    """Serve the REST facade on its own thread and event loop."""
    region = node.region
    assert node.coordinator is not None
    key_store = make_key_store(node.settings, dsn=region.pg_dsn)
    app = create_app(
        node.settings,
        node.writers,
        node,
        key_store,
        replica_lag_ms=node.replica_lag_ms,
        warm_activity=True,
    )
    app.state.facade.metrics.registry.register(NodeCollector(node))
    if node.settings.peer_token:
        app.peer_acks = peer.PeerAckLane(
            node.settings.peer_token,
            functools.partial(accept_standby_ack, node, path="direct"),
            functools.partial(_take_records, node),
        )
    app.state.switchover = functools.partial(_switchover, node)
    node.api_app = app
    host, port = host_port(region.api_url)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=5,
        proxy_headers=False,  # no X-Forwarded-* is read: skip uvicorn's rewriting layer
    )
    server = uvicorn.Server(config)
    node.api_server = server
    thread = threading.Thread(target=server.run, name="rest-facade", daemon=True)
    thread.start()
    return thread


def _take_records(
    node: Node, shard_id: str, body: bytes
) -> Awaitable[dict[str, Any] | None] | None:
    """Called from the facade's loop: a pushed run to the shard's writer, stored there."""
    future = node.intakes[shard_id](body)  # KeyError: not a shard of ours
    return None if future is None else asyncio.wrap_future(future)


async def _switchover(node: Node, shard_id: str, to_region: str) -> dict[str, Any]:
    """Called from the facade's loop: run the handover on Faust's loop and wait for it."""
    controller = node.controllers.get(shard_id)
    if controller is None:
        raise ValueError(f"unknown shard {shard_id!r}")
    loop = node.faust_app.loop
    future = asyncio.run_coroutine_threadsafe(controller.hand_over(to_region), loop)
    return await asyncio.wrap_future(future)


def run_node(settings: Settings, region_name: str, *, loglevel: str = "warn") -> int:
    # SIGUSR1: the Faust worker (mode) writes every thread's stack and every task to stderr
    logging.getLogger("httpx").setLevel(logging.WARNING)
    heap = HeapPolicy()
    if os.environ.get("EXDR_GC", "tuned").strip() != "default":
        heap.install()
    node = build_node(settings, region_name)
    node.archiving = start_archiving(node)

    @node.faust_app.timer(1.0)  # type: ignore[untyped-decorator]
    async def settle_heap() -> None:
        heap.settle()

    api_thread = start_api(node)

    @node.faust_app.on_before_shutdown.connect  # type: ignore[arg-type]
    def _stop(app: Any, **_: Any) -> None:
        coord = node.coordinator
        for controller in node.controllers.values():
            controller.stop_relay()
            if controller.role == "leader" and coord is not None:
                # a graceful stop hands the shard over at once instead of waiting for expiry
                peers = node.settings.peers(node.region.name)
                if peers:
                    coord.request_handover(controller.shard_id, peers[0].name)
                coord.resign(controller.shard_id)
                send_alert(
                    "warning",
                    "LeaderStopped",
                    f"shard {controller.shard_id}: leader {node.region.name} stopped "
                    "gracefully and resigned",
                    {"shard": controller.shard_id},
                    node.failover.webhook_url,
                )
            controller.role = "fenced"
        if node.api_server is not None:
            node.api_server.should_exit = True
        for controller in node.controllers.values():
            controller.writer.stop()
            controller.gate.fail_all()
        if coord is not None:
            coord.stop()
        if node.archiving is not None:
            node.archiving.stop()

    log.info(
        "node region=%s shards=%s api=%s",
        node.region.name,
        ",".join(node.controllers),
        node.region.api_url,
    )
    worker = faust.Worker(node.faust_app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    finally:
        if node.api_server is not None:
            node.api_server.should_exit = True
        api_thread.join(5)
    return 0
