"""A deposed primary's records after the fork point are set aside for audit, never merged."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest

from domain.commands import Deposit
from infra.bootstrap import make_shard_app
from infra.settings import Settings

pytestmark = pytest.mark.integration

SHARD = "shard-1"


def test_records_after_the_fork_are_quarantined_and_state_rewinds(
    settings: Settings, dsn: str
) -> None:
    app = make_shard_app(settings, SHARD, dsn=dsn, epoch=2)
    app.recover()
    for i in range(10):
        [result] = app.execute_batch([Deposit(f"acct-{i % 3}", Decimal(i + 1))])
        assert not isinstance(result, Exception)
    at_fork = make_shard_app(settings, SHARD, dsn=dsn)
    at_fork.recover(upto_seq=6)
    expected_hash = at_fork.engine.state_hash()
    # epoch 3 took over from seq 7: our records 7..10 (epoch 2) are divergent
    history = [(2, 1), (3, 7)]
    assert app.store.first_divergent_seq(SHARD, history) == 7
    assert app.store.first_divergent_seq(SHARD, [(2, 1)]) is None
    moved = app.store.quarantine_from(SHARD, 7, "diverged at seq 7")
    assert moved == 4
    with psycopg.connect(dsn) as conn:
        kept = conn.execute("SELECT max(seq) FROM wal_records").fetchone()
        aside = conn.execute(
            "SELECT seq, epoch, reason FROM wal_quarantine ORDER BY seq"
        ).fetchall()
        head = conn.execute("SELECT seq, epoch FROM wal_heads").fetchone()
    assert kept == (6,)
    assert [row[0] for row in aside] == [7, 8, 9, 10]
    assert {row[1] for row in aside} == {2} and aside[0][2] == "diverged at seq 7"
    assert head == (6, 2)
    rewound = make_shard_app(settings, SHARD, dsn=dsn)
    assert rewound.recover().state_hash == expected_hash
    # the new epoch's records can now follow at seq 7
    rewound.epoch = 3
    [result] = rewound.execute_batch([Deposit("acct-0", Decimal("5"))])
    assert not isinstance(result, Exception) and result.seq == 7
    for a in (app, at_fork, rewound):
        a.close()


def test_a_forked_checkpoint_stored_after_the_quarantine_is_not_trusted(
    settings: Settings, dsn: str
) -> None:
    deposed = make_shard_app(settings, SHARD, dsn=dsn, epoch=2)
    deposed.recover()
    for i in range(8):
        [result] = deposed.execute_batch([Deposit(f"acct-{i % 3}", Decimal(i + 1))])
        assert not isinstance(result, Exception)
    # a checkpoint captured at seq 8 (epoch 2) whose store lands only after the quarantine,
    # as a forked checkpointer child may
    forked = deposed.capture_checkpoint()
    assert (forked.seq, forked.epoch) == (8, 2)
    assert deposed.store.quarantine_from(SHARD, 7, "diverged at seq 7") == 2
    deposed.store.save_checkpoint(forked)  # seq 8 is gone: not stored
    assert deposed.store.checkpoint_seqs(SHARD) == []
    # one that raced the quarantine's transaction and landed anyway
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO wal_checkpoints (shard_id, seq, epoch, state, state_hash, checksum) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (SHARD, forked.seq, forked.epoch, forked.state, forked.state_hash, forked.checksum),
        )
    assert deposed.store.checkpoint_seqs(SHARD) == [8]
    # epoch 3 owns seq 7 on: its records at 7..10 differ from the quarantined ones
    leader = make_shard_app(settings, SHARD, dsn=dsn)
    leader.recover()
    leader.epoch = 3
    for i in range(4):
        [result] = leader.execute_batch([Deposit(f"acct-{i % 3}", Decimal(100 + i))])
        assert not isinstance(result, Exception) and result.seq == 7 + i
    expected = make_shard_app(settings, SHARD, dsn=dsn).recover(from_scratch=True).state_hash
    # the local WAL says seq 8 is epoch 3's, not epoch 2's: the checkpoint is refused
    again = make_shard_app(settings, SHARD, dsn=dsn)
    report = again.recover()
    assert (report.from_checkpoint_seq, report.state_hash) == (0, expected)
    # and so does the epoch history
    history = [(2, 1), (3, 7)]
    restarted = make_shard_app(settings, SHARD, dsn=dsn)
    report = restarted.recover(epoch_history=history)
    assert (report.from_checkpoint_seq, report.state_hash) == (0, expected)
    # epoch 3 owns seq 8 now: the forked checkpoint is still not stored again
    deposed.store.save_checkpoint(forked)
    assert deposed.store.latest_checkpoint(SHARD) == forked  # the raced one, unchanged
    # a checkpoint the history contains is stored and used
    leader.checkpoint()
    trusted = make_shard_app(settings, SHARD, dsn=dsn).recover(epoch_history=history)
    assert trusted.from_checkpoint_seq == 10 and trusted.state_hash == expected
    # epoch 3's own checkpoint at seq 8 replaces the forked one
    at_8 = make_shard_app(settings, SHARD, dsn=dsn)
    at_8.recover(upto_seq=8)
    assert at_8.checkpoint().epoch == 3
    replaced = deposed.store.latest_checkpoint(SHARD, at_or_before=8)
    assert replaced is not None and (replaced.seq, replaced.epoch) == (8, 3)
    for a in (deposed, leader, restarted, again, at_8):
        a.close()


def test_keys_kept_for_records_not_yet_archived_leave_with_the_quarantined_records(
    settings: Settings, dsn: str
) -> None:
    """The archiver keeps a segment's idempotency keys with its manifest row, before the
    rows are deleted: a quarantine of those rows (still live) must not leave their keys
    behind, or a retry of a set-aside command would be taken for a duplicate."""
    from infra.wal.archiver import _KEEP_KEYS

    app = make_shard_app(settings, SHARD, dsn=dsn, epoch=2)
    app.recover()
    for i in range(10):
        [result] = app.execute_batch(
            [Deposit(f"acct-{i % 3}", Decimal(i + 1), deposit_id=f"dep-{i}")]
        )
        assert not isinstance(result, Exception)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(_KEEP_KEYS, (SHARD, 1, 10))  # kept, the rows not deleted yet
        # an archived record's key (its row gone from the live table) stays whatever happens
        conn.execute(
            "INSERT INTO wal_archived_keys (shard_id, command_key, seq) VALUES (%s, 'old', 0)",
            (SHARD,),
        )
    assert app.store.quarantine_from(SHARD, 7, "diverged at seq 7") == 4
    with psycopg.connect(dsn) as conn:
        kept = conn.execute("SELECT seq FROM wal_archived_keys ORDER BY seq").fetchall()
    assert [row[0] for row in kept] == [0, 1, 2, 3, 4, 5, 6]
    rewound = make_shard_app(settings, SHARD, dsn=dsn)
    rewound.recover()
    rewound.epoch = 3
    rewound.enable_key_filter()
    # the set-aside deposit is new to the rewound shard: credited, not a duplicate
    [again] = rewound.execute_batch([Deposit("acct-0", Decimal("7"), deposit_id="dep-6")])
    assert not isinstance(again, Exception) and not again.duplicate and again.seq == 7
    for a in (app, rewound):
        a.close()


def test_the_fork_is_found_exactly_at_each_epoch_boundary(settings: Settings, dsn: str) -> None:
    """Each epoch owns the seqs from its start to the next epoch's start: records that agree
    with the history across its boundaries are never taken for a fork, and one a seq off is."""
    app = make_shard_app(settings, SHARD, dsn=dsn, epoch=2)
    app.recover()
    for epoch, count in ((2, 4), (3, 3), (4, 123)):  # seqs 1-4, 5-7, 8-130
        app.epoch = epoch
        results = app.execute_batch([Deposit("acct-0", Decimal(1)) for _ in range(count)])
        assert not any(isinstance(result, Exception) for result in results)
    store = app.store
    assert store.first_divergent_seq(SHARD, [(2, 1), (3, 5), (4, 8)]) is None
    assert store.first_divergent_seq(SHARD, [(2, 1), (3, 6), (4, 8)]) == 5
    assert store.first_divergent_seq(SHARD, [(2, 1), (3, 4), (4, 8)]) == 4
    assert store.first_divergent_seq(SHARD, [(2, 1), (3, 5), (4, 9)]) == 8
    assert store.first_divergent_seq(SHARD, [(2, 1), (3, 5)]) == 8  # epoch 4 unknown
    assert store.first_divergent_seq(SHARD, [(2, 1), (3, 5), (4, 8), (5, 130)]) == 130
    store.save_relay_position(SHARD, 7)
    assert store.quarantine_from(SHARD, 6, "diverged at seq 6") == 125
    with psycopg.connect(dsn) as conn:
        head = conn.execute("SELECT seq, epoch FROM wal_heads").fetchone()
        relay = conn.execute("SELECT seq FROM relay_positions").fetchone()
    assert head == (5, 3)  # the epoch of the record it now ends with
    assert relay == (5,)
    app.close()
