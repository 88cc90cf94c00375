"""Moves a shard's oldest WAL records into the archive, in an order a crash cannot break.

One segment at a time:
1. write the segment file: the range's rows as one COPY sends them, compressed as they stream
   in, written once and fsynced (an orphan of an earlier crash under the same name is
   overwritten: no manifest row names it, so nothing relies on it); COPY's row count must be
   the range's length (seq is part of the key, so that means every seq exactly once);
2. insert its manifest row (deleted = false), in one transaction with the records'
   idempotency keys (wal_archived_keys; inserted on a connection of their own while step 1
   copies and compresses, committed only with the manifest row);
3. read the file back once: its SHA-256 must be the one of the bytes written;
4. in one transaction: delete the rows by seq range in one statement, delete their events
   from exchange_events (each row names its record since migration 0009; the segment keeps
   them in the records' payloads) and the snapshots taken at those events, mark the manifest
   row deleted. Step 4 of a segment runs on a second connection while steps 1-3 of the next
   one run (at most one segment in between).
A run first finishes any segment left between 2 and 4 by an earlier run (verify record by
record against the live rows, then delete), so a SIGKILL anywhere loses nothing and
duplicates nothing. Readers take archived rows only from segments marked deleted, and live
rows after them. Then checkpoints that are neither among the newest K nor at the start of an
archived range are deleted.

Where the region serves history from its read models (`read_models`, the projection's name in
rm_tracking), nothing after their tracking row leaves the live table
(application/wal/retention.py): the facade serves what they lack from the live WAL.

One archiver per shard and database at a time (a session advisory lock).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import cast

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from application.recovery.replay import RawRow
from application.wal.records import WALCorruptionError, compute_checksum
from application.wal.retention import (
    ArchivePlan,
    Follower,
    Projected,
    RetentionPolicy,
    checkpoints_to_delete,
    plan_segment,
)
from infra.wal.archive import ArchiveError, Segment, SegmentArchive, SegmentEncoder

log = logging.getLogger("exchange_dr.archiver")

CRASH_POINTS = ("after_file", "after_manifest", "during_delete")
# a range's idempotency keys, kept once its records leave (ON CONFLICT: a resumed segment's
# keys may be there already)
_KEEP_KEYS = (
    "INSERT INTO wal_archived_keys (shard_id, command_key, seq) "
    "SELECT shard_id, command_key, seq FROM wal_records WHERE shard_id = %s "
    "AND seq BETWEEN %s AND %s AND command_key IS NOT NULL "
    "ON CONFLICT DO NOTHING"
)
_IN_FLIGHT = 4  # megabytes of COPY output waiting for the compressor thread
_SEGMENT_COLUMNS = (
    "shard_id, first_seq, last_seq, file, bytes, checksum, first_checksum, last_checksum"
)


@dataclass(frozen=True, slots=True)
class ArchiveRun:
    """What one pass did, for logs, metrics and the CLI."""

    shard_id: str
    segments: int
    records: int
    archived_seq: int
    checkpoints_deleted: int
    seconds: float
    decision: str
    released: tuple[str, ...]
    read_models_seq: int | None = None  # their tracking seq (None: no row, or not waited for)
    held_by_read_models: bool = False


def load_segments(conn: psycopg.Connection[object], shard_id: str) -> list[Segment]:
    """Manifest rows whose records have left the live table, in seq order."""
    rows = conn.execute(
        f"SELECT {_SEGMENT_COLUMNS} FROM wal_archive_segments "
        "WHERE shard_id = %s AND deleted ORDER BY first_seq",
        (shard_id,),
    ).fetchall()
    return [Segment(*cast(tuple[object, ...], row)) for row in rows]  # type: ignore[arg-type]


def archive_totals(conn: psycopg.Connection[object], shard_id: str) -> tuple[int, int, int]:
    """(archived seq, segments, bytes) of a shard: what has left its live table."""
    row = conn.execute(
        "SELECT coalesce(max(last_seq), 0), count(*), coalesce(sum(bytes), 0) "
        "FROM wal_archive_segments WHERE shard_id = %s AND deleted",
        (shard_id,),
    ).fetchone()
    assert row is not None
    values = cast(tuple[int, int, int], row)
    return int(values[0]), int(values[1]), int(values[2])


class Archiver:
    """Archive passes over one region's database."""

    def __init__(
        self,
        dsn: str,
        archive: SegmentArchive,
        policy: RetentionPolicy,
        *,
        crash_at: str | None = None,
        read_models: str | None = None,
    ) -> None:
        if crash_at is not None and crash_at not in CRASH_POINTS:
            raise ValueError(f"crash point must be one of {', '.join(CRASH_POINTS)}")
        self.dsn = dsn
        self.archive = archive
        self.policy = policy
        self.crash_at = crash_at  # fault injection: SIGKILL this process at that step
        # recompute every record's checksum before archiving it (replay verifies them anyway;
        # the segment keeps each record's own checksum)
        self.verify_records = False
        # the projection whose tracking row bounds archiving (None: the region serves no
        # history from read models, or the operator chose not to wait for them)
        self.read_models = read_models

    def run(
        self,
        shard_id: str,
        followers: Iterable[Follower] = (),
        *,
        max_segments: int = 1000,
        progress: Callable[[int], None] | None = None,
    ) -> ArchiveRun:
        """Finish what an earlier pass left, then archive segments while any is due;
        `progress(records)` after each segment, with the records archived so far."""
        started = time.perf_counter()
        followers = tuple(followers)
        records = segments = 0
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=10) as conn:
            locked = conn.execute(
                "SELECT pg_try_advisory_lock(hashtext('wal-archive:' || %s))", (shard_id,)
            ).fetchone()
            if not locked or not locked[0]:
                return ArchiveRun(
                    shard_id, 0, 0, 0, 0, 0.0, "another archiver works on this shard", ()
                )
            projected = self._projected(conn, shard_id)
            for pending in self._pending(conn, shard_id):
                log.warning("archive resumes segment shard=%s file=%s", shard_id, pending.file)
                self._verify(conn, pending)
                # kept with the manifest row by this version; an older one kept them in its
                # delete: either way they are there (again: nothing twice) before the rows go
                conn.execute(_KEEP_KEYS, (shard_id, pending.first_seq, pending.last_seq))
                self._delete_rows(conn, pending)
                segments += 1
                records += pending.records
            plan = self._plan(conn, shard_id, followers, projected)
            first_plan = plan
            if plan.due and max_segments > segments:
                moved, plan = self._archive_due(
                    conn,
                    shard_id,
                    followers,
                    projected,
                    plan,
                    max_segments - segments,
                    records,
                    progress,
                )
                segments += moved[0]
                records += moved[1]
            deleted = self._prune_checkpoints(conn, shard_id)
            archived_seq = archive_totals(conn, shard_id)[0]
        run = ArchiveRun(
            shard_id,
            segments,
            records,
            archived_seq,
            deleted,
            time.perf_counter() - started,
            first_plan.reason if segments else plan.reason,
            plan.released,
            None if projected is None else projected.seq,
            plan.held_by_read_models,
        )
        if segments or deleted:
            log.info(
                "archived shard=%s segments=%s records=%s upto=%s checkpoints_deleted=%s "
                "seconds=%.3f",
                shard_id,
                segments,
                records,
                archived_seq,
                deleted,
                run.seconds,
            )
        return run

    def _archive_due(
        self,
        conn: psycopg.Connection[object],
        shard_id: str,
        followers: Sequence[Follower],
        projected: Projected | None,
        plan: ArchivePlan,
        max_segments: int,
        done: int,
        progress: Callable[[int], None] | None,
    ) -> tuple[tuple[int, int], ArchivePlan]:
        """Archive due segments, each one's rows deleted on a connection of its own while the
        next segment is read and written: the database deletes while this process
        compresses. Deletions run one at a time and in seq order, and segment k+1 is handed
        over only once k's deletion committed, so at most one segment waits between its
        verified manifest row and its delete: exactly the state an interrupted run leaves,
        which the next run finishes. ((segments, records), the plan that stopped it.)"""
        segments = records = 0
        with (
            psycopg.connect(self.dsn, autocommit=True, connect_timeout=10) as deleting_conn,
            psycopg.connect(self.dsn, connect_timeout=10) as manifest_conn,
            ThreadPoolExecutor(1, thread_name_prefix=f"archive-delete-{shard_id}") as deleter,
            ThreadPoolExecutor(1, thread_name_prefix=f"archive-keys-{shard_id}") as keeper,
        ):
            deleting: Future[None] | None = None
            while plan.due and segments < max_segments:
                assert plan.first_seq is not None and plan.last_seq is not None
                segment = self._archive_range(
                    conn, shard_id, plan.first_seq, plan.last_seq, manifest_conn, keeper
                )
                if deleting is not None:
                    deleting.result()  # the previous segment's rows are gone (or it raises)
                    if progress is not None:
                        progress(done + records)
                deleting = deleter.submit(self._delete_rows, deleting_conn, segment)
                segments += 1
                records += segment.records
                plan = self._plan(conn, shard_id, followers, projected)
            if deleting is not None:
                deleting.result()
                if progress is not None:
                    progress(done + records)
        return (segments, records), plan

    # -- steps ------------------------------------------------------------------------------

    def _projected(self, conn: psycopg.Connection[object], shard_id: str) -> Projected | None:
        """The read models' tracking seq of the shard, read once a pass: it only grows (a
        rebuild replaces it in one transaction, at the store's head)."""
        if self.read_models is None:
            return None
        try:
            row = conn.execute(
                "SELECT seq FROM rm_tracking WHERE projection = %s AND shard = %s",
                (self.read_models, shard_id),
            ).fetchone()
        except psycopg.errors.UndefinedTable:
            row = None  # a database without the read models' tables: nothing projected
        return Projected(self.read_models, None if row is None else int(cast(tuple[int], row)[0]))

    def _plan(
        self,
        conn: psycopg.Connection[object],
        shard_id: str,
        followers: Sequence[Follower],
        projected: Projected | None = None,
    ) -> ArchivePlan:
        head = conn.execute("SELECT seq FROM wal_heads WHERE shard_id = %s", (shard_id,)).fetchone()
        row = conn.execute(
            "SELECT coalesce(max(last_seq), 0) FROM wal_archive_segments WHERE shard_id = %s",
            (shard_id,),
        ).fetchone()
        checkpoints = conn.execute(
            "SELECT seq FROM wal_checkpoints WHERE shard_id = %s ORDER BY seq", (shard_id,)
        ).fetchall()
        return plan_segment(
            self.policy,
            head_seq=0 if head is None else int(cast(tuple[int], head)[0]),
            archived_seq=0 if row is None else int(cast(tuple[int], row)[0]),
            checkpoint_seqs=[int(cast(tuple[int], c)[0]) for c in checkpoints],
            followers=followers,
            projected=projected,
        )

    def _pending(self, conn: psycopg.Connection[object], shard_id: str) -> list[Segment]:
        rows = conn.execute(
            f"SELECT {_SEGMENT_COLUMNS} FROM wal_archive_segments "
            "WHERE shard_id = %s AND NOT deleted ORDER BY first_seq",
            (shard_id,),
        ).fetchall()
        return [Segment(*cast(tuple[object, ...], row)) for row in rows]  # type: ignore[arg-type]

    def _live_rows(
        self, conn: psycopg.Connection[object], shard_id: str, first: int, last: int
    ) -> list[RawRow]:
        with conn.cursor(row_factory=tuple_row) as curs:
            curs.execute(
                "SELECT seq, epoch, command_type, command_key, recorded_at_us, payload, checksum, "
                "prev_checksum, mac FROM wal_records "
                "WHERE shard_id = %s AND seq BETWEEN %s AND %s ORDER BY seq",
                (shard_id, first, last),
                binary=True,
            )
            return cast(list[RawRow], curs.fetchall())

    def _archive_range(
        self,
        conn: psycopg.Connection[object],
        shard_id: str,
        first: int,
        last: int,
        manifest_conn: psycopg.Connection[object],
        keeper: ThreadPoolExecutor,
    ) -> Segment:
        """Steps 1-3 of one segment. The range's idempotency keys go into wal_archived_keys
        on `manifest_conn` (not autocommit) while the rows are copied and compressed here,
        and commit with the manifest row: a manifest row means its keys are kept, a crash
        before it rolls both back. Keys of records still live are harmless (the same key,
        the same seq: lookups read both tables)."""
        keys = keeper.submit(manifest_conn.execute, _KEEP_KEYS, (shard_id, first, last))
        try:
            segment = self._write_segment(conn, shard_id, first, last)
            self._crash_point("after_file")
            keys.result()
            manifest_conn.execute(
                f"INSERT INTO wal_archive_segments ({_SEGMENT_COLUMNS}, records) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    segment.shard_id,
                    segment.first_seq,
                    segment.last_seq,
                    segment.file,
                    segment.bytes,
                    segment.checksum,
                    segment.first_checksum,
                    segment.last_checksum,
                    segment.records,
                ),
            )
            manifest_conn.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                keys.result()  # the connection is free again before it rolls back
            manifest_conn.rollback()
            raise
        self._crash_point("after_manifest")
        written = self.archive.read_bytes(segment)
        if hashlib.sha256(written).hexdigest() != segment.checksum:
            raise ArchiveError(segment.file, segment.first_seq, "read back differs from written")
        return segment

    def _write_segment(
        self, conn: psycopg.Connection[object], shard_id: str, first: int, last: int
    ) -> Segment:
        """Step 1: the range's rows, as one COPY sends them, into the segment file."""
        if self.verify_records:
            self._check_records(conn, shard_id, first, last)
        ends: dict[int, str] = dict(
            conn.execute(  # type: ignore[arg-type]
                "SELECT seq, checksum FROM wal_records WHERE shard_id = %s AND seq IN (%s, %s)",
                (shard_id, first, last),
            ).fetchall()
        )
        encoder = SegmentEncoder(shard_id, first, last)
        with (
            conn.cursor() as curs,
            ThreadPoolExecutor(1, thread_name_prefix=f"archive-compress-{shard_id}") as squeezer,
        ):
            # zstd compresses without the interpreter lock: a megabyte is compressed on a
            # thread of its own while the next one is read from COPY here (one thread, so in
            # order; at most _IN_FLIGHT megabytes wait)
            feeding: deque[Future[None]] = deque()
            with curs.copy(
                sql.SQL(
                    "COPY (SELECT seq, epoch, command_type, command_key, recorded_at_us, payload, "
                    "checksum, prev_checksum, mac FROM wal_records "
                    "WHERE shard_id = {} AND seq BETWEEN {} AND {} "
                    "ORDER BY seq) TO STDOUT (FORMAT BINARY)"
                ).format(sql.Literal(shard_id), sql.Literal(first), sql.Literal(last))
            ) as copy:
                pending: list[bytes] = []
                size = 0
                for chunk in copy:  # a row a chunk: to the compressor a megabyte at a time
                    pending.append(bytes(chunk))
                    size += len(chunk)
                    if size >= 1 << 20:
                        feeding.append(squeezer.submit(encoder.feed, b"".join(pending)))
                        pending, size = [], 0
                        if len(feeding) > _IN_FLIGHT:
                            feeding.popleft().result()
                feeding.append(squeezer.submit(encoder.feed, b"".join(pending)))
            copied = curs.rowcount  # the server's own count of the rows it sent
            while feeding:
                feeding.popleft().result()
        # (shard_id, seq) is the key, so rows of the range are distinct seqs in first..last:
        # as many rows as seqs means every seq once (COPY's own count, no second scan)
        if copied != last - first + 1 or set(ends) != {first, last}:
            raise WALCorruptionError(
                shard_id,
                self._first_missing(conn, shard_id, first, last),
                "missing from the live WAL",
            )
        return self.archive.store(
            shard_id, first, last, encoder.finish(), str(ends[first]), str(ends[last])
        )

    def _first_missing(
        self, conn: psycopg.Connection[object], shard_id: str, first: int, last: int
    ) -> int:
        seqs = {
            int(cast(tuple[int], r)[0])
            for r in conn.execute(
                "SELECT seq FROM wal_records WHERE shard_id = %s AND seq BETWEEN %s AND %s",
                (shard_id, first, last),
            ).fetchall()
        }
        return next((s for s in range(first, last + 1) if s not in seqs), first)

    def _verify(self, conn: psycopg.Connection[object], segment: Segment) -> None:
        """Read a segment an earlier run left back: its records must be the live ones, seq for
        seq, checksum for checksum (raises ArchiveError or WALCorruptionError; nothing is
        deleted then)."""
        self.archive._cache = None  # read the file, not what was just written
        stored = self.archive.read(segment)
        live = self._live_rows(conn, segment.shard_id, segment.first_seq, segment.last_seq)
        if [(r[0], r[6]) for r in stored] != [(r[0], r[6]) for r in live]:
            raise WALCorruptionError(
                segment.shard_id, segment.first_seq, f"segment {segment.file} differs from live"
            )
        self.archive._cache = None

    def _check_records(
        self, conn: psycopg.Connection[object], shard_id: str, first: int, last: int
    ) -> None:
        for (
            seq,
            epoch,
            command_type,
            command_key,
            recorded_at_us,
            payload,
            checksum,
            prev,
            _mac,
        ) in self._live_rows(conn, shard_id, first, last):
            actual = compute_checksum(
                shard_id, epoch, seq, command_type, command_key, recorded_at_us, payload, prev
            )
            if actual != checksum:
                raise WALCorruptionError(shard_id, seq, "checksum mismatch; not archived")

    def _delete_rows(self, conn: psycopg.Connection[object], segment: Segment) -> None:
        args = (segment.shard_id, segment.first_seq, segment.last_seq)
        with conn.transaction():
            conn.execute(
                "DELETE FROM wal_records WHERE shard_id = %s AND seq BETWEEN %s AND %s", args
            )
            # the records' events (their payloads keep them, in the segment) and the snapshots
            # taken at those events: what eventsourcing's repository read of them is history.
            # The snapshots first, each one's event looked up by its key (there are far fewer
            # snapshots than events: one every EXDR_SNAPSHOT_EVERY versions). A scalar subquery
            # on the key alone: the planner neither turns it into a join nor walks the range's
            # events, whatever its statistics (it did both, taking seconds, without them)
            conn.execute(
                "DELETE FROM exchange_snapshots s WHERE int8range(%s, %s, '[]') @> "
                "(SELECT CASE WHEN e.shard_id = %s THEN e.seq END FROM exchange_events e "
                "WHERE e.originator_id = s.originator_id "
                "AND e.originator_version = s.originator_version)",
                (segment.first_seq, segment.last_seq, segment.shard_id),
            )
            conn.execute(
                "DELETE FROM exchange_events WHERE shard_id = %s AND seq BETWEEN %s AND %s", args
            )
            self._crash_point("during_delete")
            conn.execute(
                "UPDATE wal_archive_segments SET deleted = true "
                "WHERE shard_id = %s AND first_seq = %s AND last_seq = %s",
                args,
            )

    def _prune_checkpoints(self, conn: psycopg.Connection[object], shard_id: str) -> int:
        seqs = [
            int(cast(tuple[int], r)[0])
            for r in conn.execute(
                "SELECT seq FROM wal_checkpoints WHERE shard_id = %s ORDER BY seq", (shard_id,)
            ).fetchall()
        ]
        segments = load_segments(conn, shard_id)
        starts = [s.first_seq for s in segments]
        if segments:
            starts.append(segments[-1].last_seq + 1)  # where the next archived range starts
        doomed = checkpoints_to_delete(
            seqs,
            self.policy.checkpoints_keep,
            starts,
            archived_seq=segments[-1].last_seq if segments else 0,
            segment_records=self.policy.segment_records,
        )
        if doomed:
            conn.execute(
                "DELETE FROM wal_checkpoints WHERE shard_id = %s AND seq = ANY(%s)",
                (shard_id, doomed),
            )
        return len(doomed)

    def _crash_point(self, name: str) -> None:
        if self.crash_at == name:
            os.kill(os.getpid(), signal.SIGKILL)
