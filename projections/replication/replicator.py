"""Replicator: the standby side of a shard. Verify, de-duplicate, fill gaps, store, stay hot.

Plain logic, no Kafka here: a node's Faust agent (infra/node/standby.py) hands it batches of wire
records.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from application.ports import WalStore
from application.shard.app import ShardApp
from application.wal.records import WALCorruptionError, WalRecord

log = logging.getLogger("exchange_dr.replicator")

Alert = Callable[[str, str, Mapping[str, Any]], None]


@dataclass
class ReplicationStats:
    applied: int = 0
    duplicates: int = 0
    gap_fills: int = 0
    healed: int = 0
    corrupt: int = 0
    stale: int = 0  # records of an epoch that does not own their seq (a deposed writer's)
    last_seen_seq: int = 0
    last_seen_recorded_at_us: int = 0
    corrupt_seqs: list[int] = field(default_factory=list)


class Replicator:
    """Applies a primary's WAL records to this region's store and hot state, exactly once.

    A corrupt record (checksum mismatch) is never applied: it raises a critical alert naming
    shard and seq and is replaced by the good copy read straight from the primary's store. A gap
    (a record beyond applied + 1) is filled from the primary's store, never skipped.
    """

    def __init__(
        self,
        app: ShardApp,
        primary: WalStore,
        *,
        alert: Alert | None = None,
        clock_us: Callable[[], int] | None = None,
    ) -> None:
        self.app = app
        self.primary = primary
        self.shard_id = app.shard_id
        self.stats = ReplicationStats()
        self._alert = alert
        self.accept: Callable[[WalRecord], bool] | None = None  # e.g. the epoch history
        self.stall_after_seq: int | None = None  # fault injection: never apply beyond it
        self.behind_since_us: int | None = None
        self._clock_us = clock_us or (lambda: time.time_ns() // 1000)
        self._head_at_last_catch_up = 0
        self.last_applied: list[WalRecord] = []  # the records the last call stored, in order

    @property
    def applied_seq(self) -> int:
        return self.app.seq

    def lag_records(self) -> int:
        return max(0, self.stats.last_seen_seq - self.app.seq)

    def lag_seconds(self) -> float:
        """How long this standby has been missing records it knows exist (0 when caught up)."""
        self._track_lag()
        if self.behind_since_us is None:
            return 0.0
        return max(0.0, (self._clock_us() - self.behind_since_us) / 1e6)

    def _track_lag(self) -> None:
        if self.lag_records() == 0:
            self.behind_since_us = None
        elif self.behind_since_us is None:
            self.behind_since_us = self._clock_us()

    def apply_wire(self, values: Iterable[Any]) -> int:
        """Apply a batch of broker messages (JSON bytes or decoded): each one wire record, or
        {"records": [...]} with a run of them. Returns the applied seq."""
        good: dict[int, WalRecord] = {}
        for record in self._records(values):
            if record is None or record.shard_id != self.shard_id:
                continue
            if self.accept is not None and not self.accept(record):
                self.stats.stale += 1
                continue
            if record.seq > self.stats.last_seen_seq:
                self.stats.last_seen_seq = record.seq
                self.stats.last_seen_recorded_at_us = record.recorded_at_us
            good.setdefault(record.seq, record)
        return self._apply(good)

    def catch_up(self, *, everything: bool = True) -> int:
        """Pull from the primary's store what it has beyond the applied seq (before a
        promotion: everything). With everything=False (the periodic safety net), only what the
        broker has not delivered since the previous such call: records that stayed overdue a
        whole interval (a lost topic, a quiet leader). Records committed since then are most
        likely in flight on the broker; pulling them now would only make their delivery a
        duplicate to decode and drop."""
        head = self.primary.head(self.shard_id).seq
        overdue = head if everything else self._head_at_last_catch_up
        self._head_at_last_catch_up = head
        if overdue > self.stats.last_seen_seq:
            self.stats.last_seen_seq = overdue
        return self._apply({})

    def unseen(self, values: Iterable[Any]) -> list[Any]:
        """The messages that bring a record beyond the applied seq, decoded (any thread: the
        applied seq only grows). The rest, copies of what the other path (the broker or the
        peer link) already brought, are counted as duplicates and dropped unverified."""
        applied = self.app.seq
        kept: list[Any] = []
        for value in values:
            try:
                data = orjson.loads(value) if isinstance(value, bytes | str) else value
            except ValueError:
                kept.append(value)  # apply_wire reports it
                continue
            items = _run_items(data)
            if all(_stored_already(item, applied) for item in items):
                self.stats.duplicates += len(items)
            else:
                kept.append(data)
        return kept

    def _records(self, values: Iterable[Any]) -> Iterator[WalRecord | None]:
        applied = self.app.seq
        for value in values:
            try:
                data = orjson.loads(value) if isinstance(value, bytes | str) else value
            except ValueError as exc:
                self.stats.corrupt += 1
                log.critical("undecodable WAL message for shard=%s: %s", self.shard_id, exc)
                continue
            for item in _run_items(data):
                if _stored_already(item, applied):
                    self.stats.duplicates += 1  # never applied twice, so not verified either
                    continue
                yield self._decode(item)

    def _decode(self, data: Any) -> WalRecord | None:
        try:
            if not isinstance(data, dict):
                raise TypeError(f"a wire record is an object, not {type(data).__name__}")
            return WalRecord.from_wire(data)
        except WALCorruptionError as exc:
            if exc.seq in self.stats.corrupt_seqs:
                return None  # another altered copy of a record already being healed
            self.stats.corrupt += 1
            if exc.seq > self.app.seq and exc.seq not in self.stats.corrupt_seqs:
                self.stats.corrupt_seqs.append(exc.seq)
            self.stats.last_seen_seq = max(self.stats.last_seen_seq, exc.seq)
            message = (
                f"corrupt WAL record in transit: shard {exc.shard_id} seq {exc.seq}; "
                "not applied, healing from the primary's store"
            )
            log.critical(message)
            if self._alert is not None:
                self._alert("WALRecordCorrupt", message, {"shard": exc.shard_id, "seq": exc.seq})
            if exc.seq <= self.app.seq:
                # a good copy came first (the other path, or the primary's store)
                self.stats.healed += 1
                log.warning(
                    "healed shard=%s seq=%s: a verified copy was already stored",
                    exc.shard_id,
                    exc.seq,
                )
            return None
        except (ValueError, TypeError) as exc:
            self.stats.corrupt += 1
            log.critical("undecodable WAL message for shard=%s: %s", self.shard_id, exc)
            return None

    def _apply(self, good: dict[int, WalRecord]) -> int:
        self.last_applied = []
        applied = self.app.seq
        for seq in [s for s in good if s <= applied]:
            del good[seq]
            self.stats.duplicates += 1
        # everything known to exist: delivered records, and the leader's head seen by catch_up
        target = max(max(good, default=applied), self.stats.last_seen_seq)
        if self.stats.corrupt_seqs:
            target = max(target, *self.stats.corrupt_seqs)
        batch: list[WalRecord] = []
        expected = applied + 1
        while expected <= target:
            record = good.get(expected)
            if record is None:
                fetched = list(self.primary.read_records(self.shard_id, expected - 1, 2000))
                if not fetched:
                    break  # the primary has no more: wait for the next delivery
                for item in fetched:
                    if item.seq > target:
                        break
                    if item.seq not in self.stats.corrupt_seqs:
                        self.stats.gap_fills += 1
                    good[item.seq] = item
                record = good.get(expected)
                if record is None:
                    break
            batch.append(record)
            expected += 1
        if self.stall_after_seq is not None:
            batch = [r for r in batch if r.seq <= self.stall_after_seq]
        if batch:
            self.app.append_replicated(batch)
            self.last_applied = batch
            healed = [s for s in self.stats.corrupt_seqs if s <= self.app.seq]
            for seq in healed:
                # a good copy replaced it: read from the primary's store, or delivered intact
                # on the other path (the broker or the peer link) in the same batch
                self.stats.corrupt_seqs.remove(seq)
                self.stats.healed += 1
                log.warning("healed shard=%s seq=%s from a verified copy", self.shard_id, seq)
            self.stats.applied += len(batch)
            log.debug(
                "replicated shard=%s epoch=%s seq=%s..%s",
                self.shard_id,
                batch[-1].epoch,
                batch[0].seq,
                batch[-1].seq,
            )
        self._track_lag()
        return self.app.seq


def _run_items(data: Any) -> list[Any]:
    """The wire records of one decoded message: {"records": [...]} or a single record."""
    run = data.get("records") if isinstance(data, dict) else None
    return run if isinstance(run, list) else [data]


def _stored_already(item: Any, applied: int) -> bool:
    """Whether a wire record names a seq at or below `applied` (nothing else is checked)."""
    seq = item.get("seq") if isinstance(item, dict) else None
    return type(seq) is int and 0 < seq <= applied
