"""The node's own read models: its region's store projected up to the confirmed point.

A thread, never the writer: every `interval_s` (at most; sooner after a commit) it asks each shard's
controller for the seq no failover can take back (`confirmed_seq`), records that point durably
in the region's database (`wal_confirmed`: seq, epoch, checksum; forward only), then applies the
store's records from the tracking row up to it with ReadModelProjector, one transaction a shard.
A deposed leader's unconfirmed tail is therefore never projected, and the external projector
(`exchange-dr projections run`) stops at the same recorded point.

Errors are logged and retried on the next round; the views stay exactly at their tracking row.
How far they trail the store is `lag` (seq - tracked), a metric and a log line when it grows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from application.wal.records import WalRecord
from infra.failover.controller import ShardController
from projections.read_models.confirmed import ConfirmedPoint, record_confirmed
from projections.read_models.projector import ReadModelProjector, StoreBehindError

log = logging.getLogger("exchange_dr.projections")

INTERVAL_S = 0.05
VERIFY_EVERY_S = 1.0  # a fork with nothing new to apply is found within this
LAG_LOG_RECORDS = 1000  # the views trailing the store by more than this is logged
LAG_LOG_EVERY_S = 5.0


@dataclass
class ShardProjection:
    """What the loop knows of one shard between rounds."""

    confirmed: ConfirmedPoint | None = None
    tracked: int = -1  # unknown until the first round reads it
    lag: int = 0
    verified_at: float = 0.0
    lag_logged_at: float = 0.0
    failing: str = ""


@dataclass
class NodeProjection:
    """The projection thread of one region's node."""

    controllers: Mapping[str, ShardController]
    projector: ReadModelProjector
    project: bool = True  # EXDR_PROJECT_IN_NODE; off: only the confirmed point is recorded
    interval_s: float = INTERVAL_S
    shards: dict[str, ShardProjection] = field(default_factory=dict)
    rounds: int = 0
    _wake: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> NodeProjection:
        self._thread = threading.Thread(target=self._run, name="projection", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def poke(self) -> None:
        """Something committed or was confirmed: look soon (any thread; never blocks)."""
        self._wake.set()

    def lag(self, shard: str) -> int:
        state = self.shards.get(shard)
        return 0 if state is None else state.lag

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            began = time.monotonic()
            for shard, controller in self.controllers.items():
                state = self.shards.setdefault(shard, ShardProjection())
                try:
                    self.run_shard(shard, controller, state)
                except Exception as exc:  # the next round retries; the writer never waits
                    reason = f"{type(exc).__name__}: {exc}"
                    if reason != state.failing:
                        state.failing = reason
                        log.exception("projection round failed shard=%s; retrying", shard)
                else:
                    state.failing = ""
            self.rounds += 1
            # at most one round per interval however often commits poke: the thread shares
            # the interpreter with the writer and the facade, and each round costs queries
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - began)))

    def run_shard(self, shard: str, controller: ShardController, state: ShardProjection) -> None:
        """One round of one shard: record the confirmed point, project up to it."""
        confirmed = controller.confirmed_seq()
        moved = state.confirmed is None or state.confirmed.seq != confirmed
        if confirmed is not None and confirmed > 0 and moved:
            state.confirmed = self._record(shard, confirmed) or state.confirmed
        if not self.project:
            return
        if state.tracked < 0:
            state.tracked = self.projector.tracked(shard)
        point = state.confirmed
        now = time.monotonic()
        if point is not None and point.seq > state.tracked:
            try:
                report = self.projector.apply(shard, (), through=point.seq)
                state.tracked = report.tracked
            except StoreBehindError as exc:
                state.tracked = self.projector.tracked(shard)
                log.warning("projection waits for the store shard=%s: %s", shard, exc)
            state.verified_at = now
        elif point is not None and now - state.verified_at >= VERIFY_EVERY_S:
            # nothing new: still compare the tracked record with the store (a fork after a
            # rejoin may leave the views ahead of, or beside, the store)
            state.verified_at = now
            rolled = self.projector.verify(shard, upto=point.seq)
            if rolled is not None:
                state.tracked = rolled.tracked
        head = controller.app.seq
        state.lag = max(0, head - state.tracked)
        if state.lag > LAG_LOG_RECORDS and now - state.lag_logged_at >= LAG_LOG_EVERY_S:
            state.lag_logged_at = now
            log.warning(
                "read models trail the store shard=%s seq=%s tracked=%s confirmed=%s lag=%s",
                shard,
                head,
                state.tracked,
                None if point is None else point.seq,
                state.lag,
            )

    def _record(self, shard: str, seq: int) -> ConfirmedPoint | None:
        """The record at `seq` from the region's store, recorded as the confirmed point."""
        # its checksum as stored (the projector verifies every record it applies)
        found: list[WalRecord] = list(
            self.projector.store.read_records(shard, seq - 1, 1, verify=False)
        )
        if not found or found[0].seq != seq:
            return None  # not readable yet (the store is behind what the node reports)
        record = found[0]
        point = ConfirmedPoint(shard, seq, record.epoch, record.checksum)
        record_confirmed(self.projector.sessions, point)
        return point
