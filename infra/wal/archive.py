"""The WAL archive: immutable, compressed segment files of a shard's oldest records.

A segment holds the records first_seq..last_seq of one shard. Its file is written once, under a
name made of the range, and listed in PostgreSQL (wal_archive_segments) with its size, the
SHA-256 of the whole file and the checksums of its first and last records; the records keep
their own checksums inside. Storage goes through fsspec, so the location is a URL: a directory
by default, an object store (s3://, gs://, ...) where the matching fsspec driver is installed.

File layout: MAGIC, then a zstd frame of a JSON header line {"shard", "first_seq", "last_seq",
"records", "columns", "rows"} and the rows as PostgreSQL's binary COPY format writes them
(documented and stable: a signature, then per row a field count and length-prefixed fields in
the order of "columns"), so the archiver streams COPY's output to the file untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import zstandard

from application.recovery.replay import RawRow
from application.wal.records import WALError, compute_checksum

MAGIC = b"EXDRSEG1"
COLUMNS = (
    "seq",
    "epoch",
    "command_type",
    "command_key",
    "recorded_at_us",
    "payload",
    "checksum",
    "prev_checksum",  # the shard's hash chain: the checksum of the record before
    "mac",  # the record's MAC under the regions' replication key
)
_LEVEL = 1  # zstd's fastest regular level: a WAL compresses about 12:1 at hundreds of MB/s


class ArchiveError(WALError):
    """A segment that is missing, truncated or altered: names its file and the first bad seq."""

    def __init__(self, file: str, seq: int, detail: str) -> None:
        super().__init__(f"WAL archive segment {file}: bad at seq {seq}: {detail}")
        self.file = file
        self.seq = seq


@dataclass(frozen=True, slots=True)
class Segment:
    """A manifest row."""

    shard_id: str
    first_seq: int
    last_seq: int
    file: str
    bytes: int
    checksum: str
    first_checksum: str
    last_checksum: str

    @property
    def records(self) -> int:
        return self.last_seq - self.first_seq + 1


def segment_header(shard_id: str, first_seq: int, last_seq: int) -> bytes:
    header = {
        "shard": shard_id,
        "first_seq": first_seq,
        "last_seq": last_seq,
        "records": last_seq - first_seq + 1,
        "columns": list(COLUMNS),
        "rows": "postgresql-copy-binary",
    }
    return json.dumps(header, separators=(",", ":")).encode() + b"\n"


class SegmentEncoder:
    """Segment bytes built as PostgreSQL's binary COPY output of the rows streams in:
    the rows are never turned into Python objects on the way to the file."""

    def __init__(self, shard_id: str, first_seq: int, last_seq: int) -> None:
        self._compressor = zstandard.ZstdCompressor(level=_LEVEL).compressobj()
        self._parts = [
            MAGIC,
            self._compressor.compress(segment_header(shard_id, first_seq, last_seq)),
        ]

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        out = self._compressor.compress(bytes(chunk))
        if out:
            self._parts.append(out)

    def finish(self) -> bytes:
        self._parts.append(self._compressor.flush())
        return b"".join(self._parts)


def encode_segment(shard_id: str, rows: Sequence[RawRow]) -> bytes:
    """The file bytes of dense rows of one shard (what COPY would have sent for them)."""
    encoder = SegmentEncoder(shard_id, rows[0][0], rows[-1][0])
    parts = [_COPY_SIGNATURE, b"\0\0\0\0\0\0\0\0"]
    for seq, epoch, command_type, command_key, recorded_at_us, payload, checksum, prev, mac in rows:
        kind = command_type.encode()
        parts.append(_COPY_ROW_HEAD.pack(len(COLUMNS), 8, seq, 8, epoch, len(kind)))
        parts.append(kind)
        if command_key is None:
            parts.append(b"\xff\xff\xff\xff")
        else:
            key = command_key.encode()
            parts.append(len(key).to_bytes(4, "big") + key)
        parts.append(_COPY_TAIL_HEAD.pack(8, recorded_at_us, len(payload)))
        parts.append(bytes(payload))
        parts.append(b"\0\0\0\x40" + checksum.encode())
        for text in (prev, mac):
            if text is None:
                parts.append(b"\xff\xff\xff\xff")
            else:
                raw = text.encode()
                parts.append(len(raw).to_bytes(4, "big") + raw)
    parts.append(b"\xff\xff")
    encoder.feed(b"".join(parts))
    return encoder.finish()


_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\0"
_COPY_ROW_HEAD = struct.Struct(">hiqiqi")  # fields, then seq and epoch, then command type length
_COPY_TAIL_HEAD = struct.Struct(">iqi")  # recorded_at_us, then the payload's length
_INT4 = struct.Struct(">i")
_INT8 = struct.Struct(">q")


def decode_segment(data: bytes, file: str, first_seq: int) -> tuple[dict[str, Any], list[RawRow]]:
    """Header and rows of segment bytes; whatever is unreadable raises ArchiveError naming the
    first seq that could not be read whole."""
    if data[: len(MAGIC)] != MAGIC:
        raise ArchiveError(file, first_seq, "not a segment file (bad magic)")
    body = _salvage(data[len(MAGIC) :])
    line_end = body.find(b"\n")
    try:
        header = json.loads(body[:line_end])
    except ValueError:
        raise ArchiveError(file, first_seq, "unreadable header") from None
    offset = line_end + 1
    if body[offset : offset + len(_COPY_SIGNATURE)] != _COPY_SIGNATURE:
        raise ArchiveError(file, first_seq, "rows are not in COPY binary form")
    offset += len(_COPY_SIGNATURE) + 4
    (extension,) = _INT4.unpack_from(body, offset)
    offset += 4 + extension
    rows: list[RawRow] = []
    expected = first_seq
    end = len(body)
    int4 = _INT4.unpack_from
    int8 = _INT8.unpack_from
    try:
        while True:
            (fields,) = struct.unpack_from(">h", body, offset)
            offset += 2
            if fields == -1:
                break
            if fields != len(COLUMNS):
                raise ArchiveError(file, expected, f"record of {fields} fields")
            values: list[Any] = []
            for _ in range(fields):
                (length,) = int4(body, offset)
                offset += 4
                if length < 0:
                    values.append(None)
                    continue
                if offset + length > end:
                    raise ArchiveError(file, expected, "truncated record")
                values.append(body[offset : offset + length])
                offset += length
            seq = int8(values[0])[0]
            rows.append(
                (
                    seq,
                    int8(values[1])[0],
                    values[2].decode(),
                    None if values[3] is None else values[3].decode(),
                    int8(values[4])[0],
                    values[5],
                    values[6].decode("ascii"),
                    None if values[7] is None else values[7].decode("ascii"),
                    None if values[8] is None else values[8].decode("ascii"),
                )
            )
            expected += 1
    except (struct.error, UnicodeDecodeError, TypeError):
        raise ArchiveError(file, expected, "truncated or undecodable record") from None
    return header, rows


def _salvage(compressed: bytes) -> bytes:
    """What decompresses of a damaged stream, up to the damage (to name the first bad seq)."""
    out = bytearray()
    inflater = zstandard.ZstdDecompressor().decompressobj()
    for start in range(0, len(compressed), 4096):
        try:
            out += inflater.decompress(compressed[start : start + 4096])
        except zstandard.ZstdError:
            break
    return bytes(out)


def first_bad_seq(shard_id: str, rows: Sequence[RawRow], first_seq: int) -> int | None:
    """The first row that is out of place or whose checksum does not match (None: all good)."""
    expected = first_seq
    for seq, epoch, command_type, command_key, recorded_at_us, payload, checksum, prev, _ in rows:
        if seq != expected:
            return expected
        actual = compute_checksum(
            shard_id, epoch, seq, command_type, command_key, recorded_at_us, payload, prev
        )
        if actual != checksum:
            return seq
        expected += 1
    return None


class SegmentArchive:
    """Segment files under one URL (a directory or an object-store prefix)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self._cache: tuple[str, list[RawRow]] | None = None  # the last segment read whole

    def name(self, shard_id: str, first_seq: int, last_seq: int) -> str:
        return f"{shard_id}/{first_seq:020d}-{last_seq:020d}.seg"

    def _path(self, file: str) -> str:
        return f"{self.root}/{file}"

    def _file_of(self, segment: Segment) -> str:
        """The path of a manifest row's file, which its shard and range decide: a row read from
        another store (a re-seed reads the leader's) never chooses what is read."""
        shard = segment.shard_id
        if (
            "/" in shard
            or shard in ("", ".", "..")
            or segment.file != self.name(shard, segment.first_seq, segment.last_seq)
        ):
            raise ArchiveError(segment.file, segment.first_seq, "not the file of its range")
        return self._path(segment.file)

    def write(self, shard_id: str, rows: Sequence[RawRow]) -> Segment:
        """Write (or overwrite: no manifest row names it yet) the segment of `rows`, durably."""
        return self.store(
            shard_id,
            rows[0][0],
            rows[-1][0],
            encode_segment(shard_id, rows),
            rows[0][6],
            rows[-1][6],
        )

    def store(
        self,
        shard_id: str,
        first_seq: int,
        last_seq: int,
        data: bytes,
        first_checksum: str,
        last_checksum: str,
    ) -> Segment:
        """Write encoded segment bytes under the range's name, durably."""
        file = self.name(shard_id, first_seq, last_seq)
        path = self._path(file)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        if getattr(self.fs, "local_file", False) or self.fs.protocol in ("file", ("file", "local")):
            temporary = f"{path}.tmp"
            with open(temporary, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
            directory = os.open(os.path.dirname(path), os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        else:
            self.fs.pipe_file(path, data)
        return Segment(
            shard_id,
            first_seq,
            last_seq,
            file,
            len(data),
            hashlib.sha256(data).hexdigest(),
            first_checksum,
            last_checksum,
        )

    def read_bytes(self, segment: Segment) -> bytes:
        """The stored bytes of a segment's file, as they are."""
        try:
            data: bytes = self.fs.cat_file(self._file_of(segment))
        except FileNotFoundError:
            raise ArchiveError(segment.file, segment.first_seq, "file missing") from None
        return data

    def exists(self, segment: Segment) -> bool:
        """Whether the segment's file is there to read (a re-seed asks before it starts); a row
        naming another file than its range's has nothing to read."""
        try:
            return bool(self.fs.exists(self._file_of(segment)))
        except (OSError, ArchiveError):
            return False

    def read(self, segment: Segment) -> list[RawRow]:
        """Every row of a listed segment, checked against its manifest row; ArchiveError names
        the file and the first bad seq."""
        cached = self._cache
        if cached is not None and cached[0] == segment.checksum:
            return cached[1]
        return self.read_checked(segment)[1]

    def read_checked(self, segment: Segment) -> tuple[bytes, list[RawRow]]:
        """The file's bytes and its rows, both checked against the manifest row (a re-seed
        copies the bytes once they are known good)."""
        data = self.read_bytes(segment)
        header, rows = decode_segment(data, segment.file, segment.first_seq)
        whole = hashlib.sha256(data).hexdigest() == segment.checksum
        bad = None if whole else first_bad_seq(segment.shard_id, rows, segment.first_seq)
        if bad is None and len(rows) < segment.records:
            bad = segment.first_seq + len(rows)
        if bad is not None:
            raise ArchiveError(segment.file, bad, "record missing, out of place or altered")
        if not whole:
            raise ArchiveError(segment.file, segment.first_seq, "file checksum mismatch")
        if (
            header.get("shard") != segment.shard_id
            or len(rows) != segment.records
            or rows[0][0] != segment.first_seq
            or rows[0][6] != segment.first_checksum
            or rows[-1][6] != segment.last_checksum
        ):
            raise ArchiveError(segment.file, segment.first_seq, "does not match its manifest")
        self._cache = (segment.checksum, rows)
        return data, rows

    def forget(self) -> None:
        """Drop the segment kept for the next page of a reader going through it."""
        self._cache = None

    def delete(self, segment: Segment) -> None:
        """Remove a file no manifest row names (an orphan of an interrupted run)."""
        path = self._path(segment.file)
        if self.fs.exists(path):
            self.fs.rm_file(path)

    def pages(
        self, segments: Sequence[Segment], after_seq: int, upto_seq: int, page: int = 4000
    ) -> Iterator[list[RawRow]]:
        """Pages of archived rows after `after_seq` up to `upto_seq`, in seq order, each
        segment checked whole before any of its rows is handed out."""
        for segment in segments:
            if segment.last_seq <= after_seq or segment.first_seq > upto_seq:
                continue
            rows = self.read(segment)
            start = max(0, after_seq + 1 - segment.first_seq)
            stop = min(len(rows), upto_seq - segment.first_seq + 1)
            for index in range(start, stop, page):
                yield rows[index : min(stop, index + page)]
