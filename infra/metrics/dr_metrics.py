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
            "wal_events_count", "WAL records held for the shard in this region", labels=["shard"]
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
        gaps = CounterMetricFamily(
            "replication_gap_fills", "Records fetched from the primary's store", labels=["shard"]
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
            count.add_metric([shard_id], float(app.seq))
            events.add_metric([shard_id], float(app.events_written))
            gate = node.gates.get(shard_id)
            if gate is not None:
                degraded.add_metric([shard_id], 1.0 if gate.degraded else 0.0)
                waiting.add_metric([shard_id], float(gate.waiting))
                lag_r.add_metric([shard_id], float(max(0, app.seq - gate.standby_seq)))
            replicator = node.replicators.get(shard_id)
            if replicator is not None:
                lag_s.add_metric([shard_id], replicator.lag_seconds())
                lag_r.add_metric([shard_id], float(replicator.lag_records()))
                corrupt.add_metric([shard_id], float(replicator.stats.corrupt))
                gaps.add_metric([shard_id], float(replicator.stats.gap_fills))
        yield from (
            up,
            seq,
            count,
            events,
            lag_s,
            lag_r,
            degraded,
            waiting,
            corrupt,
            gaps,
            failovers,
            info,
            rto,
            zk,
            confirmations,
            link,
        )
