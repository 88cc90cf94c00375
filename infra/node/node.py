"""One region's process (`exchange-dr node --region R`): what it runs, wired, in one object.

Each shard has a role here (infra/failover/controller.py). The leader writes (batched writer),
relays every committed WAL record to the shard's topic, sends it on the peer link to each standby
when the regions share a token (infra/replication/peer_link.py) and, in sync mode, holds each
acknowledgement until a standby confirmed the record. A standby applies those records (the peer
link's runs and the Faust agent's messages, whichever comes first -> Replicator) into its own
store and keeps its hot state in memory, so promotion needs no replay. Both serve the REST
facade; a standby answers commands with not_leader and the leader's URL.

The parts, one concern each, in this folder:
    wiring.py         build_node: shards, writers, gates, relays, replicators, the coordinator
    roles.py          the first role of each shard, then the failover manager's periodic tasks
    standby.py        a standby's intake: broker messages and peer-link runs -> Replicator
    confirmations.py  a standby's confirmations, and the leader's handling of them
    api_thread.py     the REST facade on its own thread and event loop
    projection.py     the region's read models, projected up to the confirmed point
    run.py            run_node: start, run the Faust worker (main thread), shut down
    heap.py           the cyclic garbage collector's policy
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import faust
import uvicorn

from application.replication.confirmation import ConfirmationCheck
from application.replication.sync_gate import SyncGate
from application.wal.auth import ReplicationKeys
from application.wal.writer import ShardWriter
from infra.coordination.zookeeper import Coordinator
from infra.failover.controller import ShardController
from infra.failover.state import Role
from infra.metrics.alerts import AlertSender
from infra.node.projection import NodeProjection
from infra.replication.rejections import RejectionAlerts
from infra.settings import Region, Settings
from infra.wal.archive_service import ArchiveService
from projections.replication.replicator import Replicator


@dataclass
class Node:
    """Everything one region runs, wired; `start_api` and the Faust worker run it."""

    settings: Settings
    region: Region
    faust_app: faust.App
    alerts: AlertSender = field(default_factory=lambda: AlertSender(None))
    coordinator: Coordinator | None = None
    controllers: dict[str, ShardController] = field(default_factory=dict)
    api_server: uvicorn.Server | None = None
    api_app: Any = None
    started_at: float = field(default_factory=time.monotonic)
    confirmations: dict[str, int] = field(default_factory=dict)  # by path: push, direct, broker
    # what records and confirmations are signed and verified with, and the leader's checks
    keys: ReplicationKeys | None = None
    ack_checks: dict[str, ConfirmationCheck] = field(default_factory=dict)
    rejection_alerts: RejectionAlerts | None = None
    archiving: ArchiveService | None = None  # the WAL archiver (infra/wal/archive_service.py)
    # the region's read models up to the confirmed point (infra/node/projection.py)
    projection: NodeProjection | None = None
    # a standby's intake of the peer link's record runs, by shard
    intakes: dict[str, Callable[[bytes], Future[dict[str, Any] | None] | None]] = field(
        default_factory=dict
    )

    # views used by metrics and the facade
    @property
    def writers(self) -> dict[str, ShardWriter]:
        return {s: c.writer for s, c in self.controllers.items()}

    @property
    def gates(self) -> dict[str, SyncGate]:
        return {s: c.gate for s, c in self.controllers.items() if c.role is Role.LEADER}

    @property
    def replicators(self) -> dict[str, Replicator]:
        return {s: c.replicator for s, c in self.controllers.items() if c.role is Role.STANDBY}

    @property
    def leads(self) -> bool:
        return any(c.role is Role.LEADER for c in self.controllers.values())

    def role_of(self, shard_id: str) -> Role:
        return self.controllers[shard_id].role

    def replica_lag_ms(self, shard_id: str) -> float | None:
        controller = self.controllers.get(shard_id)
        if controller is None or controller.role is not Role.STANDBY:
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
        if facade is not None and not controller.app.log_only:  # a witness keeps no index
            facade.reindex(controller.shard_id)
