"""Replicator: the standby side of a shard. Verify, de-duplicate, fill gaps, store, stay hot.

Plain logic, no Kafka here: a node's Faust agent (infra/node/standby.py) hands it batches of wire
records.

Nothing that came over a wire is believed before it is verified: a message changes the
standby's bookkeeping (the seq it has seen, so its lag; the gaps it fills) only once its
checksum, its MAC under the regions' key and its place in the shard's hash chain hold. A
message that fails is counted by reason, logged with where it came from and alerted on, and
otherwise changes nothing; the record it claimed to be is read from the leader's store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from application.ports import WalStore
from application.recovery.replay import chain_start
from application.shard.app import ShardApp
from application.wal.auth import RejectedError, Rejection, ReplicationKeys
from application.wal.chain import ChainBrokenError, ChainCursor
from application.wal.records import WALCorruptionError, WalRecord
from application.wal.reseed import ReseedAction, ReseedPlan

log = logging.getLogger("exchange_dr.replicator")

Alert = Callable[[str, str, Mapping[str, Any]], None]
Reseed = Callable[["Replicator"], ReseedPlan]


@dataclass
class ReplicationStats:
    applied: int = 0
    duplicates: int = 0
    gap_fills: int = 0
    healed: int = 0
    corrupt: int = 0
    stale: int = 0  # records of an epoch that does not own their seq (a deposed writer's)
    last_seen_seq: int = 0  # the highest seq of a verified record (or the leader's head)
    last_seen_recorded_at_us: int = 0
    rejected: dict[str, int] = field(default_factory=dict)  # messages refused, by reason
    reseeds: int = 0  # re-seeds from the leader's checkpoint and archive


_SUSPECTS_MAX = 1024


class Replicator:
    """Applies a primary's WAL records to this region's store and hot state, exactly once.

    A message that does not verify (checksum, MAC, chain, a type that is not ours) is never
    applied: it raises a critical alert naming shard and seq and the record is read straight
    from the primary's store instead. A gap (a record beyond applied + 1) is filled from the
    primary's store, never skipped. With `keys` set every record must carry a valid MAC.
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
        self.frozen = False  # a promotion is reading the seq its epoch follows: apply nothing
        self.behind_since_us: int | None = None
        self._clock_us = clock_us or (lambda: time.time_ns() // 1000)
        self._head_at_last_catch_up = 0
        self.last_applied: list[WalRecord] = []  # the records the last call stored, in order
        self.keys: ReplicationKeys | None = None
        # seqs claimed by refused messages and why, only to report each once and its healing
        # (never a target)
        self._suspects: dict[int, set[str]] = {}
        self._ask_head = False  # a message was refused: the leader's store says what exists
        # asked on each catch-up while behind: re-seeds the standby when its gap reaches the
        # leader's archive (infra/wal/reseed.py); None: gaps are filled record by record
        self.reseed: Reseed | None = None
        # the gap reaches records the leader archived and no re-seed is possible from here:
        # nothing below this seq is asked of the leader's store (it cannot have it live)
        self.reseed_refused: ReseedPlan | None = None

    def lag_records(self) -> int:
        return max(0, self.stats.last_seen_seq - self.app.seq)

    def lag_seconds(self) -> float:
        """The age of the newest record this standby knows exists and lacks (0 when caught
        up), by the record's own timestamp: a backlog found just now is as old as its records.
        Without a timestamp (a corrupt record's seq), since when it has been missing them."""
        self._track_lag()
        if self.behind_since_us is None:
            return 0.0
        since = self.stats.last_seen_recorded_at_us or self.behind_since_us
        return max(0.0, (self._clock_us() - since) / 1e6)

    def _track_lag(self) -> None:
        if self.lag_records() == 0:
            self.behind_since_us = None
        elif self.behind_since_us is None:
            self.behind_since_us = self._clock_us()

    def apply_wire(self, values: Iterable[Any], *, source: str = "broker") -> int:
        """Apply a batch of broker messages (JSON bytes or decoded): each one wire record, or
        {"records": [...]} with a run of them. Returns the applied seq."""
        good: dict[int, WalRecord] = {}
        for record in self._records(values, source):
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
        if self.reseed is not None and self.app.seq < head and not self.frozen:
            self._ask_reseed()
            if self.reseed_refused is not None:
                self.stats.last_seen_seq = max(self.stats.last_seen_seq, head)
                self._track_lag()
                return self.app.seq  # refused, alerted: no error loop on the archive
        overdue = head if everything else self._head_at_last_catch_up
        self._head_at_last_catch_up = head
        if overdue > self.stats.last_seen_seq:
            self.stats.last_seen_seq = overdue
            self.stats.last_seen_recorded_at_us = 0
            if overdue > self.app.seq:
                newest = list(self.primary.read_records(self.shard_id, overdue - 1, 1))
                if newest:
                    self.stats.last_seen_recorded_at_us = newest[0].recorded_at_us
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

    def _records(self, values: Iterable[Any], source: str) -> Iterator[WalRecord | None]:
        applied = self.app.seq
        for value in values:
            try:
                data = orjson.loads(value) if isinstance(value, bytes | str) else value
            except ValueError as exc:
                self._reject(Rejection.MALFORMED, None, source, f"not JSON: {exc}")
                continue
            for item in _run_items(data):
                if _stored_already(item, applied):
                    self.stats.duplicates += 1  # never applied twice, so not verified either
                    continue
                yield self._decode(item, source)

    def _decode(self, data: Any, source: str) -> WalRecord | None:
        """The verified record of a wire message (checksum, then MAC), or None."""
        try:
            if not isinstance(data, dict):
                raise TypeError(f"a wire record is an object, not {type(data).__name__}")
            record = WalRecord.from_wire(data)
            if self.keys is not None:
                self.keys.verify_record(record.checksum, record.mac)
        except WALCorruptionError as exc:
            reason = Rejection.CHECKSUM if "checksum" in str(exc) else Rejection.MALFORMED
            self._reject(reason, exc.seq, source, str(exc))
            return None
        except RejectedError as exc:
            self._reject(exc.reason, _claimed_seq(data), source, exc.detail)
            return None
        except (ValueError, TypeError) as exc:
            self._reject(Rejection.MALFORMED, None, source, str(exc))
            return None
        return record

    def _reject(self, reason: Rejection, seq: int | None, source: str, detail: str) -> None:
        """A message that did not verify: counted, logged with its source, alerted on (once
        per claimed seq), and otherwise without effect on seq, lag or gaps."""
        self.stats.rejected[reason.value] = self.stats.rejected.get(reason.value, 0) + 1
        self._ask_head = True
        reported = self._suspects.get(seq) if seq is not None else None
        if reported is not None and reason.value in reported:
            return  # another copy of a record already reported, refused for the same reason
        if reported is None:
            self.stats.corrupt += 1
        if seq is not None and seq > self.app.seq:
            if reported is None and len(self._suspects) >= _SUSPECTS_MAX:
                del self._suspects[next(iter(self._suspects))]
            self._suspects.setdefault(seq, set()).add(reason.value)
        shown: int | str = "?" if seq is None else seq
        labels: dict[str, Any] = {"shard": self.shard_id, "seq": shown}
        if reason in (Rejection.CHECKSUM, Rejection.MALFORMED):
            name, what = "WALRecordCorrupt", "corrupt WAL record in transit"
        else:
            name, what = "ReplicationRejected", f"WAL record refused ({reason.value})"
            labels.update(reason=reason.value, source=source)
        message = (
            f"{what}: shard {self.shard_id} seq {shown}; not applied, healing from the "
            "primary's store"
        )
        log.critical("%s (source=%s: %s)", message, source, detail)
        if self._alert is not None:
            self._alert(name, message, labels)
        if seq is not None and 0 < seq <= self.app.seq:
            # a good copy came first (the other path, or the primary's store)
            self.stats.healed += 1
            log.warning(
                "healed shard=%s seq=%s: a verified copy was already stored", self.shard_id, seq
            )

    def _ask_reseed(self) -> ReseedAction:
        """Whether the gap reaches the leader's archive: re-seeded there and then (RESEED),
        refused and alerted (REFUSE), or filled from the live table (NONE)."""
        assert self.reseed is not None
        plan = self.reseed(self)
        self.reseed_refused = plan if plan.action is ReseedAction.REFUSE else None
        if plan.action is ReseedAction.RESEED:
            self.stats.reseeds += 1
        return plan.action

    def _apply(self, good: dict[int, WalRecord]) -> int:
        self.last_applied = []
        applied = self.app.seq
        if self.frozen:
            self._track_lag()
            return applied
        for seq in [s for s in good if s <= applied]:
            del good[seq]
            self.stats.duplicates += 1
        if self._ask_head:
            # a refused message may have stood for a real record: the leader's store (not the
            # message) says how far the shard goes
            self._ask_head = False
            head = getattr(self.primary, "head", None)
            if head is not None:
                self.stats.last_seen_seq = max(self.stats.last_seen_seq, head(self.shard_id).seq)
        # everything known to exist: delivered records, and the leader's head seen by catch_up
        target = max(max(good, default=applied), self.stats.last_seen_seq)
        chain = ChainCursor(self.shard_id, last=getattr(self.app, "chain_checksum", None))
        stored: set[int] = set()  # seqs whose copy was read from the primary's store
        batch: list[WalRecord] = []
        expected = applied + 1
        reseed_asked = False
        while expected <= target:
            record = good.get(expected)
            if record is None and self.reseed_refused is not None:
                break  # archived on the leader, out of reach here: refused and alerted
            if record is None and self.reseed is not None and not reseed_asked:
                # before reading a gap from the leader: if it reaches the leader's archive, a
                # re-seed (with its alert), not a copy record by record through the archive
                reseed_asked = True
                action = self._ask_reseed()
                if action is ReseedAction.REFUSE:
                    break
                if action is ReseedAction.RESEED:
                    applied = self.app.seq  # the leader's checkpoint, installed
                    for seq in [s for s in good if s <= applied]:
                        del good[seq]
                    stored = {s for s in stored if s > applied}
                    batch = []  # all below the first missing record, so below the checkpoint
                    chain = ChainCursor(
                        self.shard_id, last=getattr(self.app, "chain_checksum", None)
                    )
                    expected = applied + 1
                    continue
            if record is None:
                fetched = list(self.primary.read_records(self.shard_id, expected - 1, 2000))
                if not fetched:
                    break  # the primary has no more: wait for the next delivery
                for item in fetched:
                    if item.seq > target:
                        break
                    if item.seq not in self._suspects and item.seq not in good:
                        self.stats.gap_fills += 1
                    good[item.seq] = item
                    stored.add(item.seq)
                record = good.get(expected)
                if record is None:
                    break
            try:
                self._check_link(chain, record, from_store=expected in stored)
            except (RejectedError, ChainBrokenError) as exc:
                reason = exc.reason if isinstance(exc, RejectedError) else Rejection.CHAIN
                if expected in stored:
                    self._source_corrupt(expected, reason, str(exc))
                    break
                self._reject(reason, expected, "broker", str(exc))
                del good[expected]  # the next turn reads it from the primary's store
                self._forget_claims()
                continue
            batch.append(record)
            expected += 1
        if self.stall_after_seq is not None:
            batch = [r for r in batch if r.seq <= self.stall_after_seq]
        if batch:
            self._store(batch, stored)
            for seq in [s for s in self._suspects if s <= self.app.seq]:
                # a good copy replaced it: read from the primary's store, or delivered intact
                # on the other path (the broker or the peer link) in the same batch
                del self._suspects[seq]
                self.stats.healed += 1
                log.warning("healed shard=%s seq=%s from a verified copy", self.shard_id, seq)
            log.debug(
                "replicated shard=%s epoch=%s seq=%s..%s",
                self.shard_id,
                batch[-1].epoch,
                batch[0].seq,
                batch[-1].seq,
            )
        self._track_lag()
        return self.app.seq

    def _check_link(self, chain: ChainCursor, record: WalRecord, *, from_store: bool) -> None:
        """A record's MAC (from the leader's store, one written before records were signed
        may have none) and its link to the record before it."""
        if record.mac is None and record.prev_checksum is None and from_store:
            chain.legacy_upto = chain_start(self.primary, self.shard_id)
        elif self.keys is not None:
            self.keys.verify_record(record.checksum, record.mac)
        chain.advance(record.seq, record.prev_checksum, record.checksum)

    def _store(self, batch: list[WalRecord], stored: set[int]) -> None:
        """Hand verified records to the shard; one it refuses to decode (a type that is not
        ours) is reported, and is read again from the leader's store if it came otherwise."""
        legacy = [r.seq for r in batch if r.prev_checksum is None]
        if legacy:
            extend = getattr(self.app.store, "extend_chain_start", None)
            if extend is not None:
                extend(self.shard_id, max(legacy))
        try:
            self.app.append_replicated(batch)
        except WALCorruptionError as exc:
            if exc.seq in stored:
                self._source_corrupt(exc.seq, Rejection.UNKNOWN_TYPE, str(exc))
            else:
                self._reject(Rejection.UNKNOWN_TYPE, exc.seq, "broker", str(exc))
                self._forget_claims()
        self.last_applied = [r for r in batch if r.seq <= self.app.seq]
        self.stats.applied += len(self.last_applied)

    def _forget_claims(self) -> None:
        """A signed record did not fit after all: how far the shard goes is what is applied
        and what the leader's store holds, not what delivered records claimed."""
        seen = self.app.seq
        head = getattr(self.primary, "head", None)
        if head is not None:
            seen = max(seen, head(self.shard_id).seq)
        self.stats.last_seen_seq = seen

    def _source_corrupt(self, seq: int, reason: Rejection, detail: str) -> None:
        """The leader's own store holds a record that does not verify: nothing to heal from."""
        self.stats.rejected[reason.value] = self.stats.rejected.get(reason.value, 0) + 1
        message = (
            f"WAL record in the leader's store refused ({reason.value}): shard "
            f"{self.shard_id} seq {seq}; replication stops before it"
        )
        log.critical("%s (source=store: %s)", message, detail)
        if self._alert is not None:
            self._alert(
                "ReplicationRejected",
                message,
                {"shard": self.shard_id, "seq": seq, "reason": reason.value, "source": "store"},
            )


def _claimed_seq(data: Any) -> int | None:
    seq = data.get("seq") if isinstance(data, dict) else None
    return seq if type(seq) is int else None


def _run_items(data: Any) -> list[Any]:
    """The wire records of one decoded message: {"records": [...]} or a single record."""
    run = data.get("records") if isinstance(data, dict) else None
    return run if isinstance(run, list) else [data]


def _stored_already(item: Any, applied: int) -> bool:
    """Whether a wire record names a seq at or below `applied` (nothing else is checked)."""
    seq = item.get("seq") if isinstance(item, dict) else None
    return type(seq) is int and 0 < seq <= applied
