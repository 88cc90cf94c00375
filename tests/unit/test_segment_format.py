"""Segment files without servers: rows come back as written; damage names the first bad seq."""

from __future__ import annotations

import pytest

from application.recovery.replay import RawRow
from application.wal.records import compute_checksum
from infra.wal.archive import ArchiveError, SegmentArchive

SHARD = "shard-1"


def _rows(first: int, count: int) -> list[RawRow]:
    rows: list[RawRow] = []
    prev: str | None = None  # the first record of the shard's history has no predecessor
    for seq in range(first, first + count):
        key = None if seq % 3 else f"key-{seq}"
        payload = bytes([seq % 251]) * (50 + seq % 200)
        checksum = compute_checksum(SHARD, 1, seq, "PlaceOrder", key, 1000 + seq, payload, prev)
        mac = None if seq % 2 else f"k1:{seq:064x}"
        rows.append((seq, 1, "PlaceOrder", key, 1000 + seq, payload, checksum, prev, mac))
        prev = checksum
    return rows


def test_rows_come_back_as_written_and_pages_follow_the_range() -> None:
    archive = SegmentArchive("memory://segments-roundtrip")
    rows = _rows(1, 500)
    segment = archive.write(SHARD, rows)
    assert segment.file == f"{SHARD}/{1:020d}-{500:020d}.seg" and segment.records == 500
    assert [(*r[:5], bytes(r[5]), *r[6:]) for r in archive.read(segment)] == rows
    pages = list(archive.pages([segment], 100, 250, page=64))
    assert [r[0] for page in pages for r in page] == list(range(101, 251))


def test_truncated_altered_and_missing_segments_name_file_and_seq() -> None:
    archive = SegmentArchive("memory://segments-damage")
    segment = archive.write(SHARD, _rows(1001, 400))
    path = f"{archive.root}/{segment.file}"
    data = archive.fs.cat_file(path)

    archive.fs.pipe_file(path, data[: len(data) // 2])
    archive.forget()
    with pytest.raises(ArchiveError) as caught:
        archive.read(segment)
    assert segment.file in str(caught.value) and 1001 <= caught.value.seq <= 1400

    archive.fs.pipe_file(path, data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(ArchiveError) as caught:
        archive.read(segment)
    assert segment.file in str(caught.value)

    archive.fs.rm_file(path)
    with pytest.raises(ArchiveError) as caught:
        archive.read(segment)
    assert caught.value.seq == 1001 and "missing" in str(caught.value)
