"""Segment files without servers: rows come back as written; damage names the first bad seq."""

from __future__ import annotations

import dataclasses
from pathlib import Path

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


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_a_manifest_row_naming_a_file_outside_its_range_is_refused_unread(
    kind: str, tmp_path: Path
) -> None:
    """A manifest row comes from another store (a re-seed reads the leader's): the file it names
    must be the one its shard and range give, never a path the row chose (on a local archive,
    `../` would read any file the process may read, as long as it decodes)."""
    base = f"{tmp_path}" if kind == "local" else "memory://segments-names"
    archive = SegmentArchive(f"{base}/root")
    segment = archive.write(SHARD, _rows(1, 50))
    data = archive.fs.cat_file(f"{archive.root}/{segment.file}")
    elsewhere = f"{archive.root.rsplit('/', 1)[0]}/elsewhere"
    archive.fs.makedirs(elsewhere, exist_ok=True)
    archive.fs.pipe_file(f"{elsewhere}/copy.seg", data)  # a good segment, outside the root
    for file in ("../elsewhere/copy.seg", f"{SHARD}/../../elsewhere/copy.seg", "other/x.seg"):
        forged = dataclasses.replace(segment, file=file)
        archive.forget()
        for read in (archive.read_checked, archive.read, archive.read_bytes):
            with pytest.raises(ArchiveError, match="not the file of its range") as caught:
                read(forged)
            assert caught.value.seq == 1
        assert not archive.exists(forged)  # a re-seed's plan names it unreadable: blocked
    forged = dataclasses.replace(segment, shard_id="..", file=archive.name("..", 1, 50))
    with pytest.raises(ArchiveError, match="not the file of its range"):
        archive.read_checked(forged)
