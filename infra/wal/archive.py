"""The WAL archive: immutable, compressed segment files of a shard's oldest records.

A segment holds the records first_seq..last_seq of one shard. Its file is written once, under a
name made of the range, and listed in PostgreSQL (wal_archive_segments) with its size, the
SHA-256 of the whole file and the checksums of its first and last records; the records keep
their own checksums inside. Storage goes through fsspec, so the location is a URL: a directory
by default, an object store (s3://, gs://, ...) where the matching fsspec driver is installed.

File layout: MAGIC, then a zstd frame of a JSON header line {"shard", "first_seq", "last_seq",
"records", "columns"} and, per record, a fixed header (seq, epoch, recorded_at_us, lengths of
command type, command key (0xFFFF: none) and payload), those three fields, then the record's
64-character checksum.
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
COLUMNS = ("seq", "epoch", "command_type", "command_key", "recorded_at_us", "payload", "checksum")
_ROW = struct.Struct(">qqqHHI")
_NO_KEY = 0xFFFF
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


def encode_segment(shard_id: str, rows: Sequence[RawRow]) -> bytes:
    """The file bytes of dense rows of one shard."""
    header = {
        "shard": shard_id,
        "first_seq": rows[0][0],
        "last_seq": rows[-1][0],
        "records": len(rows),
        "columns": list(COLUMNS),
    }
    pack = _ROW.pack
    parts: list[bytes] = [json.dumps(header, separators=(",", ":")).encode(), b"\n"]
    append = parts.append
    for seq, epoch, command_type, command_key, recorded_at_us, payload, checksum in rows:
        kind = command_type.encode()
        key = b"" if command_key is None else command_key.encode()
        append(
            pack(
                seq,
                epoch,
                recorded_at_us,
                len(kind),
                _NO_KEY if command_key is None else len(key),
                len(payload),
            )
        )
        append(kind)
        append(key)
        append(bytes(payload))
        append(checksum.encode())
    return MAGIC + zstandard.ZstdCompressor(level=_LEVEL).compress(b"".join(parts))


def decode_segment(data: bytes, file: str, first_seq: int) -> tuple[dict[str, Any], list[RawRow]]:
    """Header and rows of segment bytes; whatever is unreadable raises ArchiveError naming the
    first seq that could not be read whole."""
    if data[: len(MAGIC)] != MAGIC:
        raise ArchiveError(file, first_seq, "not a segment file (bad magic)")
    try:
        body = zstandard.ZstdDecompressor().decompress(data[len(MAGIC) :])
    except zstandard.ZstdError as exc:
        body = _salvage(data[len(MAGIC) :])
        if not body:
            raise ArchiveError(file, first_seq, f"undecompressable: {exc}") from None
    line_end = body.find(b"\n")
    try:
        header = json.loads(body[:line_end])
    except ValueError:
        raise ArchiveError(file, first_seq, "unreadable header") from None
    rows: list[RawRow] = []
    offset = line_end + 1
    end = len(body)
    expected = first_seq
    unpack = _ROW.unpack_from
    size = _ROW.size
    try:
        while offset < end:
            seq, epoch, recorded_at_us, kind_len, key_len, payload_len = unpack(body, offset)
            offset += size
            kind = body[offset : offset + kind_len].decode()
            offset += kind_len
            key: str | None = None
            if key_len != _NO_KEY:
                key = body[offset : offset + key_len].decode()
                offset += key_len
            payload = body[offset : offset + payload_len]
            offset += payload_len
            checksum = body[offset : offset + 64].decode("ascii")
            offset += 64
            if offset > end:
                raise ArchiveError(file, expected, "truncated record")
            rows.append((seq, epoch, kind, key, recorded_at_us, payload, checksum))
            expected += 1
    except (struct.error, UnicodeDecodeError):
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
    for seq, epoch, command_type, command_key, recorded_at_us, payload, checksum in rows:
        if seq != expected:
            return expected
        actual = compute_checksum(
            shard_id, epoch, seq, command_type, command_key, recorded_at_us, payload
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

    def write(self, shard_id: str, rows: Sequence[RawRow]) -> Segment:
        """Write (or overwrite: no manifest row names it yet) the segment of `rows`, durably."""
        data = encode_segment(shard_id, rows)
        file = self.name(shard_id, rows[0][0], rows[-1][0])
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
            rows[0][0],
            rows[-1][0],
            file,
            len(data),
            hashlib.sha256(data).hexdigest(),
            rows[0][6],
            rows[-1][6],
        )

    def read_bytes(self, segment: Segment) -> bytes:
        """The stored bytes of a segment's file, as they are."""
        try:
            data: bytes = self.fs.cat_file(self._path(segment.file))
        except FileNotFoundError:
            raise ArchiveError(segment.file, segment.first_seq, "file missing") from None
        return data

    def read(self, segment: Segment) -> list[RawRow]:
        """Every row of a listed segment, checked against its manifest row; ArchiveError names
        the file and the first bad seq."""
        cached = self._cache
        if cached is not None and cached[0] == segment.checksum:
            return cached[1]
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
        return rows

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
