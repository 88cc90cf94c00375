"""Decoding looks types up in our own registry: a name found in data is never imported or called.

A stored event, a snapshot or a checkpoint names classes and enums by topic. Resolving such a
topic by import would let whoever wrote the bytes run any callable with an argument of their
choosing (`os:system` with a shell command); every decode path refuses it as corrupt instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from uuid import uuid4

import pytest

from application.checkpoints.checkpoint import MAGIC, decode_state
from application.recovery.replay import EventDecoder, replay_rows
from application.wal.records import RecordedEvent, WALCorruptionError, WalRecord, encode_payload
from application.wal.registry import UnknownTypeError, domain_registry
from application.wal.transcoding import make_mapper
from domain.values import Side

SHARD = "shard-1"


def _hostile_state(marker: Path) -> bytes:
    leaf = {"_type_": "enum", "_data_": ["os:system", f"touch {marker}"]}
    return json.dumps({"originator_topic": "domain.account:Account", "side": leaf}).encode()


def test_the_replay_decoder_refuses_an_enum_it_does_not_know(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    decoder = EventDecoder(make_mapper())
    with pytest.raises(UnknownTypeError):
        decoder.decode(uuid4(), 1, "domain.account:Account.Deposited", _hostile_state(marker))
    assert not marker.exists()


def test_the_mapper_refuses_an_enum_it_does_not_know(tmp_path: Path) -> None:
    from eventsourcing.persistence import StoredEvent

    marker = tmp_path / "ran"
    stored = StoredEvent(uuid4(), 1, "domain.account:Account.Deposited", _hostile_state(marker))
    with pytest.raises(UnknownTypeError):
        make_mapper().to_domain_event(stored)
    assert not marker.exists()


@pytest.mark.parametrize("topic", ["os:system", "builtins:eval", "domain.account:Nope"])
def test_an_event_class_outside_the_registry_is_refused(topic: str) -> None:
    with pytest.raises(UnknownTypeError):
        EventDecoder(make_mapper()).decode(uuid4(), 1, topic, b"{}")


def test_a_created_event_naming_a_foreign_aggregate_class_is_refused() -> None:
    state = json.dumps({"originator_topic": "subprocess:Popen"}).encode()
    with pytest.raises(UnknownTypeError):
        EventDecoder(make_mapper()).decode(uuid4(), 1, "domain.account:Account.Opened", state)


def test_replay_reports_the_record_as_corrupt_naming_shard_and_seq(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    event = RecordedEvent(uuid4(), 1, "domain.account:Account.Deposited", _hostile_state(marker))
    record = WalRecord.seal(
        shard_id=SHARD,
        epoch=1,
        seq=1,
        command_type="Deposit",
        command_key=None,
        recorded_at_us=1,
        events=[event],
    )
    row = (1, 1, "Deposit", None, 1, encode_payload([event]), record.checksum)
    with pytest.raises(WALCorruptionError) as caught:
        replay_rows(SHARD, [[row]], EventDecoder(make_mapper()), lambda e: None, expected=1)
    assert (caught.value.shard_id, caught.value.seq) == (SHARD, 1)
    assert not marker.exists()


def test_a_checkpoint_column_of_a_foreign_enum_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    group = {
        "topic": "domain.order:Order",
        "class_version": 1,
        "keys": ["side", "_id", "_version"],
        "columns": [
            ["enum", "os:system", [f"touch {marker}"]],
            ["uuid", [uuid4().hex]],
            ["raw", [1]],
        ],
    }
    state = MAGIC + json.dumps({"counters": {}, "groups": [group]}).encode()
    with pytest.raises(ValueError):
        decode_state(state, EventDecoder(make_mapper()).revive)
    assert not marker.exists()


def test_a_checkpoint_group_of_a_foreign_class_is_refused() -> None:
    group = {
        "topic": "os:_wrap_close",
        "class_version": 1,
        "keys": ["_id", "_version"],
        "columns": [["uuid", [uuid4().hex]], ["raw", [1]]],
    }
    state = MAGIC + json.dumps({"counters": {}, "groups": [group]}).encode()
    with pytest.raises(ValueError):
        decode_state(state, EventDecoder(make_mapper()).revive)


def test_the_registry_holds_the_domain_types() -> None:
    registry = domain_registry()
    assert registry.enum("domain.values:Side") is Side
    assert registry.event("domain.account:Account.Deposited").__name__ == "Deposited"
    with pytest.raises(UnknownTypeError):
        registry.enum("os:system")
