"""PostgreSQL recorder that writes aggregate events and their WAL records in one transaction."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, cast

from eventsourcing.persistence import PersistenceError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg.rows import tuple_row

from application.ports import Head, StoredCheckpoint
from application.recovery.replay import RawRow
from application.wal.records import WalRecord, WriterFencedError
from infra.wal.archived_reads import ArchivedReads
from infra.wal.pg_arrays import ByteaArray, Int8Array, TextArray, UuidArray

_RECORD_COLUMNS = (
    "shard_id, seq, epoch, command_type, command_key, recorded_at_us, payload, checksum, "
    "prev_checksum, mac"
)
# A page of records, bounded on both sides. A shard's seqs are dense, so the `limit` records
# after `after` lie within `after + limit`, and the scan touches that range only, whatever the
# planner's statistics. With `seq > after` alone and no statistics yet (a table filled faster
# than autovacuum analyzes it: a standby catching up, a restored region) the planner expected
# a few hundred rows, read every row past `after` and sorted them, for every page: reading a
# long WAL from its start was quadratic in its length.
_READ_PAGE = (
    f"SELECT {_RECORD_COLUMNS} FROM wal_records "
    "WHERE shard_id = %s AND seq > %s AND seq <= %s ORDER BY seq LIMIT %s"
)

_RECORD_COPY_TYPES = [
    "text",
    "int8",
    "int8",
    "text",
    "text",
    "int8",
    "bytea",
    "text",
    "text",
    "text",
]
_EVENT_COPY_TYPES = ["uuid", "int8", "text", "bytea", "text", "int8"]
# A checkpoint is stored only while the WAL record at its seq is of its epoch or an older one:
# a deposed leader's checkpoint arriving after the quarantine (a forked child finishing late)
# finds its seq gone or rewritten by a later epoch, and is dropped. One of a later epoch
# replaces one of an older epoch at the same seq. Recovery checks the epoch again on reading
# (a store racing the quarantine's transaction can still land).
SAVE_CHECKPOINT_SQL = (
    "INSERT INTO wal_checkpoints (shard_id, seq, epoch, state, state_hash, checksum) "
    "SELECT %(shard_id)s, %(seq)s, %(epoch)s, %(state)s, %(state_hash)s, %(checksum)s "
    "WHERE %(seq)s = 0 OR EXISTS (SELECT 1 FROM wal_records WHERE shard_id = %(shard_id)s "
    "AND seq = %(seq)s AND epoch <= %(epoch)s) "
    "ON CONFLICT (shard_id, seq) DO UPDATE SET epoch = EXCLUDED.epoch, state = EXCLUDED.state, "
    "state_hash = EXCLUDED.state_hash, checksum = EXCLUDED.checksum "
    "WHERE wal_checkpoints.epoch < EXCLUDED.epoch"
)


def checkpoint_row(checkpoint: StoredCheckpoint) -> dict[str, Any]:
    return {
        "shard_id": checkpoint.shard_id,
        "seq": checkpoint.seq,
        "epoch": checkpoint.epoch,
        "state": checkpoint.state,
        "state_hash": checkpoint.state_hash,
        "checksum": checkpoint.checksum,
    }


def event_seqs(stored_events: Sequence[StoredEvent], records: Sequence[WalRecord]) -> list[int]:
    """The seq of the record each stored event belongs to: a batch's events are its records'
    events, record after record (the archiver deletes an archived range's events by it)."""
    seqs = [r.seq for r in records for _ in r.events]
    if len(seqs) != len(stored_events):
        raise ValueError(
            f"append: {len(stored_events)} events for records carrying {len(seqs)} events"
        )
    return seqs


def copy_records(curs: Any, records: Sequence[WalRecord]) -> None:
    """WAL rows by binary COPY: a third of the CPU of the text format, which escapes every
    payload byte in Python; char(64) takes the text bytes as they are."""
    with curs.copy(f"COPY wal_records ({_RECORD_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(_RECORD_COPY_TYPES)
        for r in records:
            copy.write_row(
                (
                    r.shard_id,
                    r.seq,
                    r.epoch,
                    r.command_type,
                    r.command_key,
                    r.recorded_at_us,
                    r.payload,
                    r.checksum,
                    r.prev_checksum,
                    r.mac,
                )
            )


def copy_events(
    curs: Any,
    events_table: str,
    stored_events: Sequence[StoredEvent],
    records: Sequence[WalRecord],
) -> None:
    """The records' events by binary COPY, each naming its record (`event_seqs`)."""
    if not stored_events:
        return
    with curs.copy(
        f"COPY {events_table} (originator_id, originator_version, topic, state, shard_id, seq) "
        "FROM STDIN (FORMAT BINARY)"
    ) as copy:
        copy.set_types(_EVENT_COPY_TYPES)
        shard_id = records[0].shard_id
        for e, seq in zip(stored_events, event_seqs(stored_events, records), strict=True):
            copy.write_row((e.originator_id, e.originator_version, e.topic, e.state, shard_id, seq))


ONE_STATEMENT_MAX_ROWS = 5000
"""Rows (records + events) up to which a batch is one statement of arrays; beyond, COPY.
With the arrays packed in their binary form (infra/wal/pg_arrays.py) a row costs no more as an
array element than as a COPY row, while COPY takes four more round trips (BEGIN, the head, the
second COPY, COMMIT), each a wait for the interpreter lock under load. COPY stays for batches
too large to send as one message of parameters."""


class PostgresWalRecorder(ArchivedReads, PostgresApplicationRecorder):
    """eventsourcing's application recorder, extended with the shard WAL.

    `append(stored_events, records, epoch=E, prev_seq=P)` writes a batch of commands: the WAL
    rows and the aggregate events commit together or not at all. Ordering comes from the dense
    per-shard seq, so the events table lock and notification channel of the base class are not
    needed on this path.
    """

    def _append_one_statement(
        self,
        stored_events: Sequence[StoredEvent],
        records: Sequence[WalRecord],
        epoch: int,
        prev_seq: int,
    ) -> None:
        shard_id = records[0].shard_id
        params = (
            shard_id,
            prev_seq,
            records[-1].seq,
            epoch,
            shard_id,
            Int8Array([r.seq for r in records]),
            Int8Array([r.epoch for r in records]),
            TextArray([r.command_type for r in records]),
            TextArray([r.command_key for r in records]),
            Int8Array([r.recorded_at_us for r in records]),
            ByteaArray([r.payload for r in records]),
            TextArray([r.checksum for r in records]),
            TextArray([r.prev_checksum for r in records]),
            TextArray([r.mac for r in records]),
            shard_id,
            UuidArray([e.originator_id for e in stored_events]),
            Int8Array([e.originator_version for e in stored_events]),
            TextArray([e.topic for e in stored_events]),
            ByteaArray([e.state for e in stored_events]),
            Int8Array(event_seqs(stored_events, records)),
        )
        with self.datastore.get_connection() as conn:
            conn.execute(self._append_sql, params, prepare=True, binary=True)

    def _append_by_copy(
        self,
        stored_events: Sequence[StoredEvent],
        records: Sequence[WalRecord],
        epoch: int,
        prev_seq: int,
    ) -> None:
        with (
            self.datastore.get_connection() as conn,
            conn.transaction(),
            conn.cursor() as curs,
        ):
            curs.execute(
                "SELECT wal_advance_head(%s, %s, %s, %s)",
                (records[0].shard_id, prev_seq, records[-1].seq, epoch),
                prepare=True,
            )
            copy_records(curs, records)
            copy_events(curs, self.events_table_name, stored_events, records)

    @functools.cached_property
    def _append_sql(self) -> str:
        # the function call is referenced by the outer SELECT, so it runs; the inserts run to
        # completion whatever reads them; any error aborts all three together. Positional
        # parameters, arrays pre-encoded (infra/wal/pg_arrays.py): no per-element adaptation
        return (
            "WITH head AS (SELECT wal_advance_head(%s, %s, %s, %s) AS ok), "
            f"recs AS (INSERT INTO wal_records ({_RECORD_COLUMNS}) "
            "SELECT %s, u.* FROM unnest(%s::int8[], %s::int8[], %s::text[], %s::text[], "
            "%s::int8[], %s::bytea[], %s::text[], %s::text[], %s::text[]) AS u), "
            f"evts AS (INSERT INTO {self.events_table_name} "
            "(shard_id, originator_id, originator_version, topic, state, seq) "
            "SELECT %s, u.* FROM unnest(%s::uuid[], %s::int8[], %s::text[], %s::bytea[], "
            "%s::int8[]) AS u) "
            "SELECT count(*) FROM head"
        )

    def append(
        self,
        stored_events: Sequence[StoredEvent],
        records: Sequence[WalRecord],
        *,
        epoch: int,
        prev_seq: int,
    ) -> None:
        """Commit a batch of WAL records and their events in one transaction.

        The head advances first (row lock: one writer per shard at a time; refused if another
        writer moved it or a newer epoch owns the shard), then both tables are filled. Up to
        ONE_STATEMENT_MAX_ROWS rows the batch travels as one statement built from arrays,
        committed on its own (autocommit): one round trip. A larger batch goes by binary COPY
        in a transaction of its own (BEGIN, the head, two COPYs, COMMIT).
        """
        if not records:
            return
        shard_id = records[0].shard_id
        try:
            if len(records) + len(stored_events) <= ONE_STATEMENT_MAX_ROWS:
                self._append_one_statement(stored_events, records, epoch, prev_seq)
            else:
                self._append_by_copy(stored_events, records, epoch, prev_seq)
        except PersistenceError as exc:
            if "WAL_FENCED" in str(exc):
                raise WriterFencedError(shard_id, epoch, prev_seq) from exc
            raise

    # -- reads ------------------------------------------------------------------------------

    def head(self, shard_id: str) -> Head:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute("SELECT seq, epoch FROM wal_heads WHERE shard_id = %s", (shard_id,))
            row = curs.fetchone()
        if row is None:
            return Head(shard_id, 0, 0)
        return Head(shard_id, int(row["seq"]), int(row["epoch"]))

    def read_records(
        self, shard_id: str, after_seq: int, limit: int, *, verify: bool = True
    ) -> Sequence[WalRecord]:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(_READ_PAGE, (shard_id, after_seq, after_seq + limit, limit), prepare=True)
            rows = curs.fetchall()
        if not rows or int(rows[0]["seq"]) != after_seq + 1:
            archived = self.archived_records(shard_id, after_seq, limit, verify=verify)
            if archived is not None:
                return archived
        return [
            WalRecord.from_row(
                shard_id=row["shard_id"],
                epoch=int(row["epoch"]),
                seq=int(row["seq"]),
                command_type=row["command_type"],
                command_key=row["command_key"],
                recorded_at_us=int(row["recorded_at_us"]),
                payload=bytes(row["payload"]),
                checksum=row["checksum"],
                prev_checksum=row["prev_checksum"],
                mac=row["mac"],
                verify=verify,
            )
            for row in rows
        ]

    def iter_records(
        self, shard_id: str, after_seq: int, *, page: int = 2000, upto_seq: int | None = None
    ) -> Iterator[WalRecord]:
        position = after_seq
        while True:
            batch = self.read_records(shard_id, position, page)
            for record in batch:
                if upto_seq is not None and record.seq > upto_seq:
                    return
                yield record
            if len(batch) < page:
                return
            position = batch[-1].seq

    def iter_raw_pages(
        self, shard_id: str, after_seq: int, upto_seq: int, *, page: int = 4000
    ) -> Iterator[list[RawRow]]:
        """Pages of stored rows for replay, unverified and undecoded: (seq, epoch,
        command_type, command_key, recorded_at_us, payload, checksum, prev_checksum, mac).

        Binary results: the payload arrives as bytes, not as hex text to parse. The caller
        verifies every checksum (application.recovery.replay.replay_rows). Rows that have
        left the live table come from the archive's segments first.
        """
        position = yield from self.archived_pages(shard_id, after_seq, upto_seq)
        while position < upto_seq:
            with (
                self.datastore.get_connection() as conn,
                conn.transaction(),
                conn.cursor(row_factory=tuple_row) as curs,
            ):
                curs.execute(
                    "SELECT seq, epoch, command_type, command_key, recorded_at_us, payload, "
                    "checksum, prev_checksum, mac FROM wal_records WHERE shard_id = %s "
                    "AND seq > %s "
                    "AND seq <= %s ORDER BY seq LIMIT %s",
                    (shard_id, position, min(upto_seq, position + page), page),
                    prepare=True,
                    binary=True,
                )
                rows = cast(list[RawRow], curs.fetchall())
            if not rows:
                return
            yield rows
            if len(rows) < page:
                return
            position = rows[-1][0]

    def find_command_keys(self, shard_id: str, keys: Iterable[str]) -> Mapping[str, int]:
        wanted = list(keys)
        if not wanted:
            return {}
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                "SELECT command_key, seq FROM wal_records "
                "WHERE shard_id = %s AND command_key = ANY(%s) UNION ALL "
                "SELECT command_key, seq FROM wal_archived_keys "
                "WHERE shard_id = %s AND command_key = ANY(%s)",
                (shard_id, wanted, shard_id, wanted),
            )
            return {row["command_key"]: int(row["seq"]) for row in curs.fetchall()}

    def command_keys(self, shard_id: str, upto_seq: int, *, page: int = 20_000) -> Iterator[str]:
        """Every idempotency key stored up to `upto_seq`, a window of `page` seqs at a time
        (for the key filter; not every record has a key, so a short window is not the end);
        the keys of archived records first."""
        position = yield from self.archived_keys(shard_id, upto_seq)
        while position < upto_seq:
            end = min(upto_seq, position + page)
            with self.datastore.transaction(commit=False) as curs:
                curs.execute(
                    "SELECT command_key FROM wal_records WHERE shard_id = %s "
                    "AND seq > %s AND seq <= %s AND command_key IS NOT NULL ORDER BY seq",
                    (shard_id, position, end),
                )
                rows = curs.fetchall()
            for row in rows:
                yield row["command_key"]
            position = end

    # -- divergent history ------------------------------------------------------------------

    def first_divergent_seq(self, shard_id: str, history: Sequence[tuple[int, int]]) -> int | None:
        """The lowest seq whose stored epoch is not the epoch that owns it in `history`."""
        fork: int | None = None
        with self.datastore.transaction(commit=False) as curs:
            for index, (epoch, start) in enumerate(history):
                end = history[index + 1][1] - 1 if index + 1 < len(history) else 2**62
                curs.execute(
                    "SELECT min(seq) AS seq FROM wal_records WHERE shard_id = %s "
                    "AND seq BETWEEN %s AND %s AND epoch <> %s",
                    (shard_id, start, end, epoch),
                )
                row = curs.fetchone()
                if row is not None and row["seq"] is not None:
                    seq = int(row["seq"])
                    fork = seq if fork is None else min(fork, seq)
        return fork

    def quarantine_from(self, shard_id: str, fork_seq: int, reason: str) -> int:
        """Set aside every record at or after `fork_seq` (kept for audit) with its events,
        snapshots and checkpoints, and move the head back; returns how many records."""
        records = list(self.iter_records(shard_id, fork_seq - 1))
        events = [(e.originator_id, e.originator_version) for r in records for e in r.events]
        first_version: dict[Any, int] = {}
        for originator_id, version in events:
            first_version[originator_id] = min(version, first_version.get(originator_id, version))
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                f"INSERT INTO wal_quarantine ({_RECORD_COLUMNS}, reason) "
                f"SELECT {_RECORD_COLUMNS}, %s FROM wal_records "
                "WHERE shard_id = %s AND seq >= %s",
                (reason, shard_id, fork_seq),
            )
            for originator_id, version in first_version.items():
                curs.execute(
                    f"DELETE FROM {self.events_table_name} "
                    "WHERE originator_id = %s AND originator_version >= %s",
                    (originator_id, version),
                )
                curs.execute(
                    "DELETE FROM exchange_snapshots "
                    "WHERE originator_id = %s AND originator_version >= %s",
                    (originator_id, version),
                )
            # idempotency keys the archiver kept for records it had not deleted yet (it keeps
            # them with a segment's manifest row, before the rows go): they leave with them
            curs.execute(
                "DELETE FROM wal_archived_keys k WHERE shard_id = %s AND seq >= %s "
                "AND EXISTS (SELECT 1 FROM wal_records r "
                "WHERE r.shard_id = k.shard_id AND r.seq = k.seq)",
                (shard_id, fork_seq),
            )
            curs.execute(
                "DELETE FROM wal_records WHERE shard_id = %s AND seq >= %s", (shard_id, fork_seq)
            )
            curs.execute(
                "DELETE FROM wal_checkpoints WHERE shard_id = %s AND seq >= %s",
                (shard_id, fork_seq),
            )
            curs.execute(
                "UPDATE wal_heads SET seq = %s, epoch = coalesce((SELECT epoch FROM wal_records "
                "WHERE shard_id = %s AND seq = %s), 0), updated_at = now() WHERE shard_id = %s",
                (fork_seq - 1, shard_id, fork_seq - 1, shard_id),
            )
            curs.execute(
                "UPDATE relay_positions SET seq = LEAST(seq, %s) WHERE shard_id = %s",
                (fork_seq - 1, shard_id),
            )
        return len(records)

    # -- hash chain -------------------------------------------------------------------------

    def chain_start(self, shard_id: str) -> int:
        """Up to which seq this store holds records written before records were chained
        (recorded by the migration that chained them; 0: every record is chained)."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute("SELECT seq FROM wal_chain_starts WHERE shard_id = %s", (shard_id,))
            row = curs.fetchone()
        return 0 if row is None else int(row["seq"])

    def extend_chain_start(self, shard_id: str, seq: int) -> None:
        """A standby stores unchained records its leader wrote before the chain started."""
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                "INSERT INTO wal_chain_starts (shard_id, seq) VALUES (%s, %s) "
                "ON CONFLICT (shard_id) DO UPDATE SET seq = GREATEST(wal_chain_starts.seq, "
                "EXCLUDED.seq)",
                (shard_id, seq),
            )

    # -- relay position ---------------------------------------------------------------------

    def relay_position(self, shard_id: str) -> int:
        """The last seq the relay knows the broker has (0: publish from the start)."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute("SELECT seq FROM relay_positions WHERE shard_id = %s", (shard_id,))
            row = curs.fetchone()
        return 0 if row is None else int(row["seq"])

    def save_relay_position(self, shard_id: str, seq: int) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                "INSERT INTO relay_positions (shard_id, seq) VALUES (%s, %s) "
                "ON CONFLICT (shard_id) DO UPDATE SET seq = GREATEST(relay_positions.seq, "
                "EXCLUDED.seq), updated_at = now()",
                (shard_id, seq),
            )

    # -- checkpoints ------------------------------------------------------------------------

    def save_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(SAVE_CHECKPOINT_SQL, checkpoint_row(checkpoint))

    def latest_checkpoint(
        self, shard_id: str, *, at_or_before: int | None = None
    ) -> StoredCheckpoint | None:
        limit = at_or_before if at_or_before is not None else 2**62
        with self.datastore.transaction(commit=False) as curs:
            # binary: the state arrives as bytes, not as hex text twice its size to parse
            curs.execute(
                "SELECT shard_id, seq, epoch, state, state_hash, checksum FROM wal_checkpoints "
                "WHERE shard_id = %s AND seq <= %s ORDER BY seq DESC LIMIT 1",
                (shard_id, limit),
                binary=True,
            )
            row = curs.fetchone()
        if row is None:
            return None
        return StoredCheckpoint(
            row["shard_id"],
            int(row["seq"]),
            int(row["epoch"]),
            bytes(row["state"]),
            row["state_hash"],
            row["checksum"],
        )

    def latest_checkpoint_hash(
        self, shard_id: str, *, at_or_before: int | None = None
    ) -> tuple[int, str] | None:
        """(seq, state_hash) of the newest checkpoint, without its state (a replay check)."""
        limit = at_or_before if at_or_before is not None else 2**62
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                "SELECT seq, state_hash FROM wal_checkpoints "
                "WHERE shard_id = %s AND seq <= %s ORDER BY seq DESC LIMIT 1",
                (shard_id, limit),
            )
            row = curs.fetchone()
        return None if row is None else (int(row["seq"]), str(row["state_hash"]))

    def checkpoint_seqs(self, shard_id: str) -> Sequence[int]:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                "SELECT seq FROM wal_checkpoints WHERE shard_id = %s ORDER BY seq", (shard_id,)
            )
            return [int(row["seq"]) for row in curs.fetchall()]
