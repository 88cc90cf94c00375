"""The WAL recorder's reads of records that have left the live table for the archive.

Mixed into PostgresWalRecorder: replay pages, a page of records and the idempotency keys of a
shard come from the archive's segments (listed in wal_archive_segments, deleted from
wal_records) before the live table. The live paths pay nothing for it: the manifest is read only
when a read starts at or before the archived seq.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Sequence
from typing import Any

from application.recovery.replay import RawRow
from application.wal.records import WALError, WalRecord
from infra.wal.archive import Segment, SegmentArchive

log = logging.getLogger("exchange_dr.archive")

_SEGMENTS = (
    "SELECT shard_id, first_seq, last_seq, file, bytes, checksum, first_checksum, last_checksum "
    "FROM wal_archive_segments WHERE shard_id = %s AND deleted ORDER BY first_seq"
)


def record_of_row(shard_id: str, row: RawRow, *, verify: bool = True) -> WalRecord:
    """A WAL record from an archived segment's row (`verify`: its checksum checked)."""
    seq, epoch, kind, key, recorded_at_us, payload, checksum, prev, mac = row
    return WalRecord.from_row(
        shard_id=shard_id,
        epoch=epoch,
        seq=seq,
        command_type=kind,
        command_key=key,
        recorded_at_us=recorded_at_us,
        payload=bytes(payload),
        checksum=checksum,
        prev_checksum=prev,
        mac=mac,
        verify=verify,
    )


class ArchiveNotConfiguredError(WALError):
    """Records of a shard are archived but this process has no archive to read them from."""


class ArchivedReads:
    archive: SegmentArchive | None = None
    datastore: Any
    _logged_segment = ""

    def archived_segments(self, shard_id: str) -> list[Segment]:
        """Manifest rows of the shard's archived ranges, in seq order."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(_SEGMENTS, (shard_id,))
            rows = curs.fetchall()
        return [
            Segment(
                row["shard_id"],
                int(row["first_seq"]),
                int(row["last_seq"]),
                row["file"],
                int(row["bytes"]),
                row["checksum"],
                row["first_checksum"],
                row["last_checksum"],
            )
            for row in rows
        ]

    def archived_seq(self, shard_id: str) -> int:
        """The last seq that has left the live table (0: none)."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                "SELECT coalesce(max(last_seq), 0) AS seq FROM wal_archive_segments "
                "WHERE shard_id = %s AND deleted",
                (shard_id,),
            )
            row = curs.fetchone()
        return 0 if row is None else int(row["seq"])

    def _archive_for(self, shard_id: str, segments: Sequence[Segment]) -> SegmentArchive:
        if self.archive is None:
            raise ArchiveNotConfiguredError(
                f"shard {shard_id}: seqs {segments[0].first_seq}..{segments[-1].last_seq} are "
                "archived, but no archive is configured here (EXDR_ARCHIVE_URL)"
            )
        return self.archive

    def archived_pages(
        self, shard_id: str, after_seq: int, upto_seq: int
    ) -> Generator[list[RawRow], None, int]:
        """Archived pages after `after_seq`; returns where the live table takes over."""
        if after_seq >= upto_seq:
            return after_seq
        segments = self.archived_segments(shard_id)
        if not segments or after_seq >= segments[-1].last_seq:
            return after_seq
        archive = self._archive_for(shard_id, segments)
        if segments[0].first_seq > after_seq + 1:
            # archived ranges start at seq 1: a hole here is a manifest that lost a row
            raise WALError(
                f"shard {shard_id}: archive manifest starts at seq {segments[0].first_seq}, "
                f"replay needs seq {after_seq + 1}"
            )
        yield from archive.pages(segments, after_seq, upto_seq)
        archive.forget()
        return min(upto_seq, segments[-1].last_seq)

    def archived_records(
        self, shard_id: str, after_seq: int, limit: int, *, verify: bool = True
    ) -> list[WalRecord] | None:
        """A page of records read from the archive (None: that seq is not archived)."""
        segments = [s for s in self.archived_segments(shard_id) if s.last_seq > after_seq]
        if not segments or segments[0].first_seq > after_seq + 1:
            if self.archive is not None:
                self.archive.forget()  # the reader has left the archive: free its segment
            return None
        archive = self._archive_for(shard_id, segments)
        if segments[0].file != self._logged_segment:
            self._logged_segment = segments[0].file
            log.warning(
                "reading archived records shard=%s after_seq=%s file=%s (a reader far behind: a "
                "standby catching up through the archive, or a retry of an archived deposit)",
                shard_id,
                after_seq,
                segments[0].file,
            )
        records: list[WalRecord] = []
        for page in archive.pages(segments[:1], after_seq, after_seq + limit):
            records.extend(record_of_row(shard_id, row, verify=verify) for row in page)
        if after_seq + limit >= segments[0].last_seq:
            archive.forget()  # this page ends the segment: the next one is read anew
        return records

    def archived_keys(self, shard_id: str, upto_seq: int) -> Generator[str, None, int]:
        """Idempotency keys of archived records (streamed); returns the archived seq."""
        archived = self.archived_seq(shard_id)
        if archived == 0:
            return 0
        with (
            self.datastore.get_connection() as conn,
            conn.transaction(),
            conn.cursor(name=f"archived-keys-{shard_id}") as curs,
        ):
            curs.itersize = 20_000
            curs.execute(
                "SELECT command_key FROM wal_archived_keys WHERE shard_id = %s AND seq <= %s",
                (shard_id, upto_seq),
            )
            for row in curs:
                yield row["command_key"] if isinstance(row, dict) else row[0]
        return min(archived, upto_seq)
