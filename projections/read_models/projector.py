"""Exactly-once application of WAL records to the read models, and rebuilds from scratch.

Each call is ONE transaction: lock the tracking row `(projection, shard)`, drop records at or
below it, fill any gap from the region's own WAL store (never skip: the WAL is dense), project,
move the tracking row. A crash before the commit leaves both the views and the tracking row as
they were, so redelivered records apply exactly once.
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
_Row = TypeVar("_Row", OrderRow, PositionRow, BalanceRow)


class StoreBehindError(Exception):
    """The region's store does not (yet) hold records a gap needs: apply what is contiguous."""


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
    ) -> None:
        self.sessions = sessions
        self.store = store
        self.instruments: Mapping[str, Instrument] = {i.symbol: i for i in instruments}
        self.name = name
        self.page = page
        self._chain_ends: dict[str, tuple[int, str]] = {}  # shard -> (seq, its checksum)

    def tracked(self, shard: str) -> int:
        """The last seq of `shard` applied to the views."""
        with self.sessions() as session:
            seq = session.scalar(
                select(TrackingRow.seq).where(
                    TrackingRow.projection == self.name, TrackingRow.shard == shard
                )
            )
        return int(seq or 0)

    def apply(self, shard: str, records: Sequence[WalRecord], *, through: int = 0) -> ApplyReport:
        """Apply `records` of one shard (any order, duplicates allowed) and every record up to
        `through` (e.g. the seq of a corrupt delivery), reading what is missing from the store.
        Raises StoreBehindError, after committing the contiguous part, if the store lacks some.
        """
        behind: StoreBehindError | None = None
        with self.sessions.begin() as session:
            tracking = self._lock_tracking(session, shard)
            tracked = tracking.seq
            fresh = {r.seq: r for r in records if r.shard_id == shard and r.seq > tracked}
            target = max([through, *fresh])
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
            if filled:
                log.warning(
                    "projection %s shard %s: %s missing records read from the store "
                    "(views %s -> %s)",
                    self.name,
                    shard,
                    filled,
                    tracked,
                    expected - 1,
                )
            sequence, broken = self._chained(shard, tracked, sequence, fresh)
            if broken is not None:
                behind = broken
            self._project(session, sequence)
            if sequence:
                tracking.seq = sequence[-1].seq
            report = ApplyReport(
                shard, tracking.seq, len(sequence), len(records) - len(fresh), filled
            )
        if behind is not None:
            raise behind
        return report

    def catch_up(self, shard: str) -> ApplyReport:
        """Apply whatever the store holds beyond the tracking row (start-up, idle streams)."""
        head = self.store.head(shard).seq
        return self.apply(shard, (), through=head)

    def rebuild(
        self, shards: Sequence[str], *, everything: bool, progress: ProgressFn | None = None
    ) -> RebuildReport:
        """Empty the views (all of them, or the given shards' rows) and replay the store, in
        one transaction: readers see the old views until the new ones are complete."""
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
            total = sum(heads.values())
            for shard in shards:
                for chunk in _chunks(
                    self.store.iter_records(shard, 0, page=self.page, upto_seq=heads[shard]),
                    self.page,
                ):
                    self._project(session, chunk)
                    records += len(chunk)
                    session.flush()
                    session.expunge_all()
                    if progress is not None:
                        progress(records, total)
                tracker = session.merge(trackers[shard])
                tracker.seq = heads[shard]
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

    def _chained(
        self,
        shard: str,
        tracked: int,
        sequence: list[WalRecord],
        delivered: Mapping[int, WalRecord],
    ) -> tuple[list[WalRecord], StoreBehindError | None]:
        """The part of `sequence` that continues the shard's hash chain from `tracked`. A
        delivered record that does not link (signed, but of another history, or out of order)
        is replaced by the store's copy; the store's own records must link (else it raises)."""
        end = self._chain_ends.get(shard)
        chain = ChainCursor(shard, legacy_upto=chain_start(self.store, shard))
        if end is not None and end[0] == tracked:
            chain.last = end[1]
        elif tracked == 0:
            chain.last = GENESIS
        else:
            anchor = self._read_store(shard, tracked, tracked)
            chain.last = anchor[0].checksum if anchor else None
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
        if linked:
            self._chain_ends[shard] = (linked[-1].seq, linked[-1].checksum)
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
