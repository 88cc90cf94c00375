"""WAL records: one committed command's events with (shard, epoch, seq, checksum)."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any
from uuid import UUID


class WALError(Exception):
    """Base class of write-ahead-log failures."""


class WALCorruptionError(WALError):
    """A record or checkpoint that fails its checksum or does not decode: nothing at or after
    its seq is applied."""

    def __init__(self, shard_id: str, seq: int, detail: str = "checksum mismatch") -> None:
        super().__init__(f"WAL corruption in shard {shard_id} at seq {seq}: {detail}")
        self.shard_id = shard_id
        self.seq = seq


class WALGapError(WALError):
    """A record that is not the next one expected (a seq skipped, repeated or missing at the
    end, or a record of another shard): the dense sequence is broken."""

    def __init__(self, shard_id: str, expected: int, got: int) -> None:
        super().__init__(f"WAL gap in shard {shard_id}: expected seq {expected}, got {got}")
        self.shard_id = shard_id
        self.expected = expected
        self.got = got


class WriterFencedError(WALError):
    """The shard's head moved under this writer: another writer or a newer epoch owns it."""

    def __init__(self, shard_id: str, epoch: int, expected_seq: int) -> None:
        super().__init__(
            f"writer of shard {shard_id} (epoch {epoch}) refused by the store: head is no "
            f"longer at seq {expected_seq} or a newer epoch owns the shard"
        )
        self.shard_id = shard_id
        self.epoch = epoch
        self.expected_seq = expected_seq


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """One stored event as the event store keeps it (the wire form of replication)."""

    originator_id: UUID
    originator_version: int
    topic: str
    state: bytes


@dataclass(frozen=True, slots=True)
class WalRecord:
    """One command's events, numbered densely per shard and sealed by a SHA-256 checksum."""

    shard_id: str
    epoch: int
    seq: int
    command_type: str
    command_key: str | None
    recorded_at_us: int
    events: tuple[RecordedEvent, ...]
    checksum: str
    _payload: bytes | None = field(default=None, compare=False, repr=False)

    @classmethod
    def seal(
        cls,
        *,
        shard_id: str,
        epoch: int,
        seq: int,
        command_type: str,
        command_key: str | None,
        recorded_at_us: int,
        events: Sequence[RecordedEvent],
    ) -> WalRecord:
        """Build a record and compute its checksum over the canonical encoding."""
        events = tuple(events)
        payload = encode_payload(events)
        checksum = compute_checksum(
            shard_id, epoch, seq, command_type, command_key, recorded_at_us, payload
        )
        return cls(
            shard_id,
            epoch,
            seq,
            command_type,
            command_key,
            recorded_at_us,
            events,
            checksum,
            payload,
        )

    @property
    def payload(self) -> bytes:
        """The canonical bytes the checksum covers (computed once per record)."""
        cached = self._payload
        if cached is None:
            cached = encode_payload(self.events)
            object.__setattr__(self, "_payload", cached)
        return cached

    @classmethod
    def from_row(
        cls,
        *,
        shard_id: str,
        epoch: int,
        seq: int,
        command_type: str,
        command_key: str | None,
        recorded_at_us: int,
        payload: bytes,
        checksum: str,
        verify: bool = True,
    ) -> WalRecord:
        """Rebuild a stored record, verifying its checksum before decoding anything."""
        if verify:
            expected = compute_checksum(
                shard_id, epoch, seq, command_type, command_key, recorded_at_us, payload
            )
            if expected != checksum:
                raise WALCorruptionError(shard_id, seq)
        try:
            events = decode_payload(payload)
        except (ValueError, KeyError, TypeError) as exc:
            raise WALCorruptionError(shard_id, seq, f"undecodable payload: {exc}") from None
        return cls(
            shard_id,
            epoch,
            seq,
            command_type,
            command_key,
            recorded_at_us,
            events,
            checksum,
            payload,
        )

    def to_wire(self) -> dict[str, Any]:
        """JSON-able form for Kafka: the payload travels as it is stored, checksum included."""
        return {
            "shard_id": self.shard_id,
            "epoch": self.epoch,
            "seq": self.seq,
            "command_type": self.command_type,
            "command_key": self.command_key,
            "recorded_at_us": self.recorded_at_us,
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "checksum": self.checksum,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> WalRecord:
        """Decode a wire record and verify it; corrupt input raises WALCorruptionError."""
        shard_id = str(data.get("shard_id", "?"))
        seq = int(data.get("seq", -1))
        try:
            payload = base64.b64decode(data["payload"], validate=True)
            recorded_at_us = int(data["recorded_at_us"])
            epoch = int(data["epoch"])
            command_type = str(data["command_type"])
            command_key = data["command_key"]
            checksum = str(data["checksum"])
        except (KeyError, ValueError, TypeError) as exc:
            raise WALCorruptionError(shard_id, seq, f"malformed record: {exc}") from None
        return cls.from_row(
            shard_id=shard_id,
            epoch=epoch,
            seq=seq,
            command_type=command_type,
            command_key=None if command_key is None else str(command_key),
            recorded_at_us=recorded_at_us,
            payload=payload,
            checksum=checksum,
        )


_EVENT_HEADER = struct.Struct(">16sqHI")


def encode_payload(events: Sequence[RecordedEvent]) -> bytes:
    """Canonical bytes of a record's events: a count, then per event its originator id (16
    bytes), version, topic and state, each length-prefixed, big-endian."""
    parts = [struct.pack(">I", len(events))]
    for e in events:
        topic = e.topic.encode()
        parts.append(
            _EVENT_HEADER.pack(
                e.originator_id.bytes, e.originator_version, len(topic), len(e.state)
            )
        )
        parts.append(topic)
        parts.append(e.state)
    return b"".join(parts)


_TOPICS: dict[bytes, str] = {}
_IDS: dict[bytes, UUID] = {}
_CACHE_MAX = 200_000


def iter_payload(payload: bytes) -> Iterator[tuple[UUID, int, str, bytes]]:
    """The (originator id, version, topic, state) of each event of a payload, in order.

    Raises ValueError on any inconsistency, after the events before it. Ids and topics recur,
    so equal ones come from a small cache (both are immutable).
    """
    unpack = _EVENT_HEADER.unpack_from
    header_size = _EVENT_HEADER.size
    end = len(payload)
    try:
        (count,) = struct.unpack_from(">I", payload, 0)
        offset = 4
        for _ in range(count):
            raw_id, version, topic_len, state_len = unpack(payload, offset)
            offset += header_size
            raw_topic = payload[offset : offset + topic_len]
            offset += topic_len
            if offset + state_len > end:
                raise ValueError("truncated event state")
            state = payload[offset : offset + state_len]
            offset += state_len
            topic = _TOPICS.get(raw_topic)
            if topic is None:
                if len(raw_topic) != topic_len:
                    raise ValueError("truncated event topic")
                if len(_TOPICS) >= 1000:
                    _TOPICS.clear()
                topic = _TOPICS[raw_topic] = raw_topic.decode()
            originator_id = _IDS.get(raw_id)
            if originator_id is None:
                if len(_IDS) >= _CACHE_MAX:
                    _IDS.clear()
                originator_id = _IDS[raw_id] = UUID(bytes=raw_id)
            yield originator_id, version, topic, state
    except struct.error as exc:
        raise ValueError(f"truncated payload: {exc}") from None
    if offset != end:
        raise ValueError(f"{end - offset} trailing bytes")


def decode_payload(payload: bytes) -> tuple[RecordedEvent, ...]:
    """Inverse of encode_payload; raises ValueError on any inconsistency."""
    return tuple(RecordedEvent(*fields) for fields in iter_payload(payload))


_escape: Callable[[str], str] = json.encoder.encode_basestring_ascii  # what dumps uses


def _checksum_header(
    shard_id: str,
    epoch: int,
    seq: int,
    command_type: str,
    command_key: str | None,
    recorded_at_us: int,
) -> bytes:
    """json.dumps([...], separators=(",", ":")) of the header fields, byte for byte.

    Formatting the common field types directly costs a fraction of json.dumps; anything else
    takes json.dumps itself, so the bytes never differ.
    """
    if (
        type(shard_id) is str
        and type(command_type) is str
        and type(epoch) is int
        and type(seq) is int
        and type(recorded_at_us) is int
    ):
        if command_key is None:
            key = "null"
        elif type(command_key) is str:
            key = _escape(command_key)
        else:
            key = ""
        if key:
            return (
                f"[{_escape(shard_id)},{epoch},{seq},{_escape(command_type)},{key},"
                f"{recorded_at_us}]\n"
            ).encode()
    return (
        json.dumps(
            [shard_id, epoch, seq, command_type, command_key, recorded_at_us],
            separators=(",", ":"),
        ).encode()
        + b"\n"
    )


def compute_checksum(
    shard_id: str,
    epoch: int,
    seq: int,
    command_type: str,
    command_key: str | None,
    recorded_at_us: int,
    payload: bytes,
) -> str:
    """SHA-256 over a canonical header and the payload; the header pins the record's place.

    The header is the compact JSON list of the fields, then a newline, then the payload.
    """
    digest = sha256(
        _checksum_header(shard_id, epoch, seq, command_type, command_key, recorded_at_us)
    )
    if len(payload) < _GIL_FREE_HASH_BYTES:
        digest.update(payload)
    else:
        # hashlib lets other threads run while it hashes 2 KiB or more, and getting the
        # interpreter back then waits for whichever thread took it (up to the switch interval,
        # 5 ms): on the writer that wait lands on every record of the batch. A record is a
        # few KiB at most, so it is hashed in pieces just under the limit, holding the lock.
        view = memoryview(payload)
        for start in range(0, len(view), _GIL_FREE_HASH_BYTES - 1):
            digest.update(view[start : start + _GIL_FREE_HASH_BYTES - 1])
    return digest.hexdigest()


_GIL_FREE_HASH_BYTES = 2048  # CPython's HASHLIB_GIL_MINSIZE
