"""A region's archiver: a background thread that runs an archive pass per shard now and then,
and keeps what metrics and alerts need (infra/metrics/dr_metrics.py).

On the shard's leader, every other configured region is a follower that holds archiving back
at the seq its standby last confirmed (the sync gate's view), until it has been silent longer
than the maximum hold: then an alert says archiving goes on without it, and that standby
re-seeds from a checkpoint when it returns. A standby region archives its own copy by the
same window and checkpoints, with no followers of its own.

A region that serves history (a full replica) also holds archiving at its read models'
tracking row (EXDR_ARCHIVE_READ_MODELS=wait, the default): history is served from them and
from the live WAL after that row. With no tracking row for a shard, archiving is held
entirely: a warning says so once, the state and wal_archive_held_by_read_models show it,
until the projector runs (or the operator sets EXDR_ARCHIVE_READ_MODELS=ignore). A witness
serves no history and does not wait.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from application.wal.retention import Follower
from infra.wal.archive import SegmentArchive
from infra.wal.archiver import Archiver, archive_totals
from infra.wal.retention_settings import ArchiveSettings

log = logging.getLogger("exchange_dr.archive")

AlertFn = Callable[[str, str, str, dict[str, Any]], None]


@dataclass
class ShardArchiveState:
    """The last pass of one shard, as metrics show it."""

    archived_seq: int = 0
    segments: int = 0
    bytes: int = 0
    lag_records: int = 0  # covered by a checkpoint and outside the window, yet still live
    passes: int = 0
    errors: int = 0
    last_decision: str = ""
    released: tuple[str, ...] = field(default=())
    read_models_seq: int | None = None  # their tracking seq (None: no row, or not waited for)
    held_by_read_models: bool = False  # they limit archiving now


class ArchiveService:
    """Runs `Archiver.run` for each shard every `interval_s` on its own thread."""

    def __init__(
        self,
        dsn: str,
        config: ArchiveSettings,
        shards: Sequence[str],
        followers: Callable[[str], list[Follower]],
        *,
        alert: AlertFn | None = None,
    ) -> None:
        self.dsn = dsn
        self.config = config
        self.archiver = Archiver(
            dsn, SegmentArchive(config.url), config.policy, read_models=config.read_models
        )
        self.shards = tuple(shards)
        self.followers = followers
        self.alert = alert
        self.states = {shard: ShardArchiveState() for shard in self.shards}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def retain_records(self) -> int:
        return self.config.policy.retain_records

    def start(self) -> ArchiveService:
        for shard in self.shards:  # metrics count the live WAL right from the start
            try:
                self._refresh(shard, self.states[shard])
            except Exception as exc:
                log.warning("archive state not read shard=%s error=%s", shard, exc)
        self._thread = threading.Thread(target=self._loop, name="wal-archiver", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        while not self._stop.wait(self.config.interval_s):
            for shard in self.shards:
                if self._stop.is_set():
                    return
                self.run_pass(shard)

    def run_pass(self, shard: str) -> ShardArchiveState:
        """One pass over a shard; failures are logged and counted, never raised."""
        state = self.states[shard]
        state.passes += 1
        try:
            run = self.archiver.run(shard, self.followers(shard))
        except Exception as exc:
            state.errors += 1
            log.error("archive pass failed shard=%s error=%s", shard, exc)
            return state
        newly_released = set(run.released) - set(state.released)
        state.released = run.released
        state.last_decision = run.decision
        was_held = state.held_by_read_models
        state.read_models_seq = run.read_models_seq
        state.held_by_read_models = run.held_by_read_models
        if run.held_by_read_models and not was_held:
            log.warning(
                "archive held by the read models shard=%s projection=%s tracking_seq=%s: %s",
                shard,
                self.config.read_models,
                "none" if run.read_models_seq is None else run.read_models_seq,
                run.decision,
            )
        elif was_held and not run.held_by_read_models:
            log.info(
                "archive no longer held by the read models shard=%s tracking_seq=%s",
                shard,
                run.read_models_seq,
            )
        for peer in sorted(newly_released):
            message = (
                f"shard {shard}: standby {peer} has been away longer than "
                f"{self.config.policy.max_hold_s:g}s; archiving no longer waits for it (it "
                "re-seeds from a checkpoint and the archive when it returns)"
            )
            log.warning(message)
            if self.alert is not None:
                self.alert("warning", "ArchiveStandbyReleased", message, {"shard": shard})
        try:
            self._refresh(shard, state)
        except Exception as exc:
            log.warning("archive state not read shard=%s error=%s", shard, exc)
        return state

    def _refresh(self, shard: str, state: ShardArchiveState) -> None:
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
            state.archived_seq, state.segments, state.bytes = archive_totals(conn, shard)
            row = conn.execute(
                "SELECT coalesce(max(c.seq), 0) FROM wal_checkpoints c JOIN wal_heads h "
                "ON h.shard_id = c.shard_id WHERE c.shard_id = %s AND c.seq <= h.seq - %s",
                (shard, self.retain_records),
            ).fetchone()
        archivable = 0 if row is None else int(row[0])
        state.lag_records = max(0, archivable - state.archived_seq)


def leader_followers(node: Any, shard: str, started_at: float) -> list[Follower]:
    """The followers a shard's leader waits for: every other region (witnesses too: they keep
    the WAL), each at the seq it confirmed itself (a majority's seq says nothing about the
    slowest follower), silent since the gate's last confirmation (or this process's start)."""
    controller = node.controllers.get(shard)
    if controller is None or controller.role not in ("leader", "handing_over"):
        return []
    gate = controller.gate
    now = time.monotonic()
    seen = gate.standby_seen_at or started_at
    return [
        Follower(peer.name, int(gate.stored_on(peer.name)), now - seen)
        for peer in node.settings.peers(node.region.name)
    ]


def start_archiving(node: Any) -> ArchiveService:
    """The node's archiver (infra/node/node.py), started."""
    config = ArchiveSettings.from_env(node.settings, node.region.pg_dsn)
    if not node.region.promotable:  # a witness serves no history: no read models to wait for
        config = dataclasses.replace(config, read_models=None)
    started_at = time.monotonic()

    def alert(severity: str, name: str, message: str, labels: dict[str, Any]) -> None:
        node.alerts.send(severity, name, message, labels)

    return ArchiveService(
        node.region.pg_dsn,
        config,
        list(node.controllers),
        lambda shard: leader_followers(node, shard, started_at),
        alert=alert,
    ).start()
