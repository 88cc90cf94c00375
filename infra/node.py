"""`exchange-dr node --region R`: one region's process: shards, REST facade, relay, replicator.

The leader region writes (batched writer), relays every committed WAL record to the shard's
topic and, in sync mode, holds each acknowledgement until a standby confirmed the record.
A standby region applies those records (Faust agent -> Replicator) into its own store and keeps
its hot state in memory, so promotion needs no replay. Both serve the REST facade; a standby
answers commands with not_leader. The facade runs in its own thread and event loop; Faust owns
the main thread (signals, graceful stop).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import faust
import uvicorn

from application.replication import ReplicationMode, SyncGate, SyncPolicy
from application.writer import ShardWriter
from infra.api.app import create_app
from infra.api.leadership import StaticLeadership
from infra.bootstrap import make_key_store, make_shard_app, make_writer, migrate
from infra.dr_metrics import NodeCollector
from infra.settings import Region, Settings
from projections.app import make_faust_app
from projections.relay import Relay
from projections.replicator import Replicator
from projections.topics import acks_topic_name, wal_topic_name

log = logging.getLogger("exchange_dr.node")


@dataclass
class Node:
    """Everything one region runs, wired; `start_api` and the Faust worker run it."""

    settings: Settings
    region: Region
    leader: Region
    faust_app: faust.App
    writers: dict[str, ShardWriter] = field(default_factory=dict)
    gates: dict[str, SyncGate] = field(default_factory=dict)
    relays: dict[str, Relay] = field(default_factory=dict)
    replicators: dict[str, Replicator] = field(default_factory=dict)
    api_server: uvicorn.Server | None = None
    primary_views: list[Any] = field(default_factory=list)

    @property
    def leads(self) -> bool:
        return self.region.name == self.leader.name

    def replica_lag_ms(self, shard_id: str) -> float | None:
        replicator = self.replicators.get(shard_id)
        if self.leads or replicator is None:
            return None
        return replicator.lag_seconds() * 1000


def leader_region(settings: Settings) -> Region:
    """Until the failover manager decides it: EXDR_LEADER_REGION (default: the first region)."""
    name = os.environ.get("EXDR_LEADER_REGION", "").strip() or settings.regions[0].name
    return settings.region_named(name)


def build_node(settings: Settings, region_name: str) -> Node:
    started = time.monotonic()
    region = settings.region_named(region_name)
    leader = leader_region(settings)
    migrate(region.pg_dsn)
    faust_app = make_faust_app(settings, f"exdr-{region.name}")
    node = Node(settings, region, leader, faust_app)
    acks_topic = faust_app.topic(
        acks_topic_name(), key_type=bytes, value_type=bytes, value_serializer="raw"
    )
    for shard_id in settings.shards():
        app = make_shard_app(settings, shard_id, dsn=region.pg_dsn)
        app.recover()
        writer = make_writer(settings, app).start()
        node.writers[shard_id] = writer
        topic = faust_app.topic(
            wal_topic_name(shard_id), key_type=bytes, value_type=bytes, value_serializer="raw"
        )
        if node.leads:
            _wire_leader(node, shard_id, writer, topic)
        else:
            _wire_standby(node, shard_id, writer, topic, acks_topic)
    if node.leads:
        _wire_acks(node, acks_topic)
    joined: list[float] = []

    @faust_app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _joined(app: Any, assigned: Any, **_: Any) -> None:
        if not joined:
            joined.append(time.monotonic() - started)
            log.info("group joined after %.2fs region=%s", joined[0], region.name)

    return node


def _wire_leader(node: Node, shard_id: str, writer: ShardWriter, topic: Any) -> None:
    settings = node.settings
    gate = SyncGate(
        shard_id,
        mode=ReplicationMode(settings.replication_mode),
        policy=SyncPolicy(settings.sync_policy),
        timeout_s=settings.sync_timeout_ms / 1000,
    )
    relay = Relay(shard_id, writer.app.store, topic)
    tamper = os.environ.get("EXDR_FAULT_TAMPER_SEQS", "").strip()
    relay.tamper_seqs = {int(s) for s in tamper.split(",") if s.strip()}
    writer.gate = gate
    writer.on_committed = relay.offer
    node.gates[shard_id] = gate
    node.relays[shard_id] = relay

    @node.faust_app.task  # type: ignore[untyped-decorator]
    async def relay_records() -> None:
        await relay.run()

    @node.faust_app.timer(0.005)  # type: ignore[untyped-decorator]
    async def expire_waits() -> None:
        gate.tick()


def _wire_acks(node: Node, acks_topic: Any) -> None:
    @node.faust_app.agent(acks_topic)
    async def standby_confirmed(stream: Any) -> None:
        async for value in stream:
            ack = json.loads(value)
            gate = node.gates.get(ack.get("shard", ""))
            if gate is None or ack.get("region") == node.region.name:
                continue
            if int(ack.get("epoch", 0)) < node.writers[gate.shard_id].app.epoch:
                continue  # confirmations of an older epoch prove nothing about ours
            gate.standby_stored(int(ack["seq"]))


def _wire_standby(
    node: Node, shard_id: str, writer: ShardWriter, topic: Any, acks_topic: Any
) -> None:
    primary_app = make_shard_app(node.settings, shard_id, dsn=node.leader.pg_dsn)
    node.primary_views.append(primary_app)  # keeps its connection pool alive
    replicator = Replicator(writer.app, primary_app.store)
    node.replicators[shard_id] = replicator

    def _apply(values: list[Any], _: object) -> int:
        return replicator.apply_wire(values)

    async def confirm(seq: int) -> None:
        ack = {
            "shard": shard_id,
            "region": node.region.name,
            "seq": seq,
            "epoch": writer.app.epoch,
            "at_us": time.time_ns() // 1000,
        }
        await acks_topic.send(key=shard_id.encode(), value=json.dumps(ack).encode())

    @node.faust_app.agent(topic)
    async def replicate(stream: Any) -> None:
        async for values in stream.take(500, within=0.002):
            try:
                seq = await asyncio.wrap_future(
                    writer.query(functools.partial(_apply, list(values)))
                )
            except Exception as exc:
                # the records stay unapplied; catch_up pulls them from the primary's store
                log.error("replication failed shard=%s error=%s", shard_id, exc)
                continue
            await confirm(seq)

    @node.faust_app.timer(0.5)  # type: ignore[untyped-decorator]
    async def catch_up() -> None:
        # a broker that lost its topics, or a quiet primary: the store is the source of truth
        try:
            seq = await asyncio.wrap_future(writer.query(lambda _: replicator.catch_up()))
        except Exception as exc:
            log.warning("catch-up from the primary's store failed shard=%s error=%s", shard_id, exc)
            return
        if seq:
            await confirm(seq)


def start_api(node: Node) -> threading.Thread:
    """Serve the REST facade on its own thread and event loop."""
    region = node.region
    leadership = StaticLeadership(leads=node.leads, url=None if node.leads else node.leader.api_url)
    key_store = make_key_store(node.settings, dsn=region.pg_dsn)
    app = create_app(
        node.settings, node.writers, leadership, key_store, replica_lag_ms=node.replica_lag_ms
    )
    app.state.facade.metrics.registry.register(NodeCollector(node))
    host, port = _host_port(region.api_url)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="asyncio",
        http="httptools",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    node.api_server = server
    thread = threading.Thread(target=server.run, name="rest-facade", daemon=True)
    thread.start()
    return thread


def _host_port(url: str) -> tuple[str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def run_node(settings: Settings, region_name: str, *, loglevel: str = "warn") -> int:
    node = build_node(settings, region_name)
    api_thread = start_api(node)

    @node.faust_app.on_before_shutdown.connect  # type: ignore[arg-type]
    def _stop(app: Any, **_: Any) -> None:
        for relay in node.relays.values():
            relay.stop()
        if node.api_server is not None:
            node.api_server.should_exit = True
        for writer in node.writers.values():
            writer.stop()
        for gate in node.gates.values():
            gate.fail_all()

    log.info(
        "node region=%s role=%s shards=%s api=%s",
        node.region.name,
        "leader" if node.leads else "standby",
        ",".join(node.writers),
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
