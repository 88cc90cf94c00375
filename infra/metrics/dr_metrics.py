"""Disaster-recovery metrics of a region, read from the live node at scrape time.

Names follow the source design's alert rules: up{role,shard}, matching_engine_standby_lag_seconds,
wal_events_total, wal_events_count; plus the replication counters an operator needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from infra.failover.state import Role

if TYPE_CHECKING:
    from infra.node.node import Node
    from infra.wal.archive_service import ArchiveService


class NodeCollector(Collector):
    """Builds every sample from the node's objects; nothing to keep in sync."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        region = node.region.name
        up = GaugeMetricFamily(
            "up",
            "1 while this region's process serves the shard",
            labels=["role", "shard", "region"],
        )
        seq = GaugeMetricFamily("wal_seq", "Last WAL seq stored in this region", labels=["shard"])
        count = GaugeMetricFamily(
            "wal_events_count",
            "WAL records of the shard in this region's live table (not yet archived)",
            labels=["shard"],
        )
        events = CounterMetricFamily(
            "wal_events", "Stored events written by this process", labels=["shard"]
        )
        lag_s = GaugeMetricFamily(
            "matching_engine_standby_lag_seconds",
            "How far this standby is behind the primary, in seconds",
            labels=["shard"],
        )
        lag_r = GaugeMetricFamily(
            "standby_lag_records", "How many records this standby is behind", labels=["shard"]
        )
        degraded = GaugeMetricFamily(
            "replication_degraded",
            "1 while sync replication has degraded to async",
            labels=["shard"],
        )
        no_majority = GaugeMetricFamily(
            "replication_no_majority",
            "1 while strict sync replication refuses commands: no majority of the shard's "
            "replicas confirmed within the sync timeout",
            labels=["shard"],
        )
        waiting = GaugeMetricFamily(
            "replication_acks_waiting",
            "Batches waiting for a standby's confirmation",
            labels=["shard"],
        )
        corrupt = CounterMetricFamily(
            "replication_corrupt_records",
            "Corrupt records refused by the replicator",
            labels=["shard"],
        )
        rejected = CounterMetricFamily(
            "replication_rejected",
            "Replication messages refused before they changed anything, by reason (checksum, "
            "no_mac, unknown_key, bad_mac, chain, unknown_type, malformed, ahead, mismatch); "
            "kind: record (a standby's intake) or confirmation (a leader's)",
            labels=["shard", "reason", "kind"],
        )
        for shard_id, controller in node.controllers.items():
            for reason, taken in sorted(controller.replicator.stats.rejected.items()):
                rejected.add_metric([shard_id, reason, "record"], float(taken))
            check = node.ack_checks.get(shard_id)
            for reason, taken in sorted(check.rejected.items() if check is not None else ()):
                rejected.add_metric([shard_id, reason, "confirmation"], float(taken))
        gaps = CounterMetricFamily(
            "replication_gap_fills", "Records fetched from the primary's store", labels=["shard"]
        )
        reseeds = CounterMetricFamily(
            "standby_reseeds",
            "Re-seeds of this standby from the leader's checkpoint and archive",
            labels=["shard"],
        )
        reseed_blocked = GaugeMetricFamily(
            "standby_reseed_blocked",
            "1 while the standby's gap reaches the leader's archive and cannot be re-seeded",
            labels=["shard"],
        )
        failovers = CounterMetricFamily(
            "failover",
            "Failovers and switchovers that made this region the leader",
            labels=["shard"],
        )
        info = GaugeMetricFamily(
            "failover_info",
            "One sample per failover into this region",
            labels=["shard", "from_region", "to_region", "epoch", "reason"],
        )
        rto = GaugeMetricFamily(
            "failover_rto_seconds",
            "Seconds from the leader's failure being noticed to this region accepting commands",
            labels=["shard"],
        )
        confirmations = CounterMetricFamily(
            "replication_confirmations",
            "Standby confirmations taken by this leader, by how they came (push: the peer "
            "link's answers, direct: a standby's request, broker: the acks topic)",
            labels=["path"],
        )
        for path, taken in sorted(node.confirmations.items()):
            confirmations.add_metric([path], float(taken))
        link = GaugeMetricFamily(
            "replication_peer_link_up",
            "1 while this leader's peer link to a standby delivers records (0: the topic alone)",
            labels=["shard", "peer"],
        )
        zk = GaugeMetricFamily(
            "zookeeper_connected",
            "1 while this region's ZooKeeper session is connected",
            labels=["region"],
        )
        projection_lag = GaugeMetricFamily(
            "projection_lag_records",
            "WAL records of the shard in this region not yet in its read models (seq - tracked)",
            labels=["shard"],
        )
        projection_confirmed = GaugeMetricFamily(
            "projection_confirmed_seq",
            "The confirmed point the read models are projected up to (no failover takes it back)",
            labels=["shard"],
        )
        projection_forks = CounterMetricFamily(
            "read_models_forks",
            "Rollbacks of the read models: they stood on a record the store no longer holds",
            labels=["region"],
        )
        projection = node.projection
        if projection is not None:
            projection_forks.add_metric([region], float(projection.projector.forks))
            for shard_id, state in sorted(projection.shards.items()):
                projection_lag.add_metric([shard_id], float(state.lag))
                if state.confirmed is not None:
                    projection_confirmed.add_metric([shard_id], float(state.confirmed.seq))
        archive_states = node.archiving.states if node.archiving is not None else {}
        coord = node.coordinator
        zk.add_metric([region], 1.0 if coord is not None and coord.connected else 0.0)
        for shard_id, controller in node.controllers.items():
            failovers.add_metric([shard_id], float(len(controller.failovers)))
            for record in controller.failovers:
                info.add_metric(
                    [
                        shard_id,
                        record.from_region,
                        record.to_region,
                        str(record.epoch),
                        record.reason[:60],
                    ],
                    1.0,
                )
            if controller.last_rto_s is not None:
                rto.add_metric([shard_id], controller.last_rto_s)
            if controller.role is Role.LEADER:
                for push in controller.pushes:
                    link.add_metric([shard_id, push.region], 1.0 if push.up else 0.0)
        for shard_id, writer in node.writers.items():
            app = writer.app
            role = "primary" if node.role_of(shard_id) is Role.LEADER else "standby"
            up.add_metric([role, shard_id, region], 1.0)
            seq.add_metric([shard_id], float(app.seq))
            archived = archive_states.get(shard_id)
            live = app.seq - (archived.archived_seq if archived is not None else 0)
            count.add_metric([shard_id], float(max(0, live)))
            events.add_metric([shard_id], float(app.events_written))
            gate = node.gates.get(shard_id)
            if gate is not None:
                degraded.add_metric([shard_id], 1.0 if gate.degraded else 0.0)
                # a deposed leader's gate may still say so: only the leader's refusals count
                refusing = gate.no_majority and role == "primary"
                no_majority.add_metric([shard_id], 1.0 if refusing else 0.0)
                waiting.add_metric([shard_id], float(gate.waiting))
                lag_r.add_metric([shard_id], float(max(0, app.seq - gate.standby_seq)))
            replicator = node.replicators.get(shard_id)
            if replicator is not None:
                lag_s.add_metric([shard_id], replicator.lag_seconds())
                lag_r.add_metric([shard_id], float(replicator.lag_records()))
                corrupt.add_metric([shard_id], float(replicator.stats.corrupt))
                gaps.add_metric([shard_id], float(replicator.stats.gap_fills))
                reseeds.add_metric([shard_id], float(replicator.stats.reseeds))
                blocked = replicator.reseed_refused is not None and role == "standby"
                reseed_blocked.add_metric([shard_id], 1.0 if blocked else 0.0)
        yield from (
            up,
            seq,
            count,
            events,
            lag_s,
            lag_r,
            degraded,
            no_majority,
            waiting,
            corrupt,
            rejected,
            gaps,
            reseeds,
            reseed_blocked,
            failovers,
            info,
            rto,
            zk,
            confirmations,
            link,
            projection_lag,
            projection_confirmed,
            projection_forks,
        )
        if node.archiving is not None:
            yield from archive_metrics(node.archiving)


def archive_metrics(service: ArchiveService) -> Iterator[Metric]:
    """The archive of each shard: how far it reached, how big it is, how far behind it is."""
    families = {
        "wal_retain_records": GaugeMetricFamily(
            "wal_retain_records",
            "Newest records a shard keeps in its live WAL (EXDR_WAL_RETAIN_RECORDS)",
            labels=["shard"],
        ),
        "wal_archive_last_seq": GaugeMetricFamily(
            "wal_archive_last_seq", "Last seq moved to the archive", labels=["shard"]
        ),
        "wal_archive_segments": GaugeMetricFamily(
            "wal_archive_segments", "Segment files of the shard's archive", labels=["shard"]
        ),
        "wal_archive_bytes": GaugeMetricFamily(
            "wal_archive_bytes", "Bytes of the shard's archive segments", labels=["shard"]
        ),
        "wal_archive_lag_records": GaugeMetricFamily(
            "wal_archive_lag_records",
            "Records a checkpoint covers and the window lets go, still in the live WAL",
            labels=["shard"],
        ),
        "wal_archive_held_by_read_models": GaugeMetricFamily(
            "wal_archive_held_by_read_models",
            "1 while the region's read models (behind, or no tracking row) limit archiving",
            labels=["shard"],
        ),
    }
    projected = GaugeMetricFamily(
        "wal_archive_read_models_seq",
        "Read models' tracking seq archiving waits for (-1: no tracking row for the shard)",
        labels=["shard"],
    )
    released = GaugeMetricFamily(
        "wal_archive_standby_released",
        "1 while a standby away past the maximum hold no longer holds archiving back",
        labels=["shard", "peer"],
    )
    errors = CounterMetricFamily(
        "wal_archive_errors", "Archive passes that failed", labels=["shard"]
    )
    for shard_id, state in service.states.items():
        families["wal_retain_records"].add_metric([shard_id], float(service.retain_records))
        families["wal_archive_last_seq"].add_metric([shard_id], float(state.archived_seq))
        families["wal_archive_segments"].add_metric([shard_id], float(state.segments))
        families["wal_archive_bytes"].add_metric([shard_id], float(state.bytes))
        families["wal_archive_lag_records"].add_metric([shard_id], float(state.lag_records))
        families["wal_archive_held_by_read_models"].add_metric(
            [shard_id], 1.0 if state.held_by_read_models else 0.0
        )
        if service.config.read_models is not None and state.passes:
            seq = state.read_models_seq
            projected.add_metric([shard_id], -1.0 if seq is None else float(seq))
        errors.add_metric([shard_id], float(state.errors))
        for peer in state.released:
            released.add_metric([shard_id, peer], 1.0)
    yield from families.values()
    yield from (released, projected, errors)
