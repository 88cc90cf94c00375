"""PostgreSQL recorder that writes aggregate events and their WAL records in one transaction."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from eventsourcing.persistence import PersistenceError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder

from application.ports import Head, StoredCheckpoint
from application.wal import WalRecord, WriterFencedError

_RECORD_COLUMNS = (
    "shard_id, seq, epoch, command_type, command_key, recorded_at_us, payload, checksum"
)


class PostgresWalRecorder(PostgresApplicationRecorder):
    """eventsourcing's application recorder, extended with the shard WAL.

    `insert_events(stored_events, wal_records=[...], wal_epoch=E, wal_prev_seq=P)` advances the
    shard head from P (refused by the database if another writer moved it or a newer epoch owns
    it), inserts the WAL rows and the stored events, and commits them together. The WAL head row
    lock serializes writers of one shard, so the events table lock of the base class is not taken.
    """

    def _lock_table(self, curs: Any) -> None:
        """Ordering comes from the dense per-shard WAL seq, not from notification ids."""

    def _notify_channel(self, curs: Any) -> None:
        """Nobody listens: readers follow the WAL."""

    def _insert_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        records: Sequence[WalRecord] = kwargs.get("wal_records") or ()
        if records:
            first, last = records[0], records[-1]
            curs.execute(
                "SELECT wal_advance_head(%s, %s, %s, %s)",
                (first.shard_id, kwargs["wal_prev_seq"], last.seq, kwargs["wal_epoch"]),
                prepare=True,
            )
            curs.executemany(
                f"INSERT INTO wal_records ({_RECORD_COLUMNS}) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        r.shard_id,
                        r.seq,
                        r.epoch,
                        r.command_type,
                        r.command_key,
                        r.recorded_at_us,
                        r.payload,
                        r.checksum,
                    )
                    for r in records
                ],
            )
        super()._insert_events(curs, stored_events, **kwargs)

    def append(
        self,
        stored_events: Sequence[StoredEvent],
        records: Sequence[WalRecord],
        *,
        epoch: int,
        prev_seq: int,
    ) -> None:
        """Commit a batch of WAL records with their events; translate fencing into its error."""
        try:
            self.insert_events(
                stored_events, wal_records=records, wal_epoch=epoch, wal_prev_seq=prev_seq
            )
        except PersistenceError as exc:
            if "WAL_FENCED" in str(exc):
                shard = records[0].shard_id if records else "?"
                raise WriterFencedError(shard, epoch, prev_seq) from exc
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
            curs.execute(
                f"SELECT {_RECORD_COLUMNS} FROM wal_records "
                "WHERE shard_id = %s AND seq > %s ORDER BY seq LIMIT %s",
                (shard_id, after_seq, limit),
                prepare=True,
            )
            rows = curs.fetchall()
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

    def find_command_keys(self, shard_id: str, keys: Iterable[str]) -> Mapping[str, int]:
        wanted = list(keys)
        if not wanted:
            return {}
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                "SELECT command_key, seq FROM wal_records "
                "WHERE shard_id = %s AND command_key = ANY(%s)",
                (shard_id, wanted),
            )
            return {row["command_key"]: int(row["seq"]) for row in curs.fetchall()}

    # -- checkpoints ------------------------------------------------------------------------

    def save_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                "INSERT INTO wal_checkpoints "
                "(shard_id, seq, epoch, state, state_hash, checksum) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (shard_id, seq) DO NOTHING",
                (
                    checkpoint.shard_id,
                    checkpoint.seq,
                    checkpoint.epoch,
                    checkpoint.state,
                    checkpoint.state_hash,
                    checkpoint.checksum,
                ),
            )

    def latest_checkpoint(
        self, shard_id: str, *, at_or_before: int | None = None
    ) -> StoredCheckpoint | None:
        limit = at_or_before if at_or_before is not None else 2**62
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                "SELECT shard_id, seq, epoch, state, state_hash, checksum FROM wal_checkpoints "
                "WHERE shard_id = %s AND seq <= %s ORDER BY seq DESC LIMIT 1",
                (shard_id, limit),
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

    def checkpoint_seqs(self, shard_id: str) -> Sequence[int]:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                "SELECT seq FROM wal_checkpoints WHERE shard_id = %s ORDER BY seq", (shard_id,)
            )
            return [int(row["seq"]) for row in curs.fetchall()]
