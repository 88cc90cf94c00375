"""The standby's bookkeeping: what it knows exists, how far behind it is (in records and in the
age of what it lacks: the failover's lag gate reads it), and what the safety-net catch-up pulls.
Pure: an in-memory shard and leader's store."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from application.wal.records import GENESIS, WalRecord
from projections.replication.replicator import ReplicationStats, Replicator
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
        assert records[0].seq == self.seq + 1
        self.stored.extend(records)
        self.seq = records[-1].seq
        return self.seq


class _Primary:
    """The leader's store; `hidden` seqs exist (the head counts them) but cannot be read yet."""

    def __init__(self, records: list[WalRecord], hidden: int = 0) -> None:
        self.records = records
        self.hidden = hidden
        self.reads: list[tuple[int, int]] = []
        self.heads = 0

    def read_records(self, shard_id: str, after_seq: int, limit: int) -> list[WalRecord]:
        assert shard_id == SHARD
        self.reads.append((after_seq, limit))
        return [r for r in self.records if r.seq > after_seq][:limit]

    def head(self, shard_id: str) -> Any:
        assert shard_id == SHARD
        self.heads += 1
        seq = (self.records[-1].seq if self.records else 0) + self.hidden

        class _Head:
            pass

        found = _Head()
        found.seq = seq  # type: ignore[attr-defined]
        return found


class _Clock:
    def __init__(self, now_us: int) -> None:
        self.now_us = now_us

    def __call__(self) -> int:
        return self.now_us


def _replicator(
    primary_records: list[WalRecord] | None = None, *, now_us: int = 0, hidden: int = 0
) -> tuple[Replicator, _App, _Primary, _Clock]:
    app, primary, clock = _App(), _Primary(primary_records or [], hidden), _Clock(now_us)
    replicator = Replicator(app, primary, clock_us=clock)  # type: ignore[arg-type]
    return replicator, app, primary, clock


def test_a_new_standby_knows_of_nothing_and_lags_by_nothing() -> None:
    replicator, _, _, _ = _replicator()
    assert replicator.stats == ReplicationStats(0, 0, 0, 0, 0, 0, 0, 0, {})
    assert replicator.lag_records() == 0 and replicator.lag_seconds() == 0.0
    assert replicator.behind_since_us is None and replicator.last_applied == []
    assert replicator.accept is None and replicator.keys is None and not replicator.frozen
    assert replicator.stall_after_seq is None


def test_a_delivered_record_is_applied_without_asking_the_leaders_store() -> None:
    """Nothing was refused: the delivered records alone say how far the shard goes."""
    records = sealed_records(3)
    replicator, app, primary, _ = _replicator(records)
    assert replicator.apply_wire([records[0].to_wire()]) == 1
    assert app.seq == 1 and primary.reads == [] and primary.heads == 0
    assert replicator.stats.gap_fills == 0 and replicator.stats.applied == 1
    assert replicator.last_applied == [records[0]]
    assert replicator.apply_wire([records[0].to_wire()]) == 1  # again: a duplicate
    assert replicator.stats.duplicates == 1 and replicator.last_applied == []
    # a copy of an applied record is dropped unread, even the last one, even altered
    replicator.apply_wire([{**records[0].to_wire(), "recorded_at_us": 5}])
    assert replicator.stats.duplicates == 2 and replicator.stats.rejected == {}


def test_lag_is_what_is_known_to_exist_beyond_the_applied_seq() -> None:
    records = sealed_records(5)  # recorded at 1_001 .. 1_005 us
    replicator, app, _, clock = _replicator(records, now_us=1_002)
    replicator.apply_wire([r.to_wire() for r in records[:2]])
    assert app.seq == 2 and replicator.lag_records() == 0 and replicator.lag_seconds() == 0.0
    replicator.frozen = True  # a promotion reads its seq: the rest is known, not applied
    replicator.apply_wire([r.to_wire() for r in records[2:]])
    assert app.seq == 2 and replicator.lag_records() == 3
    assert replicator.stats.last_seen_seq == 5
    assert replicator.stats.last_seen_recorded_at_us == 1_005
    # as old as the newest record it lacks, by that record's own time
    clock.now_us = 1_005 + 3_000_000
    assert replicator.lag_seconds() == 3.0
    clock.now_us = 1_005 + 500_000
    assert replicator.lag_seconds() == 0.5
    clock.now_us = 1_000  # a clock behind the leader's: never a negative lag
    assert replicator.lag_seconds() == 0.0
    replicator.frozen = False
    replicator.apply_wire([])
    assert app.seq == 5 and replicator.lag_records() == 0 and replicator.lag_seconds() == 0.0
    assert replicator.behind_since_us is None
    assert replicator.stats.gap_fills == 3  # 3..5 read from the store, nothing twice


def test_without_a_timestamp_the_lag_counts_from_when_the_records_were_found_missing() -> None:
    """The leader's head says seqs exist that its store cannot hand out yet: no record, no
    timestamp; the lag is the time since the standby knows it lacks them."""
    records = sealed_records(5)
    replicator, app, primary, clock = _replicator(records[:2], now_us=10_000_000, hidden=3)
    replicator.catch_up()
    assert app.seq == 2 and replicator.lag_records() == 3
    assert replicator.stats.last_seen_recorded_at_us == 0
    assert replicator.lag_seconds() == 0.0
    assert replicator.behind_since_us == 10_000_000
    clock.now_us = 12_000_000
    assert replicator.lag_seconds() == 2.0
    assert replicator.behind_since_us == 10_000_000  # not reset while still behind
    primary.records, primary.hidden = records, 0
    assert replicator.catch_up() == 5
    assert replicator.lag_records() == 0 and replicator.behind_since_us is None


def test_the_default_clock_is_the_wall_clock_in_microseconds() -> None:
    records = sealed_records(2)
    replicator = Replicator(_App(), _Primary([]))  # type: ignore[arg-type]
    recorded = time.time_ns() // 1000 - 2_000_000  # two seconds ago
    record = WalRecord.seal(
        shard_id=SHARD,
        epoch=1,
        seq=2,
        command_type="Deposit",
        command_key=None,
        recorded_at_us=recorded,
        events=records[1].events,
        prev_checksum=records[0].checksum,
    )
    replicator.frozen = True
    replicator.apply_wire([record.to_wire()])
    assert 1.9 <= replicator.lag_seconds() < 60


def test_catch_up_pulls_everything_the_leaders_store_holds_by_default() -> None:
    records = sealed_records(4)
    replicator, app, _, _ = _replicator(records)
    assert replicator.catch_up() == 4
    assert app.stored == records and replicator.stats.gap_fills == 4


def test_the_periodic_catch_up_pulls_only_what_stayed_overdue_a_whole_interval() -> None:
    """What the leader committed since the previous call is most likely on the broker now."""
    records = sealed_records(5)
    replicator, app, primary, _ = _replicator(records[:3])
    assert replicator.catch_up(everything=False) == 0  # nothing was overdue yet
    assert app.seq == 0 and primary.reads == []
    primary.records = records  # two more committed meanwhile
    assert replicator.catch_up(everything=False) == 3  # the head seen an interval ago
    assert replicator.catch_up(everything=False) == 5


def test_a_backlog_found_by_catch_up_is_as_old_as_its_newest_record() -> None:
    """The failover's lag gate: a backlog noticed only now is not 0 s old."""
    records = sealed_records(5)  # recorded at 1_001 .. 1_005 us
    replicator, _, primary, _ = _replicator(records, now_us=1_005 + 4_000_000)
    replicator.apply_wire([r.to_wire() for r in records[:2]])
    replicator.frozen = True
    assert replicator.catch_up() == 2
    assert primary.reads == [(4, 1)]  # the newest record only, for its timestamp
    assert replicator.lag_records() == 3
    assert replicator.stats.last_seen_recorded_at_us == 1_005
    assert replicator.lag_seconds() == 4.0


def test_unseen_drops_copies_of_applied_records_and_keeps_everything_else() -> None:
    """The second path's copies of what is applied are counted and dropped unverified; what
    does not parse is kept for apply_wire to report, and the messages after it still count."""
    records = sealed_records(4)
    replicator, app, _, _ = _replicator(records)
    replicator.apply_wire([r.to_wire() for r in records[:2]])
    assert app.seq == 2
    run = {"records": [records[0].to_wire(), records[1].to_wire()]}
    kept = replicator.unseen(
        [b"not json", records[0].to_wire(), run, records[2].to_wire(), b"{also not"]
    )
    assert kept == [b"not json", records[2].to_wire(), b"{also not"]
    assert replicator.stats.duplicates == 3  # one single record, a run of two
    replicator.unseen([run])
    assert replicator.stats.duplicates == 5
    mixed = {"records": [records[1].to_wire(), records[2].to_wire()]}
    assert replicator.unseen([mixed]) == [mixed]  # one new record: the whole run is kept


def _alerting(
    records: list[WalRecord],
) -> tuple[Replicator, _App, list[tuple[str, str, dict[str, Any]]]]:
    app, alerts = _App(), []
    replicator = Replicator(
        app,  # type: ignore[arg-type]
        _Primary(records),  # type: ignore[arg-type]
        alert=lambda name, message, labels: alerts.append((name, message, dict(labels))),
    )
    return replicator, app, alerts


def test_a_message_that_is_not_json_is_reported_and_the_rest_of_the_batch_applied() -> None:
    records = sealed_records(2)
    replicator, _, alerts = _alerting(records)
    assert replicator.apply_wire([b"{not json", records[0].to_wire(), records[1].to_wire()]) == 2
    assert replicator.stats.rejected == {"malformed": 1} and replicator.stats.corrupt == 1
    assert replicator.stats.gap_fills == 0  # both applied as delivered, none read again
    assert [(name, labels) for name, _, labels in alerts] == [
        ("WALRecordCorrupt", {"shard": SHARD, "seq": "?"})
    ]


def test_a_record_failing_its_checksum_and_one_missing_a_field_are_told_apart() -> None:
    records = sealed_records(3)
    replicator, app, alerts = _alerting(records)
    altered = {**records[0].to_wire(), "recorded_at_us": 5}
    no_payload = records[1].to_wire()
    del no_payload["payload"]
    assert replicator.apply_wire([altered, no_payload, "a string", records[2].to_wire()]) == 3
    assert app.stored == records  # healed from the leader's store
    assert replicator.stats.rejected == {"checksum": 1, "malformed": 2}
    assert replicator.stats.corrupt == 3  # seq 1, seq 2, and one that names no seq
    assert [labels["seq"] for _, _, labels in alerts] == [1, 2, "?"]
    assert {name for name, _, _ in alerts} == {"WALRecordCorrupt"}
    assert replicator.stats.healed == 2


def test_another_copy_refused_for_the_same_reason_is_counted_not_alerted_again() -> None:
    records = sealed_records(3)
    replicator, app, alerts = _alerting(records[:2])
    altered = {**records[2].to_wire(), "recorded_at_us": 5}
    replicator.apply_wire([altered])
    replicator.apply_wire([altered])
    assert replicator.stats.rejected == {"checksum": 2} and replicator.stats.corrupt == 1
    assert len(alerts) == 1 and app.seq == 2


def test_the_refused_seqs_kept_for_reporting_are_bounded() -> None:
    """A flood of garbage naming ever new seqs must not grow the standby's memory."""
    from projections.replication.replicator import _SUSPECTS_MAX

    replicator, app, _ = _alerting([])
    garbage = {**sealed_records(1)[0].to_wire(), "recorded_at_us": 5}
    replicator.apply_wire([{**garbage, "seq": seq} for seq in range(1, _SUSPECTS_MAX + 50)])
    assert app.seq == 0 and replicator.stats.corrupt == _SUSPECTS_MAX + 49
    assert len(replicator._suspects) == _SUSPECTS_MAX


def test_a_refused_record_names_shard_and_seq_and_one_claiming_seq_0_heals_nothing() -> None:
    records = sealed_records(1)
    replicator, app, alerts = _alerting(records)
    replicator.apply_wire([{**records[0].to_wire(), "seq": 0}])
    name, message, labels = alerts[0]
    assert name == "WALRecordCorrupt" and labels == {"shard": SHARD, "seq": 0}
    assert message == (
        f"corrupt WAL record in transit: shard {SHARD} seq 0; not applied, healing from the "
        "primary's store"
    )
    assert replicator.stats.healed == 0 and app.stored == records  # the real one, read


def test_a_copy_naming_its_seq_as_text_is_still_a_duplicate() -> None:
    """The cheap pre-filter only knows integer seqs; a verified copy of an applied record
    that names its seq otherwise is dropped before the writer all the same."""
    records = sealed_records(2)
    replicator, app, _, _ = _replicator(records)
    replicator.apply_wire([r.to_wire() for r in records])
    assert replicator.apply_wire([{**records[0].to_wire(), "seq": "1"}]) == 2
    assert app.stored == records and replicator.stats.duplicates == 1
    replicator.apply_wire([{**r.to_wire(), "seq": str(r.seq)} for r in records])
    assert app.stored == records and replicator.stats.duplicates == 3


def test_after_a_refusal_the_leaders_head_is_asked_once_not_on_every_delivery() -> None:
    records = sealed_records(4)
    replicator, app, primary, _ = _replicator(records)
    replicator.apply_wire([r.to_wire() for r in records[:1]])
    replicator.apply_wire([{**records[1].to_wire(), "recorded_at_us": 5}])  # altered
    assert primary.heads == 1 and app.seq == 4  # the leader's store says how far it goes
    replicator.apply_wire([])
    assert primary.heads == 1


def test_a_gap_is_filled_from_the_store_and_only_the_missing_records_count_as_fills() -> None:
    records = sealed_records(4)
    replicator, app, primary, _ = _replicator(records)
    replicator.apply_wire([records[0].to_wire()])
    assert replicator.apply_wire([records[2].to_wire(), records[3].to_wire()]) == 4
    assert app.stored == records and primary.reads == [(1, 2000)]
    assert replicator.stats.gap_fills == 1  # seq 2; 3 and 4 were delivered


def test_a_hole_in_the_leaders_store_stops_the_apply_before_it() -> None:
    """The store hands out seq 3 but not seq 2 (not visible yet): nothing beyond 1 is applied
    now, and the next delivery tries again."""
    records = sealed_records(3)
    replicator, app, primary, _ = _replicator([records[0], records[2]])
    replicator.apply_wire([records[0].to_wire()])
    assert replicator.apply_wire([records[2].to_wire()]) == 1
    assert app.stored == records[:1] and replicator.lag_records() == 2
    primary.records = records
    assert replicator.apply_wire([]) == 3 and app.stored == records


def test_a_delivered_record_that_breaks_the_chain_is_refused_naming_the_broker() -> None:
    records = sealed_records(3)
    replicator, app, alerts = _alerting(records)
    replicator.apply_wire([records[0].to_wire()])
    stray = sealed_records(1, first=2, prev="ab" * 32)[0]  # a good checksum, a wrong link
    assert replicator.apply_wire([stray.to_wire()]) == 2  # the real seq 2, from the store
    assert app.stored == records[:2] and replicator.stats.rejected == {"chain": 1}
    assert replicator.lag_records() == 1  # the leader's head says seq 3 exists
    name, _, labels = alerts[0]
    assert name == "ReplicationRejected"
    assert labels == {"shard": SHARD, "seq": 2, "reason": "chain", "source": "broker"}


def test_a_stalled_standby_applies_nothing_beyond_its_stall_seq() -> None:
    records = sealed_records(4)
    replicator, app, _, _ = _replicator(records)
    replicator.stall_after_seq = 2
    assert replicator.apply_wire([r.to_wire() for r in records]) == 2
    assert app.stored == records[:2] and replicator.stats.applied == 2
    replicator.stall_after_seq = None
    assert replicator.apply_wire([]) == 4 and replicator.stats.applied == 4


def test_a_refused_copy_of_the_last_record_is_healed_by_the_stores_copy() -> None:
    records = sealed_records(2)
    replicator, app, _, _ = _replicator(records)
    replicator.apply_wire([records[0].to_wire()])
    replicator.apply_wire([{**records[1].to_wire(), "recorded_at_us": 5}])
    assert app.stored == records and replicator.stats.healed == 1


def _legacy(count: int) -> list[WalRecord]:
    """Records written before records were chained: no predecessor named, no MAC."""
    template = sealed_records(count)
    return [
        WalRecord.seal(
            shard_id=SHARD,
            epoch=1,
            seq=r.seq,
            command_type=r.command_type,
            command_key=None,
            recorded_at_us=r.recorded_at_us,
            events=r.events,
            prev_checksum=None,  # type: ignore[arg-type]
        )
        for r in template
    ]


class _LegacyPrimary(_Primary):
    def __init__(self, records: list[WalRecord], chain_start: int) -> None:
        super().__init__(records)
        self.legacy_upto = chain_start

    def chain_start(self, shard_id: str) -> int:
        return self.legacy_upto


class _ChainStore:
    def __init__(self) -> None:
        self.extended: list[int] = []

    def extend_chain_start(self, shard_id: str, seq: int) -> None:
        self.extended.append(seq)


def test_unchained_records_are_taken_only_from_the_leaders_store_where_it_says_they_stand() -> None:
    from application.wal.auth import ReplicationKeys

    legacy = _legacy(2)
    app = _App()
    app.store = _ChainStore()  # type: ignore[attr-defined]
    replicator = Replicator(app, _LegacyPrimary(legacy, 2))  # type: ignore[arg-type]
    replicator.keys = ReplicationKeys("k1", {"k1": b"0123456789abcdef-k1"})
    # delivered, an unsigned, unchained record is refused even with a right checksum
    replicator.apply_wire([legacy[0].to_wire()])
    assert replicator.stats.rejected == {"no_mac": 1}
    # read from the leader's store, within its unchained part, it is taken
    assert app.seq == 2 and app.stored == legacy
    assert app.store.extended == [2]  # type: ignore[attr-defined]


def test_unchained_records_beyond_where_the_store_says_they_stand_are_refused() -> None:
    legacy = _legacy(2)
    app = _App()
    app.store = _ChainStore()  # type: ignore[attr-defined]
    replicator = Replicator(app, _LegacyPrimary(legacy, 1))  # type: ignore[arg-type]
    assert replicator.catch_up() == 1
    assert app.stored == legacy[:1] and replicator.stats.rejected == {"chain": 1}


class _PickyApp(_App):
    """A shard that cannot decode the events of one seq (a type that is not ours)."""

    def __init__(self, refuse: int) -> None:
        super().__init__()
        self.refuse = refuse

    def append_replicated(self, records: Sequence[WalRecord]) -> int:
        from application.wal.records import WALCorruptionError

        for record in records:
            if record.seq == self.refuse:
                raise WALCorruptionError(SHARD, record.seq, "unknown event type")
            super().append_replicated([record])
        return self.seq


def test_a_record_the_shard_cannot_decode_is_refused_by_where_it_came_from() -> None:
    records = sealed_records(3)
    alerts: list[tuple[str, dict[str, Any]]] = []
    app = _PickyApp(refuse=2)
    replicator = Replicator(
        app,  # type: ignore[arg-type]
        _Primary(records),  # type: ignore[arg-type]
        alert=lambda name, message, labels: (
            alerts.append((name, dict(labels))),
            messages.append(message),
        ),
    )
    messages: list[str] = []
    replicator.apply_wire([r.to_wire() for r in records[:2]])
    assert app.seq == 1 and replicator.last_applied == records[:1]
    assert alerts[0] == (
        "ReplicationRejected",
        {"shard": SHARD, "seq": 2, "reason": "unknown_type", "source": "broker"},
    )
    replicator.catch_up()  # the leader's own copy fails the same way: nothing to heal from
    assert app.seq == 1
    assert alerts[-1] == (
        "ReplicationRejected",
        {"shard": SHARD, "seq": 2, "reason": "unknown_type", "source": "store"},
    )
    assert replicator.stats.rejected == {"unknown_type": 2}
    assert messages[-1] == (
        f"WAL record in the leader's store refused (unknown_type): shard {SHARD} seq 2; "
        "replication stops before it"
    )
    replicator.catch_up()
    assert replicator.stats.rejected == {"unknown_type": 3} and len(alerts) == 3


def test_a_chained_record_without_a_mac_in_the_leaders_store_is_refused_there() -> None:
    """Only the leader's unchained (pre-signing) records may lack a MAC: a chained record read
    from its store must be signed like one delivered, or anyone who can write the leader's
    table could feed the standby; refused as the store's own corruption, nothing applied past
    it."""
    from dataclasses import replace

    from application.wal.auth import ReplicationKeys

    keys = ReplicationKeys("k1", {"k1": b"0123456789abcdef-k1"})
    records = sealed_records(3, keys=keys)
    records[1] = replace(records[1], mac=None)  # same chain, same checksum: only unsigned
    replicator, app, _, _ = _replicator(records)
    replicator.keys = keys
    replicator.apply_wire([records[2].to_wire()])  # 1 and 2 are read from the store
    assert app.seq == 1 and app.stored == records[:1]
    assert replicator.stats.rejected == {"no_mac": 1}
