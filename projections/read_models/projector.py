"""Exactly-once application of WAL records to the read models, and rebuilds from scratch.

Each call is ONE transaction: lock the tracking row `(projection, shard)`, drop records at or
below it, fill any gap from the region's own WAL store (never skip: the WAL is dense), project,
move the tracking row. A crash before the commit leaves both the views and the tracking row as
they were, so redelivered records apply exactly once.

The tracking row keeps the epoch and checksum of the record it stands on, not only its seq: after
a failover the store may hold another record at that seq (a deposed leader's tail, projected
before it was set aside, and the new leader's record both link to the record before). Each call
first compares that checksum with the store's record; a difference is a fork, and the shard's
rows are rebuilt from the store in one transaction (readers see the old rows until it commits).
Given a confirmed point (`end`), a call projects exactly up to it and proves it: the records must
chain from the tracking row and end at the confirmed record's checksum.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

from sqlalchemy import delete, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from application.ports import WalStore
from application.recovery.replay import chain_start
from application.wal.chain import ChainBrokenError, ChainCursor
from application.wal.records import GENESIS, WalRecord
from domain.values import Instrument
from projections.read_models.confirmed import ConfirmedPoint
from projections.read_models.models import (
    READ_MODEL_TABLES,
    BalanceRow,
    OrderRow,
    PositionRow,
    TrackingRow,
    TradeRow,
)
from projections.read_models.views import ViewRows, needed_ids, project_record

log = logging.getLogger("exchange_dr.projections")

PROJECTION = "read_models"
ProgressFn = Callable[[int, int], None]
ForkAlert = Callable[[str, str], None]  # (shard, message): a critical alert
_Row = TypeVar("_Row", OrderRow, PositionRow, BalanceRow)


class StoreBehindError(Exception):
    """The region's store does not (yet) hold records a gap needs: apply what is contiguous."""


@dataclass(frozen=True, slots=True)
class Fork:
    """The views stand on a record the store no longer holds at that seq."""

    shard: str
    seq: int
    reason: str


@dataclass(frozen=True, slots=True)
class ApplyReport:
    """What one transaction did for one shard."""

    shard: str
    tracked: int
    applied: int
    duplicates: int
    filled_from_store: int


@dataclass(frozen=True, slots=True)
class RebuildReport:
    """What a rebuild from scratch did."""

    shards: tuple[str, ...]
    records: int
    orders: int
    trades: int
    seconds: float


class ReadModelProjector:
    """Applies verified WAL records of any shard to the views, exactly once."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        store: WalStore,
        instruments: Iterable[Instrument],
        *,
        name: str = PROJECTION,
        page: int = 2000,
        on_fork: ForkAlert | None = None,
    ) -> None:
        self.sessions = sessions
        self.store = store
        self.instruments: Mapping[str, Instrument] = {i.symbol: i for i in instruments}
        self.name = name
        self.page = page
        self.on_fork = on_fork
        self.forks = 0  # rollbacks done (a metric; each one also logged critical and alerted)
        self._written: dict[str, tuple[int, str]] = {}  # shard -> the tracking row it committed

    def tracked(self, shard: str) -> int:
        """The last seq of `shard` applied to the views."""
        with self.sessions() as session:
            seq = session.scalar(
                select(TrackingRow.seq).where(
                    TrackingRow.projection == self.name, TrackingRow.shard == shard
                )
            )
        return int(seq or 0)

    def tracked_record(self, shard: str) -> tuple[int, int, str | None]:
        """(seq, epoch, checksum) of the last record of `shard` applied to the views."""
        with self.sessions() as session:
            row = session.execute(
                select(TrackingRow.seq, TrackingRow.epoch, TrackingRow.checksum).where(
                    TrackingRow.projection == self.name, TrackingRow.shard == shard
                )
            ).first()
        return (0, 0, None) if row is None else (int(row[0]), int(row[1]), row[2])

    def apply(
        self,
        shard: str,
        records: Sequence[WalRecord],
        *,
        through: int = 0,
        end: ConfirmedPoint | None = None,
    ) -> ApplyReport:
        """Apply `records` of one shard (any order, duplicates allowed) and every record up to
        `through` (e.g. the seq of a corrupt delivery), reading what is missing from the store.
        Raises StoreBehindError, after committing the contiguous part, if the store lacks some.

        With `end` (the shard's confirmed point), exactly the records up to it are applied, all
        or nothing: they must chain from the tracking row and end at `end.checksum`. Delivered
        records that do not (another fork's) are replaced by the store's; if the store's do not
        either, nothing is applied and StoreBehindError says why. If the views stand on a
        record the store no longer holds, the shard's rows are rebuilt from the store instead.
        """
        behind: StoreBehindError | None = None
        fork: Fork | None = None
        with self.sessions.begin() as session:
            tracking = self._lock_tracking(session, shard)
            tracked = tracking.seq
            # the store is read for the tracked record only when this process did not write
            # the tracking row itself, or something says it may have changed: a delivered
            # record at that seq that differs, or (below) a store record that does not link
            trusted = tracking.checksum is not None and self._written.get(shard) == (
                tracked,
                tracking.checksum,
            )
            if any(r.seq == tracked and r.checksum != tracking.checksum for r in records):
                trusted = False
            if trusted:
                fork, anchor = None, tracking.checksum
            else:
                fork, anchor = self._check_tracking(shard, tracking)
            if end is not None:
                through = max(end.seq, tracked)
                records = [r for r in records if r.seq <= end.seq]
            fresh = {r.seq: r for r in records if r.shard_id == shard and r.seq > tracked}
            target = max([through, *fresh])
            if fork is not None:
                fresh, target = {}, tracked  # nothing here: the rebuild below replaces it all
            sequence: list[WalRecord] = []
            filled = 0
            expected = tracked + 1
            for seq in [*sorted(fresh), target + 1]:
                if seq > expected and expected <= target:
                    wanted = min(seq - 1, target)
                    missing = self._read_store(shard, expected, wanted)
                    sequence.extend(missing)
                    filled += len(missing)
                    expected += len(missing)
                    if expected <= wanted:
                        behind = StoreBehindError(
                            f"shard {shard}: the store has no seq {expected} yet "
                            f"(views at {tracked}, records up to {target} seen)"
                        )
                        break
                if seq <= target:
                    sequence.append(fresh[seq])
                    expected = seq + 1
            if filled and records:  # the stream missed some (the node's loop reads the store)
                log.warning(
                    "projection %s shard %s: %s missing records read from the store "
                    "(views %s -> %s)",
                    self.name,
                    shard,
                    filled,
                    tracked,
                    expected - 1,
                )
            try:
                if end is not None and fork is None:
                    sequence, filled, behind = self._confirmed_sequence(
                        shard, tracked, anchor, sequence, fresh, end, filled
                    )
                else:
                    sequence, broken = self._chained(shard, tracked, anchor, sequence, fresh)
                    if broken is not None:
                        behind = broken
            except ChainBrokenError:
                # the store's own records do not link to the tracked one: a fork, or corruption
                fork, _ = self._check_tracking(shard, tracking) if trusted else (None, None)
                if fork is None:
                    raise
                sequence, behind = [], None
            self._project(session, sequence)
            if sequence:
                last = sequence[-1]
                tracking.seq, tracking.epoch = last.seq, last.epoch
                tracking.checksum = last.checksum
            elif anchor is not None and tracking.checksum is None and tracked > 0:
                tracking.checksum = anchor  # a row from before migration 0007: adopt the store's
            if tracking.checksum is not None:
                self._written[shard] = (tracking.seq, tracking.checksum)
            report = ApplyReport(
                shard, tracking.seq, len(sequence), len(records) - len(fresh), filled
            )
        if fork is not None:
            upto = end.seq if end is not None else max(through, *(r.seq for r in records), 0)
            return self._roll_back(fork, upto)
        if behind is not None:
            raise behind
        return report

    def verify(self, shard: str, *, upto: int) -> ApplyReport | None:
        """Compare the tracking row with the store (no records applied); on a fork, rebuild the
        shard's rows from the store up to `upto` (the confirmed seq). None: no fork."""
        with self.sessions.begin() as session:
            fork, _ = self._check_tracking(shard, self._lock_tracking(session, shard))
        return None if fork is None else self._roll_back(fork, upto)

    def catch_up(self, shard: str) -> ApplyReport:
        """Apply whatever the store holds beyond the tracking row (start-up, idle streams)."""
        head = self.store.head(shard).seq
        return self.apply(shard, (), through=head)

    def rebuild(
        self,
        shards: Sequence[str],
        *,
        everything: bool,
        progress: ProgressFn | None = None,
        upto: Mapping[str, int] | None = None,
    ) -> RebuildReport:
        """Empty the views (all of them, or the given shards' rows) and replay the store (up to
        `upto[shard]` where given, else its head), in one transaction: readers see the old
        views until the new ones are complete."""
        started = time.perf_counter()
        records = 0
        with self.sessions.begin() as session:
            trackers = {shard: self._lock_tracking(session, shard) for shard in sorted(shards)}
            if everything:
                session.execute(text(f"TRUNCATE {', '.join(READ_MODEL_TABLES)}"))
                session.execute(
                    delete(TrackingRow).where(
                        TrackingRow.projection == self.name, TrackingRow.shard.not_in(shards)
                    )
                )
            else:
                for table in (OrderRow, TradeRow, PositionRow, BalanceRow):
                    session.execute(delete(table).where(table.shard.in_(shards)))
            heads = {shard: self.store.head(shard).seq for shard in shards}
            if upto is not None:
                heads = {s: min(seq, upto.get(s, seq)) for s, seq in heads.items()}
            total = sum(heads.values())
            for shard in shards:
                last: WalRecord | None = None
                for chunk in _chunks(
                    self.store.iter_records(shard, 0, page=self.page, upto_seq=heads[shard]),
                    self.page,
                ):
                    self._project(session, chunk)
                    records += len(chunk)
                    last = chunk[-1]
                    session.flush()
                    session.expunge_all()
                    if progress is not None:
                        progress(records, total)
                tracker = session.merge(trackers[shard])
                tracker.seq = heads[shard] if last is None else last.seq
                tracker.epoch = 0 if last is None else last.epoch
                tracker.checksum = None if last is None else last.checksum
            orders = _count(session, OrderRow, shards)
            trades = _count(session, TradeRow, shards)
        if progress is not None:
            progress(records, total)
        return RebuildReport(tuple(shards), records, orders, trades, time.perf_counter() - started)

    # -- inside the transaction ----------------------------------------------------------------

    def _lock_tracking(self, session: Session, shard: str) -> TrackingRow:
        session.execute(
            insert(TrackingRow)
            .values(projection=self.name, shard=shard, seq=0)
            .on_conflict_do_nothing()
        )
        return session.scalars(
            select(TrackingRow)
            .where(TrackingRow.projection == self.name, TrackingRow.shard == shard)
            .with_for_update()
        ).one()

    def _check_tracking(self, shard: str, tracking: TrackingRow) -> tuple[Fork | None, str | None]:
        """Does the store still hold the record the views stand on? Returns (the fork if not,
        the checksum the next record must link to: None while unknown)."""
        if tracking.seq == 0:
            return None, GENESIS
        held = self._read_store(shard, tracking.seq, tracking.seq)
        if not held:
            head = self.store.head(shard).seq
            if head < tracking.seq:
                return (
                    Fork(
                        shard,
                        tracking.seq,
                        f"the views stand at seq {tracking.seq} (epoch {tracking.epoch}), "
                        f"the store ends at seq {head}",
                    ),
                    None,
                )
            return None, tracking.checksum  # not readable here (archived): the chain decides
        record = held[0]
        if tracking.checksum is not None and record.checksum != tracking.checksum:
            return (
                Fork(
                    shard,
                    tracking.seq,
                    f"the views applied seq {tracking.seq} of epoch {tracking.epoch} "
                    f"(checksum {tracking.checksum[:16]}...), the store holds epoch "
                    f"{record.epoch}'s record there (checksum {record.checksum[:16]}...)",
                ),
                None,
            )
        return None, record.checksum

    def _roll_back(self, fork: Fork, upto: int) -> ApplyReport:
        """Rebuild the shard's rows from the store up to `upto`, in one transaction."""
        message = (
            f"read models of shard {fork.shard} forked from the WAL at seq {fork.seq}: "
            f"{fork.reason}; rebuilding the shard's rows from the store"
        )
        log.critical(
            "read models forked: shard=%s seq=%s projection=%s (%s); rebuilding up to seq=%s",
            fork.shard,
            fork.seq,
            self.name,
            fork.reason,
            upto,
        )
        self.forks += 1
        if self.on_fork is not None:
            try:
                self.on_fork(fork.shard, message)
            except Exception:  # the alert is best effort; the rollback is not
                log.exception("fork alert of shard=%s failed", fork.shard)
        limit = upto or self.store.head(fork.shard).seq
        report = self.rebuild([fork.shard], everything=False, upto={fork.shard: limit})
        tracked = self.tracked(fork.shard)
        log.critical(
            "read models rolled back: shard=%s seq=%s records=%s",
            fork.shard,
            tracked,
            report.records,
        )
        return ApplyReport(fork.shard, tracked, report.records, 0, report.records)

    def _confirmed_sequence(
        self,
        shard: str,
        tracked: int,
        anchor: str | None,
        sequence: list[WalRecord],
        delivered: Mapping[int, WalRecord],
        end: ConfirmedPoint,
        filled: int,
    ) -> tuple[list[WalRecord], int, StoreBehindError | None]:
        """tracked+1..end.seq, chained from `anchor` and ending at `end.checksum`, or nothing."""
        if end.seq <= tracked:
            return [], 0, None
        try:
            linked, broken = self._chained(shard, tracked, anchor, sequence, delivered)
        except ChainBrokenError:
            linked, broken = [], None  # a delivered fork ran into the store's own records
        if broken is None and _reaches(linked, end):
            return linked, filled, None
        # what was delivered is not the confirmed history (or the store must fill it): the
        # store's own records, which must lead to the confirmed record
        stored = self._read_store(shard, tracked + 1, end.seq)
        linked, _ = self._chained(shard, tracked, anchor, stored, {})
        if _reaches(linked, end):
            if delivered:
                log.warning(
                    "projection %s shard=%s: delivered records do not end at the confirmed "
                    "record seq=%s epoch=%s; the store's were applied",
                    self.name,
                    shard,
                    end.seq,
                    end.epoch,
                )
            return linked, len(linked), None
        return (
            [],
            0,
            StoreBehindError(
                f"shard {shard}: the store's records {tracked + 1}..{end.seq} do not end at the "
                f"confirmed record (epoch {end.epoch}, checksum {end.checksum[:16]}...); "
                "waiting for the confirmed point to move"
            ),
        )

    def _chained(
        self,
        shard: str,
        tracked: int,
        anchor: str | None,
        sequence: list[WalRecord],
        delivered: Mapping[int, WalRecord],
    ) -> tuple[list[WalRecord], StoreBehindError | None]:
        """The part of `sequence` that continues the shard's hash chain from the record at
        `tracked` (checksum `anchor`). A delivered record that does not link (signed, but of
        another history, or out of order) is replaced by the store's copy; the store's own
        records must link (else it raises)."""
        chain = ChainCursor(shard, legacy_upto=chain_start(self.store, shard))
        chain.last = GENESIS if tracked == 0 else anchor
        linked: list[WalRecord] = []
        for record in sequence:
            try:
                chain.advance(record.seq, record.prev_checksum, record.checksum)
            except ChainBrokenError as exc:
                if delivered.get(record.seq) is not record:
                    raise  # the region's own store: corruption, reported by the caller
                log.critical(
                    "WAL record refused (chain): shard=%s seq=%s from the broker (%s); "
                    "reading it from the store",
                    shard,
                    record.seq,
                    exc,
                )
                copy = self._read_store(shard, record.seq, record.seq)
                if not copy:
                    return linked, StoreBehindError(
                        f"shard {shard}: seq {record.seq} refused and not in the store yet"
                    )
                chain.advance(copy[0].seq, copy[0].prev_checksum, copy[0].checksum)
                record = copy[0]
            linked.append(record)
        return linked, None

    def _read_store(self, shard: str, first: int, last: int) -> list[WalRecord]:
        """Records first..last from the region's store, verified, up to the first one missing."""
        found: list[WalRecord] = []
        position = first - 1
        while position < last:
            page = self.store.read_records(shard, position, min(self.page, last - position))
            for record in page:
                if record.seq != position + 1:
                    return found
                found.append(record)
                position = record.seq
            if not page:
                break
        return found

    def _project(self, session: Session, records: Sequence[WalRecord]) -> None:
        if not records:
            return
        rows = ViewRows(self.instruments)
        ids = needed_ids(records)
        if ids:
            rows.orders.update(_load(session, OrderRow, OrderRow.order_id, ids))
            rows.positions.update(_load(session, PositionRow, PositionRow.position_id, ids))
            rows.balances.update(_load(session, BalanceRow, BalanceRow.account_id, ids))
        for record in records:
            project_record(rows, record)
        session.add_all(rows.added)


def _reaches(sequence: Sequence[WalRecord], end: ConfirmedPoint) -> bool:
    return bool(sequence) and (sequence[-1].seq, sequence[-1].checksum) == (end.seq, end.checksum)


def _load(session: Session, kind: type[_Row], key: Any, ids: set[UUID]) -> dict[UUID, _Row]:
    found: dict[UUID, _Row] = {}
    wanted = list(ids)
    for start in range(0, len(wanted), 5000):
        for row in session.scalars(select(kind).where(key.in_(wanted[start : start + 5000]))):
            found[_row_id(row)] = row
    return found


def _row_id(row: OrderRow | PositionRow | BalanceRow) -> UUID:
    if isinstance(row, OrderRow):
        return row.order_id
    if isinstance(row, PositionRow):
        return row.position_id
    return row.account_id


def _count(session: Session, kind: type[OrderRow] | type[TradeRow], shards: Sequence[str]) -> int:
    query = text(f"SELECT count(*) FROM {kind.__tablename__} WHERE shard = ANY(:shards)")
    return int(session.scalar(query, {"shards": list(shards)}) or 0)


def _chunks(records: Iterator[WalRecord], size: int) -> Iterator[list[WalRecord]]:
    chunk: list[WalRecord] = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
