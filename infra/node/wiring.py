"""build_node: one region's shards, writers, gates, relays and replicators, wired to ZooKeeper,
the topics and the peer link. Nothing runs until the Faust worker starts (infra/node/run.py)."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from application.replication.confirmation import ConfirmationCheck
from application.replication.sync_gate import ReplicationMode, SyncGate, SyncPolicy
from application.shard.app import ShardApp
from infra.bootstrap import make_projector, make_shard_app, make_writer, migrate
from infra.coordination.zookeeper import Coordinator
from infra.failover.controller import ControllerContext, ShardController
from infra.failover.probe import StoreProbe
from infra.metrics.alerts import AlertSender
from infra.node.confirmations import accept_standby_ack, wire_acks
from infra.node.node import Node
from infra.node.projection import NodeProjection
from infra.node.roles import wire_failover
from infra.node.standby import wire_standby
from infra.replication.peer_link import RecordPush
from infra.replication.peer_server import client_context, peer_url
from infra.replication.rejections import RejectionAlerts
from infra.settings import Settings
from infra.wal.reseed import StandbyReseed
from projections.app import FETCH_MAX_WAIT_MS, PEER_LINK_FETCH_WAIT_MS, make_faust_app
from projections.replication.relay import Relay, encode_run
from projections.replication.replicator import Replicator
from projections.topics import acks_topic_name, wal_topic_name

log = logging.getLogger("exchange_dr.node")

RELAY_LINGER_S = 0.02


def build_node(settings: Settings, region_name: str) -> Node:
    region = settings.region_named(region_name)
    problem = settings.replica_set_problem()
    if problem is not None:
        log.warning("replica set region=%s: %s", region.name, problem)
    migrate(region.pg_dsn)
    faust_app = make_faust_app(
        settings,
        f"exdr-{settings.topic_prefix}-{region.name}",
        fetch_wait_ms=PEER_LINK_FETCH_WAIT_MS if settings.peer_token else FETCH_MAX_WAIT_MS,
    )
    node = Node(settings, region, faust_app, AlertSender(settings.alert_webhook))
    node.keys = keys = settings.replication_keys()
    node.rejection_alerts = RejectionAlerts(node.alerts.critical)
    if not settings.replication_key:
        log.warning("EXDR_REPLICATION_KEY is not set: records are signed with the development key")
    node.coordinator = Coordinator(
        settings.zk_hosts,
        region.name,
        region.api_url,
        root=settings.zk_root,
        session_timeout_s=settings.zk_session_ms / 1000,
    )
    prefix = settings.topic_prefix
    acks_topic = faust_app.topic(
        acks_topic_name(prefix), key_type=bytes, value_type=bytes, value_serializer="raw"
    )
    for shard_id in settings.shards():
        app = make_shard_app(settings, shard_id, dsn=region.pg_dsn, log_only=not region.promotable)
        app.recover()
        writer = make_writer(settings, app)
        topic = faust_app.topic(
            wal_topic_name(prefix, shard_id),
            key_type=bytes,
            value_type=bytes,
            value_serializer="raw",
        )
        gate = make_gate(settings, shard_id, node.alerts)
        # with the peer link carrying records first, the topic can gather them into fuller
        # messages (Kafka's linger.ms)
        relay = Relay(
            shard_id, app.store, topic, linger_s=RELAY_LINGER_S if settings.peer_token else 0.0
        )
        relay.tamper_seqs = set(settings.faults.tamper_seqs)
        replicator = make_replicator(settings, app, node.rejection_alerts)
        replicator.keys = keys
        # a gap reaching the leader's archive: re-seeded from its checkpoint and archive
        replicator.reseed = StandbyReseed(region.name, node.alerts.send)
        node.ack_checks[shard_id] = check = ConfirmationCheck(
            shard_id, keys, lookup=functools.partial(_stored_checksum, app.store, shard_id)
        )
        context = ControllerContext(
            coordination=node.coordinator,
            region=region.name,
            peers=tuple(peer.name for peer in settings.peers(region.name)),
            failover=settings.failover,
            alerts=node.alerts,
            open_store=functools.partial(_region_view, settings, shard_id),
            on_promoted=node.on_promoted,
            on_demoted=node.on_demoted,
            replicas=tuple((r.name, r.kind) for r in settings.regions),
        )
        controller = ShardController(
            context,
            shard_id,
            writer,
            replicator,
            gate,
            relay,
        )
        controller.store_probe = StoreProbe(region.pg_dsn, timeout_s=1.0)
        replicator.accept = lambda r, c=controller: c.record_is_current(r.seq, r.epoch)
        if settings.peer_token:
            controller.pushes = [
                RecordPush(
                    shard_id,
                    peer_region.name,
                    peer_url(settings, peer_region),
                    settings.peer_token,
                    functools.partial(encode_run, tamper=set(relay.tamper_seqs)),
                    functools.partial(accept_standby_ack, node, path="push"),
                    ssl_context=client_context(settings),
                )
                for peer_region in settings.peers(region.name)
            ]
        writer.gate = gate
        writer.commit_delay_s = settings.faults.commit_delay_ms / 1000
        controller.failed_promotions = settings.faults.failed_promotions
        writer.on_committed = _fan_out(relay, controller.pushes, check)
        writer.guard = controller.accepting
        # what was taken may still be acknowledged while handing over, never without the lease
        writer.ack_guard = functools.partial(_may_acknowledge, controller)
        writer.start()
        node.controllers[shard_id] = controller
        wire_standby(node, controller, topic, acks_topic)
    wire_acks(node, acks_topic)
    wire_failover(node)
    if region.promotable:  # a witness keeps the WAL only: no read models to serve
        node.projection = make_projection(settings, node)

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


def make_projection(settings: Settings, node: Node) -> NodeProjection:
    """The node's projection thread (not started): its region's store and read models, forks
    alerted like everything else, woken by each commit."""
    projector = make_projector(settings, dsn=node.region.pg_dsn)

    def forked(shard: str, message: str) -> None:
        node.alerts.send(
            "critical", "ReadModelsForked", message, {"shard": shard, "region": node.region.name}
        )

    projector.on_fork = forked
    projection = NodeProjection(node.controllers, projector, project=settings.project_in_node)
    for controller in node.controllers.values():
        committed = controller.writer.on_committed

        def offer(records: Sequence[Any], committed: Any = committed) -> None:
            committed(records)
            projection.poke()

        controller.writer.on_committed = offer
    return projection


def _region_view(settings: Settings, shard_id: str, region_name: str) -> ShardApp:
    """A region's shard, read-only here: where a standby fills gaps from (the leader's store)."""
    region = settings.region_named(region_name)
    return make_shard_app(settings, shard_id, dsn=region.pg_dsn)


def make_gate(settings: Settings, shard_id: str, alerts: AlertSender) -> SyncGate:
    """The shard's acknowledgement gate; its degrade alert goes out like every other alert."""
    return SyncGate(
        shard_id,
        mode=ReplicationMode(settings.replication_mode),
        policy=SyncPolicy(settings.sync_policy),
        timeout_s=settings.sync_timeout_ms / 1000,
        replicas=settings.replicas,
        on_degrade=alerts.replication_degraded,
        on_no_majority=alerts.no_majority,
    )


def make_replicator(settings: Settings, app: ShardApp, alert: RejectionAlerts) -> Replicator:
    """The shard's standby side, reading gaps from its own store until `follow()` points it at
    the leader's; its refused-message alerts go out like every other alert, throttled."""
    replicator = Replicator(app, app.store, alert=alert)
    replicator.stall_after_seq = settings.faults.stall_after_seq
    return replicator


def _fan_out(
    relay: Relay, pushes: list[RecordPush], check: ConfirmationCheck
) -> Callable[[Sequence[Any]], None]:
    """The writer's commit hook: every committed run to the confirmation check (before any
    standby can confirm it), the topic's relay and the peer links."""

    def offer(records: Sequence[Any]) -> None:
        check.committed(records)
        relay.offer(records)
        for push in pushes:
            push.offer(records)

    return offer


def _stored_checksum(store: Any, shard_id: str, seq: int) -> str | None:
    """The checksum of this region's record at `seq` (older than the check's window)."""
    records = store.read_records(shard_id, seq - 1, 1, verify=False)
    return str(records[0].checksum) if records and records[0].seq == seq else None


def _may_acknowledge(controller: ShardController) -> bool:
    return controller.role.leads and controller.coord.is_leader(controller.shard_id)
