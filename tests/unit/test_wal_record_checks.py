"""A WAL record is believed only when its checksum, its encoding and its wire form all hold:
each way a record can be damaged is refused with its own typed error, naming shard and seq."""

from __future__ import annotations

import base64
import json
import struct
from hashlib import sha256
from typing import Any
from uuid import UUID, uuid4

import pytest

from application.wal.records import (
    _CACHE_MAX,
    _GIL_FREE_HASH_BYTES,
    GENESIS,
    RecordedEvent,
    WALCorruptionError,
    WALGapError,
    WalRecord,
    WriterFencedError,
    _checksum_header,
    compute_checksum,
    decode_payload,
    encode_payload,
    iter_payload,
)

ID = UUID("00112233-4455-6677-8899-aabbccddeeff")


def _event(topic: str = "t:x", state: bytes = b"{}", version: int = 1) -> RecordedEvent:
    return RecordedEvent(ID, version, topic, state)


def _record(**overrides: Any) -> WalRecord:
    fields: dict[str, Any] = dict(
        shard_id="shard-1",
        epoch=2,
        seq=7,
        command_type="Deposit",
        command_key="k-1",
        recorded_at_us=1_234,
        events=[_event(), _event("t:y", b"[1]", 2)],
        prev_checksum="ab" * 32,
    )
    fields.update(overrides)
    return WalRecord.seal(**fields)


# -- errors name what failed -------------------------------------------------------------------


def test_the_errors_name_shard_and_seq() -> None:
    corrupt = WALCorruptionError("s", 5)
    assert (corrupt.shard_id, corrupt.seq) == ("s", 5)
    assert str(corrupt) == "WAL corruption in shard s at seq 5: checksum mismatch"
    assert str(WALCorruptionError("s", 5, "why")).endswith("at seq 5: why")
    gap = WALGapError("s", 3, 9)
    assert (gap.shard_id, gap.expected, gap.got) == ("s", 3, 9)
    assert str(gap) == "WAL gap in shard s: expected seq 3, got 9"
    fenced = WriterFencedError("s", 4, 10)
    assert (fenced.shard_id, fenced.epoch, fenced.expected_seq) == ("s", 4, 10)
    assert "shard s (epoch 4)" in str(fenced) and "seq 10" in str(fenced)
    assert GENESIS == "0" * 64


# -- sealing --------------------------------------------------------------------------------


def test_seal_checksums_the_canonical_form_chained_to_its_predecessor_and_signs_it() -> None:
    signed: list[str] = []

    def sign(checksum: str) -> str:
        signed.append(checksum)
        return "k1:" + checksum[:8]

    record = _record(sign=sign)
    payload = encode_payload(record.events)
    assert record.checksum == compute_checksum(
        "shard-1", 2, 7, "Deposit", "k-1", 1_234, payload, "ab" * 32
    )
    assert record.prev_checksum == "ab" * 32
    assert signed == [record.checksum] and record.mac == "k1:" + record.checksum[:8]
    assert record.payload == payload
    assert _record().mac is None
    assert (
        WalRecord.seal(
            shard_id="s",
            epoch=1,
            seq=1,
            command_type="X",
            command_key=None,
            recorded_at_us=0,
            events=[],
        ).prev_checksum
        == GENESIS
    )


def test_a_record_built_without_its_payload_encodes_it_once() -> None:
    sealed = _record()
    bare = WalRecord(
        sealed.shard_id,
        sealed.epoch,
        sealed.seq,
        sealed.command_type,
        sealed.command_key,
        sealed.recorded_at_us,
        sealed.events,
        sealed.checksum,
        sealed.prev_checksum,
    )
    first = bare.payload
    assert first == sealed.payload
    assert bare.payload is first  # computed once, kept


# -- rebuilding a stored record -------------------------------------------------------------


def _row(record: WalRecord) -> dict[str, Any]:
    return dict(
        shard_id=record.shard_id,
        epoch=record.epoch,
        seq=record.seq,
        command_type=record.command_type,
        command_key=record.command_key,
        recorded_at_us=record.recorded_at_us,
        payload=record.payload,
        checksum=record.checksum,
        prev_checksum=record.prev_checksum,
        mac="k1:00",
    )


def test_from_row_keeps_every_field_of_a_record_that_verifies() -> None:
    record = _record()
    rebuilt = WalRecord.from_row(**_row(record))
    assert rebuilt == WalRecord(
        record.shard_id,
        record.epoch,
        record.seq,
        record.command_type,
        record.command_key,
        record.recorded_at_us,
        record.events,
        record.checksum,
        record.prev_checksum,
        "k1:00",
    )
    assert rebuilt.payload == record.payload


@pytest.mark.parametrize(
    "field, value",
    [
        ("shard_id", "shard-2"),
        ("epoch", 3),
        ("seq", 8),
        ("command_type", "Withdraw"),
        ("command_key", None),
        ("recorded_at_us", 1_235),
        ("prev_checksum", "cd" * 32),
        ("prev_checksum", None),
        ("checksum", "ff" * 32),
    ],
)
def test_from_row_refuses_a_record_whose_checksum_does_not_cover_it(field: str, value: Any) -> None:
    row = _row(_record())
    row[field] = value
    with pytest.raises(WALCorruptionError) as caught:
        WalRecord.from_row(**row)
    assert caught.value.seq == row["seq"] and caught.value.shard_id == row["shard_id"]
    assert "checksum mismatch" in str(caught.value)


def test_from_row_without_verification_trusts_the_checksum_but_still_decodes() -> None:
    row = _row(_record())
    row["checksum"] = "ff" * 32
    assert WalRecord.from_row(**row, verify=False).checksum == "ff" * 32
    row["payload"] = row["payload"] + b"x"
    with pytest.raises(WALCorruptionError, match="undecodable payload: 1 trailing bytes"):
        WalRecord.from_row(**row, verify=False)


def test_a_payload_that_does_not_decode_is_corruption_even_with_a_right_checksum() -> None:
    row = _row(_record())
    row["payload"] = row["payload"][:-1]
    row["checksum"] = compute_checksum(
        row["shard_id"],
        row["epoch"],
        row["seq"],
        row["command_type"],
        row["command_key"],
        row["recorded_at_us"],
        row["payload"],
        row["prev_checksum"],
    )
    with pytest.raises(WALCorruptionError, match="at seq 7: undecodable payload"):
        WalRecord.from_row(**row)


# -- the wire form --------------------------------------------------------------------------


def test_the_wire_form_round_trips_every_field() -> None:
    record = _record(sign=lambda c: "k1:" + c[:4])
    wire = record.to_wire()
    assert wire == {
        "shard_id": "shard-1",
        "epoch": 2,
        "seq": 7,
        "command_type": "Deposit",
        "command_key": "k-1",
        "recorded_at_us": 1_234,
        "payload": base64.b64encode(record.payload).decode("ascii"),
        "checksum": record.checksum,
        "prev_checksum": "ab" * 32,
        "mac": "k1:" + record.checksum[:4],
    }
    back = WalRecord.from_wire(json.loads(json.dumps(wire)))
    assert back == record and back.mac == record.mac
    unchained = _record(command_key=None, prev_checksum=None)
    assert WalRecord.from_wire(unchained.to_wire()) == unchained


@pytest.mark.parametrize(
    "change",
    [
        {"payload": "not base64!"},
        {"recorded_at_us": "soon"},
        {"epoch": None},
        {"prev_checksum": 5},
        {"mac": ["k1", "x"]},
    ],
)
def test_a_malformed_wire_record_is_corruption_naming_its_seq(change: dict[str, Any]) -> None:
    wire = {**_record().to_wire(), **change}
    with pytest.raises(WALCorruptionError, match="shard shard-1 at seq 7: malformed record"):
        WalRecord.from_wire(wire)


@pytest.mark.parametrize(
    "missing", ["payload", "recorded_at_us", "epoch", "command_type", "command_key", "checksum"]
)
def test_a_wire_record_missing_a_field_is_malformed(missing: str) -> None:
    wire = _record().to_wire()
    del wire[missing]
    with pytest.raises(WALCorruptionError, match="malformed record"):
        WalRecord.from_wire(wire)


def test_a_wire_record_without_shard_or_seq_is_reported_as_unknown() -> None:
    wire = _record().to_wire()
    del wire["shard_id"], wire["seq"]
    with pytest.raises(WALCorruptionError) as caught:
        WalRecord.from_wire(wire)
    assert caught.value.shard_id == "?" and caught.value.seq == -1


def test_a_wire_record_altered_in_transit_fails_its_checksum() -> None:
    wire = _record().to_wire()
    wire["recorded_at_us"] += 1
    with pytest.raises(WALCorruptionError, match="checksum mismatch"):
        WalRecord.from_wire(wire)


# -- the payload encoding: every truncation is refused, by name ---------------------------------


def _one_event(
    topic: bytes,
    state: bytes,
    *,
    topic_len: int | None = None,
    state_len: int | None = None,
    count: int = 1,
) -> bytes:
    header = struct.pack(
        ">16sqHI",
        ID.bytes,
        1,
        len(topic) if topic_len is None else topic_len,
        len(state) if state_len is None else state_len,
    )
    return struct.pack(">I", count) + header + topic + state


def test_the_encoding_is_count_then_header_topic_and_state_per_event() -> None:
    assert encode_payload([_event("ab", b"xyz", 3)]) == (
        b"\x00\x00\x00\x01"
        + ID.bytes
        + (3).to_bytes(8, "big")
        + b"\x00\x02"
        + b"\x00\x00\x00\x03"
        + b"ab"
        + b"xyz"
    )
    assert encode_payload([]) == b"\x00\x00\x00\x00"
    assert decode_payload(b"\x00\x00\x00\x00") == ()


def test_a_state_running_past_the_end_is_refused() -> None:
    payload = _one_event(b"t:a", b"{}", state_len=3)
    with pytest.raises(ValueError, match=r"^truncated event state$"):
        decode_payload(payload)
    assert decode_payload(_one_event(b"t:a", b"{}")) == (RecordedEvent(ID, 1, "t:a", b"{}"),)


def test_a_topic_running_past_the_end_is_refused() -> None:
    """A topic cut short leaves the event's end beyond the payload's: refused before the topic
    is decoded, so never taken from the cache of topics seen before (its own length check
    after that is a second guard that a payload cannot reach)."""
    seen = "t:seen"
    decode_payload(_one_event(seen.encode(), b""))  # in the cache now
    for topic, claimed in ((b"t:z", 40), (seen.encode()[:-1], len(seen)), (seen.encode(), 7)):
        payload = _one_event(topic, b"", topic_len=claimed)
        with pytest.raises(ValueError, match=r"^truncated event state$"):
            decode_payload(payload)


def test_a_header_cut_short_is_a_truncated_payload() -> None:
    whole = _one_event(b"t:a", b"{}")
    for cut in (0, 3, 4, 10, 4 + 29):
        with pytest.raises(ValueError, match=r"^truncated payload: "):
            decode_payload(whole[:cut])
    with pytest.raises(ValueError, match=r"^truncated payload: "):
        decode_payload(_one_event(b"t:a", b"{}", count=2))  # a second event that is not there


def test_trailing_bytes_are_refused_with_their_count() -> None:
    with pytest.raises(ValueError, match=r"^3 trailing bytes$"):
        decode_payload(_one_event(b"t:a", b"{}") + b"abc")


def test_the_events_before_a_damaged_one_come_first() -> None:
    good = encode_payload([_event("t:a", b"1"), _event("t:b", b"2", 2)])
    damaged = good[:-1]
    seen: list[tuple[UUID, int, str, bytes]] = []
    with pytest.raises(ValueError):
        for fields in iter_payload(damaged):
            seen.append(fields)
    assert seen == [(ID, 1, "t:a", b"1")]


def test_decoding_stays_right_when_its_caches_are_full() -> None:
    topics = [f"t:{n}" for n in range(1_100)]  # more than the topic cache keeps
    events = [RecordedEvent(uuid4(), n, topic, b"s") for n, topic in enumerate(topics)]
    assert decode_payload(encode_payload(events)) == tuple(events)
    assert _CACHE_MAX >= 1_000


# -- the checksum covers header and every byte of the payload -------------------------------------


@pytest.mark.parametrize(
    "size",
    [
        0,
        1,
        _GIL_FREE_HASH_BYTES - 1,
        _GIL_FREE_HASH_BYTES,
        _GIL_FREE_HASH_BYTES + 1,
        4095,
        4096,
        10_000,
    ],
)
def test_the_checksum_is_sha256_of_header_and_whole_payload(size: int) -> None:
    payload = bytes((n * 7 + 3) % 256 for n in range(size))
    header = _checksum_header("s", 1, 2, "X", None, 3, GENESIS)
    expected = sha256(header + payload).hexdigest()
    assert compute_checksum("s", 1, 2, "X", None, 3, payload, GENESIS) == expected
    if size:
        flipped = bytearray(payload)
        flipped[0] ^= 1
        assert compute_checksum("s", 1, 2, "X", None, 3, bytes(flipped), GENESIS) != expected
        flipped = bytearray(payload)
        flipped[-1] ^= 1
        assert compute_checksum("s", 1, 2, "X", None, 3, bytes(flipped), GENESIS) != expected


@pytest.mark.parametrize(
    "fields",
    [
        ("s", 1, 2, "X", 17, 3, None),  # a command key that is not text
        ("s", 1, 2, "X", "k", 3, 99),  # a previous checksum that is not text
        ("s", True, 2, "X", "k", 3, "ab"),  # a bool is not an epoch number
        ("s", 1, 2.0, "X", None, 3, None),
        (7, 1, 2, "X", None, 3, None),
        ("s", 1, 2, ["X"], None, 3, "ab"),
        ("s", 1, 2, "X", None, 3.5, "ab"),
        ("s", 1, "2", "X", None, 3, "ab"),  # text where numbers belong: quoted, as JSON says
        ("s", 1, 2, "X", None, "3", None),
        ("s", 1, 2, "X", 'q"\\\u00e9', 3, "ab"),
    ],
)
def test_the_checksum_header_is_the_json_header_for_any_field_types(
    fields: tuple[Any, ...],
) -> None:
    listed = list(fields[:6]) + ([] if fields[6] is None else [fields[6]])
    expected = json.dumps(listed, separators=(",", ":")).encode() + b"\n"
    assert _checksum_header(*fields) == expected


def test_a_record_is_immutable_and_unchained_unless_built_so() -> None:
    import dataclasses

    record = _record()
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.seq = 8  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.events[0].state = b"x"  # type: ignore[misc]
    bare = WalRecord("s", 1, 1, "X", None, 0, (), "00" * 32)
    assert bare.prev_checksum is None and bare.mac is None
    assert "_payload" not in repr(bare)
