"""What reaches a standby unverified changes nothing: not the applied seq, the lag or the gaps.

Anyone who can write to the broker can send a message; only a record that carries a valid MAC
of the regions' key and continues the shard's hash chain may move the standby's bookkeeping.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from application.recovery.replay import replay_rows
from application.replication.confirmation import ConfirmationCheck
from application.wal.auth import RejectedError, ReplicationKeys
from application.wal.chain import ChainCursor
from application.wal.records import GENESIS, WALCorruptionError, WalRecord
from projections.replication.replicator import Replicator
from tests.unit.wal_records import sealed_records

SHARD = "shard-1"


class _App:
    def __init__(self) -> None:
        self.shard_id = SHARD
        self.seq = 0
        self.stored: list[WalRecord] = []

    @property
    def chain_checksum(self) -> str:
        return self.stored[-1].checksum if self.stored else GENESIS

    def append_replicated(self, records: Sequence[WalRecord]) -> int:
        self.stored.extend(records)
        self.seq = records[-1].seq
        return self.seq


class _Primary:
    def __init__(self, records: list[WalRecord]) -> None:
        self.records = records

    def read_records(self, shard_id: str, after_seq: int, limit: int) -> list[WalRecord]:
        return [r for r in self.records if r.seq > after_seq][:limit]

    def head(self, shard_id: str) -> Any:
        class _Head:
            seq = self.records[-1].seq if self.records else 0

        return _Head()


def _garbage(seq: int) -> bytes:
    return orjson.dumps(
        {
            "shard_id": SHARD,
            "epoch": 10**6,
            "seq": seq,
            "command_type": "Deposit",
            "command_key": None,
            "recorded_at_us": 1,
            "payload": "AAAAAA==",
            "checksum": "0" * 64,
        }
    )


def test_a_garbage_message_with_a_huge_seq_moves_no_bookkeeping() -> None:
    records = sealed_records(3)
    app = _App()
    replicator = Replicator(app, _Primary(records))  # type: ignore[arg-type]
    replicator.apply_wire([orjson.dumps(r.to_wire()) for r in records])
    assert app.seq == 3
    replicator.apply_wire([_garbage(10**12)])
    assert app.seq == 3
    assert replicator.stats.last_seen_seq == 3
    assert replicator.lag_records() == 0
    assert replicator.stats.rejected == {"checksum": 1}


KEYS = ReplicationKeys("k2", {"k2": b"0123456789abcdef-k2", "k1": b"0123456789abcdef-k1"})
OTHER = ReplicationKeys("k2", {"k2": b"someone else's key!"})


def _signed_replicator(records: list[WalRecord]) -> tuple[Replicator, _App, list[Any]]:
    app, alerts = _App(), []
    replicator = Replicator(
        app,  # type: ignore[arg-type]
        _Primary(records),  # type: ignore[arg-type]
        alert=lambda name, message, labels: alerts.append((name, labels)),
    )
    replicator.keys = KEYS
    return replicator, app, alerts


def _wire(records: list[WalRecord]) -> list[bytes]:
    return [orjson.dumps(r.to_wire()) for r in records]


def test_a_forged_record_at_head_plus_one_is_refused_and_the_real_one_stored() -> None:
    real = sealed_records(4, keys=KEYS)
    replicator, app, alerts = _signed_replicator(real)
    replicator.apply_wire(_wire(real[:3]))
    forged = sealed_records(1, first=4, prev=real[2].checksum, keys=OTHER)
    assert replicator.apply_wire(_wire(forged)) == 4
    assert app.stored[3] == real[3]  # read from the leader's store, not the forgery
    assert replicator.stats.rejected == {"bad_mac": 1}
    assert alerts[0][0] == "ReplicationRejected" and alerts[0][1]["seq"] == 4


def test_unsigned_and_unknown_key_records_are_refused() -> None:
    real = sealed_records(2, keys=KEYS)
    replicator, app, _ = _signed_replicator(real[:1])
    unsigned = sealed_records(1)
    assert replicator.apply_wire(_wire(unsigned)) == 1  # healed from the store
    assert app.stored == real[:1]
    rotated_out = ReplicationKeys("k0", {"k0": b"0123456789abcdef-k0"})
    replicator.apply_wire(_wire(sealed_records(2, keys=rotated_out)[1:]))
    assert replicator.stats.rejected == {"no_mac": 1, "unknown_key": 1}
    assert replicator.stats.last_seen_seq == 1 and replicator.lag_records() == 0


def test_an_older_accepted_key_still_verifies() -> None:
    old = ReplicationKeys("k1", {"k1": b"0123456789abcdef-k1"})
    records = sealed_records(3, keys=old)
    replicator, _app, _ = _signed_replicator([])
    assert replicator.apply_wire(_wire(records)) == 3
    assert replicator.stats.rejected == {}


def test_a_record_with_a_right_mac_and_a_wrong_chain_is_refused() -> None:
    real = sealed_records(4, keys=KEYS)
    replicator, app, _ = _signed_replicator(real)
    replicator.apply_wire(_wire(real[:2]))
    # signed with the right key, but it names seq 1 as its predecessor (replayed/reordered)
    reordered = sealed_records(1, first=3, prev=real[0].checksum, keys=KEYS)
    assert replicator.apply_wire(_wire(reordered)) == 3  # the real seq 3, from the store
    assert [r.checksum for r in app.stored] == [r.checksum for r in real[:3]]
    assert replicator.stats.rejected == {"chain": 1}


def test_the_leaders_store_failing_verification_stops_replication() -> None:
    real = sealed_records(3, keys=KEYS)
    tampered = sealed_records(1, first=3, prev=real[1].checksum, keys=OTHER)
    replicator, app, alerts = _signed_replicator([*real[:2], *tampered])
    replicator.apply_wire(_wire(real[:2]))
    replicator.catch_up()
    assert app.seq == 2
    assert alerts[-1][1]["source"] == "store"


def test_a_confirmation_counts_only_for_the_leaders_own_record() -> None:
    records = sealed_records(5, keys=KEYS)
    check = ConfirmationCheck(SHARD, KEYS)
    check.committed(records)

    def verdict(ack: dict[str, Any], head: int = 5) -> int | str | None:
        try:
            return check.verify(ack, head_seq=head, epoch=1)
        except RejectedError as exc:
            return exc.reason.value

    good = KEYS.confirmation(SHARD, "standby", 1, 4, records[3].checksum)
    assert verdict(good) == 4
    assert verdict(KEYS.confirmation(SHARD, "nobody", 10**6, 10**12, "0" * 64)) == "ahead"
    assert verdict(KEYS.confirmation(SHARD, "standby", 1, 4, records[2].checksum)) == "mismatch"
    assert verdict({**good, "seq": 5}) == "bad_mac"
    assert verdict({**good, "mac": None}) == "no_mac"
    forged = {"shard": SHARD, "region": "nobody", "seq": 10**12, "epoch": 10**6}
    assert verdict(forged) == "malformed"
    assert verdict(OTHER.confirmation(SHARD, "standby", 1, 4, records[3].checksum)) == "bad_mac"
    assert verdict(KEYS.confirmation(SHARD, "standby", 0, 4, records[3].checksum)) is None
    assert check.rejected == {"ahead": 1, "mismatch": 1, "bad_mac": 2, "no_mac": 1, "malformed": 1}


def test_replay_finds_a_record_moved_out_of_its_chain() -> None:
    records = sealed_records(4, keys=KEYS)
    rows = [_row(r) for r in records]
    replay_rows(SHARD, [rows], _NullDecoder(), lambda e: None, expected=1)  # type: ignore[arg-type]
    forged = sealed_records(1, first=3, prev=records[0].checksum, keys=KEYS)[0]
    with pytest.raises(WALCorruptionError) as caught:
        replay_rows(
            SHARD,
            [[*rows[:2], _row(forged), rows[3]]],
            _NullDecoder(),  # type: ignore[arg-type]
            lambda e: None,
            expected=1,
        )
    assert caught.value.seq == 3
    legacy = ChainCursor(SHARD, legacy_upto=2)
    legacy.advance(1, None, "a" * 64)
    legacy.advance(2, None, "b" * 64)
    with pytest.raises(WALCorruptionError):
        legacy.advance(3, None, "c" * 64)  # unchained after the chain start


class _NullDecoder:
    def decode(self, *args: Any) -> None:
        return None


def _row(r: WalRecord) -> Any:
    return (
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


def test_the_confirmation_check_keeps_a_window_and_asks_the_store_beyond_it() -> None:
    records = sealed_records(10, keys=KEYS)
    asked: list[int] = []

    def lookup(seq: int) -> str | None:
        asked.append(seq)
        return records[seq - 1].checksum

    check = ConfirmationCheck(SHARD, KEYS, lookup=lookup, window=4)
    check.committed(records)
    assert (
        check.verify(KEYS.confirmation(SHARD, "s", 1, 9, records[8].checksum), head_seq=10, epoch=1)
        == 9
    )
    assert (
        check.verify(KEYS.confirmation(SHARD, "s", 1, 2, records[1].checksum), head_seq=10, epoch=1)
        == 2
    )
    assert asked == [2]
