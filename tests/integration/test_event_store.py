"""The shard application on real PostgreSQL: atomic commands, dense WAL, fencing, idempotency."""

from __future__ import annotations

import dataclasses
import threading
from decimal import Decimal

import psycopg
import pytest

from application.shard.app import CommandFailedError, Outcome, ShardApp
from application.wal.records import WalRecord
from domain.commands import CancelOrder, Deposit, PlaceOrder
from domain.errors import DomainError, InsufficientMargin
from domain.values import OrderType, Side
from infra.bench.flow import generate_commands
from infra.bench.writer_load import drive
from infra.bootstrap import drop_database, make_shard_app, make_writer, migrate
from infra.settings import Settings
from tests.integration.conftest import scratch_dsn

pytestmark = pytest.mark.integration

SHARD = "shard-1"


def new_app(settings: Settings, dsn: str, **kwargs: object) -> ShardApp:
    app = make_shard_app(settings, SHARD, dsn=dsn, **kwargs)  # type: ignore[arg-type]
    app.recover()
    return app


def one(app: ShardApp, command: object) -> Outcome:
    [result] = app.execute_batch([command])  # type: ignore[list-item]
    if isinstance(result, Exception):
        raise result
    return result


def wal_rows(dsn: str) -> list[tuple[int, int, bytes]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT seq, epoch, payload FROM wal_records WHERE shard_id = %s ORDER BY seq",
            (SHARD,),
        ).fetchall()


def test_each_command_is_one_record_with_all_its_events(settings: Settings, dsn: str) -> None:
    app = new_app(settings, dsn)
    one(app, Deposit("alice", Decimal("100000")))
    one(app, Deposit("bob", Decimal("100000")))
    one(app, PlaceOrder("alice", "a1", "BTCUSDT", Side.SELL, OrderType.LIMIT, 5, 500_000))
    taker = one(app, PlaceOrder("bob", "b1", "BTCUSDT", Side.BUY, OrderType.LIMIT, 3, 500_000))
    assert taker.seq == 4 and taker.result is not None and len(taker.result.trades) == 1
    rows = wal_rows(dsn)
    assert [r[0] for r in rows] == [1, 2, 3, 4]
    with psycopg.connect(dsn) as conn:
        (stored,) = conn.execute("SELECT count(*) FROM exchange_events").fetchone()  # type: ignore[misc]
    in_records = sum(len(app.store.read_records(SHARD, r[0] - 1, 1)[0].events) for r in rows)
    assert stored == in_records
    app.close()


def test_domain_errors_write_nothing(settings: Settings, dsn: str) -> None:
    app = new_app(settings, dsn)
    one(app, Deposit("alice", Decimal("10")))
    before = app.engine.state_hash()
    with pytest.raises(InsufficientMargin):
        one(app, PlaceOrder("alice", "big", "BTCUSDT", Side.BUY, OrderType.LIMIT, 1000, 500_000))
    assert app.engine.state_hash() == before
    assert [r[0] for r in wal_rows(dsn)] == [1]
    app.close()


def test_retry_with_same_client_order_id_returns_first_outcome(
    settings: Settings, dsn: str
) -> None:
    app = new_app(settings, dsn)
    one(app, Deposit("alice", Decimal("100000")))
    place = PlaceOrder("alice", "same", "BTCUSDT", Side.BUY, OrderType.LIMIT, 2, 499_000)
    first = one(app, place)
    again = one(app, place)
    assert again.duplicate and again.seq == first.seq
    assert again.order is not None and first.order is not None
    assert again.order.id == first.order.id
    # within one batch, and after a restart (keys come from the store then)
    results = app.execute_batch([place, place])
    assert all(isinstance(r, Outcome) and r.duplicate for r in results)
    app.close()
    restarted = new_app(settings, dsn)
    after = one(restarted, place)
    assert after.duplicate and after.seq == first.seq
    assert [r[0] for r in wal_rows(dsn)] == [1, 2]
    restarted.close()


def test_a_deposit_with_an_id_is_credited_once(settings: Settings, dsn: str) -> None:
    app = new_app(settings, dsn)
    deposit = Deposit("alice", Decimal("250"), deposit_id="tx-1")
    first = one(app, deposit)
    again = one(app, deposit)
    assert again.duplicate and not again.differs and again.seq == first.seq
    assert again.result is not None and again.result.account is not None
    assert again.result.account.balance == Decimal("250")
    # the same id with another amount is not the same deposit: refused, nothing credited
    other = one(app, Deposit("alice", Decimal("251"), deposit_id="tx-1"))
    assert other.duplicate and other.differs
    # twice within one batch: the second is the first's retry
    results = app.execute_batch([Deposit("alice", Decimal("5"), deposit_id="tx-2")] * 2)
    assert [isinstance(r, Outcome) and r.duplicate for r in results] == [False, True]
    assert not any(isinstance(r, Outcome) and r.differs for r in results)
    # without an id every deposit counts, as before
    one(app, Deposit("alice", Decimal("1")))
    one(app, Deposit("alice", Decimal("1")))
    account = app.engine.account("alice")
    assert account is not None and account.balance == Decimal("257")
    app.close()
    # after a restart the key comes from the store, the amount from the stored record
    restarted = new_app(settings, dsn)
    after = one(restarted, deposit)
    assert after.duplicate and not after.differs and after.seq == first.seq
    assert one(restarted, Deposit("alice", Decimal("9"), deposit_id="tx-1")).differs
    assert [r[0] for r in wal_rows(dsn)] == [1, 2, 3, 4]
    restarted.close()


def test_second_writer_is_refused_by_the_database(settings: Settings, dsn: str) -> None:
    first = new_app(settings, dsn)
    second = new_app(settings, dsn)
    one(first, Deposit("alice", Decimal("1")))
    with pytest.raises(CommandFailedError, match=r"commit of seq 1\.\.1 failed"):
        one(second, Deposit("bob", Decimal("1")))
    assert [r[0] for r in wal_rows(dsn)] == [1]
    # the refused writer rebuilds from the store and can go on only at the true head
    assert second.needs_recovery
    first.close()
    second.close()


def test_an_older_epoch_is_refused(settings: Settings, dsn: str) -> None:
    newer = new_app(settings, dsn, epoch=2)
    one(newer, Deposit("alice", Decimal("1")))
    older = make_shard_app(settings, SHARD, dsn=dsn, epoch=1)
    older.recover()
    older.epoch = 1  # a deposed writer that kept its old epoch
    with pytest.raises(CommandFailedError):
        one(older, Deposit("bob", Decimal("1")))
    assert [(r[0], r[1]) for r in wal_rows(dsn)] == [(1, 2)]
    newer.close()
    older.close()


def test_batched_writer_groups_commits_and_acks_after_commit(settings: Settings, dsn: str) -> None:
    app = new_app(settings, dsn)
    writer = make_writer(settings, app).start()
    flow = list(generate_commands(SHARD, app.instruments, 3000, seed=3, accounts=20))
    stats = drive(writer, flow, in_flight=200)
    writer.stop()
    assert stats.failures == 0
    assert stats.acked + stats.domain_errors == len(flow)
    assert writer.batches < len(flow) / 5, "commits should carry many commands each"
    rows = wal_rows(dsn)
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
    assert len(rows) == app.seq
    app.close()


def test_a_failed_transaction_fails_exactly_its_commands(settings: Settings, dsn: str) -> None:
    app = new_app(settings, dsn)
    one(app, Deposit("alice", Decimal("100000")))
    # another writer moves the head under this one: its next batch must fail whole
    intruder = new_app(settings, dsn)
    one(intruder, Deposit("mallory", Decimal("1")))
    batch = [
        PlaceOrder("alice", f"x{i}", "BTCUSDT", Side.BUY, OrderType.LIMIT, 1, 499_000)
        for i in range(5)
    ]
    results = app.execute_batch(batch)
    assert all(isinstance(r, CommandFailedError) for r in results)
    intruder.close()
    # after rebuilding from the store the same commands go through, once
    results = app.execute_batch(batch)
    assert all(isinstance(r, Outcome) and not r.duplicate for r in results)
    assert app.engine.account("mallory") is not None
    assert [r[0] for r in wal_rows(dsn)] == [1, 2, 3, 4, 5, 6, 7]
    app.close()


def test_checkpoint_recovery_and_replay_from_scratch_agree(settings: Settings, dsn: str) -> None:
    settings = dataclasses.replace(settings, checkpoint_every=400)
    app = new_app(settings, dsn)
    writer = make_writer(settings, app).start()
    drive(writer, generate_commands(SHARD, app.instruments, 2500, seed=11), in_flight=64)
    writer.stop()
    live = app.engine.state_hash()
    checkpoints = app.store.checkpoint_seqs(SHARD)
    assert len(checkpoints) >= 3
    recovered = make_shard_app(settings, SHARD, dsn=dsn)
    report = recovered.recover()
    assert report.from_checkpoint_seq == checkpoints[-1]
    assert report.state_hash == live
    for symbol in ("BTCUSDT", "ETHUSDT"):
        assert recovered.engine.depth(symbol, 50) == app.engine.depth(symbol, 50)
    scratch = make_shard_app(settings, SHARD, dsn=dsn)
    full = scratch.recover(from_scratch=True)
    assert full.from_checkpoint_seq == 0 and full.state_hash == live
    assert full.checkpoint_hash_matches is True
    scratch.engine.validate_internal_state()
    for a in (app, recovered, scratch):
        a.close()


def test_cancel_and_queries_survive_restart(settings: Settings, dsn: str) -> None:
    app = new_app(settings, dsn)
    one(app, Deposit("alice", Decimal("100000")))
    placed = one(app, PlaceOrder("alice", "o1", "ETHUSDT", Side.BUY, OrderType.LIMIT, 3, 299_000))
    assert placed.order is not None
    one(app, CancelOrder("alice", placed.order.id))
    app.close()
    restarted = new_app(settings, dsn)
    order = restarted.get_order(placed.order.id)
    assert str(order.status) == "CANCELLED"
    with pytest.raises(DomainError):
        one(restarted, CancelOrder("alice", placed.order.id))
    restarted.close()


def test_concurrent_retries_of_one_order_place_it_once(settings: Settings, dsn: str) -> None:
    app = new_app(settings, dsn)
    writer = make_writer(settings, app).start()
    writer.execute(Deposit("alice", Decimal("100000")))
    place = PlaceOrder("alice", "dup", "BTCUSDT", Side.BUY, OrderType.LIMIT, 1, 490_000)
    seqs: list[int] = []
    lock = threading.Lock()

    def client() -> None:
        outcome = writer.execute(place)
        with lock:
            seqs.append(outcome.seq)

    threads = [threading.Thread(target=client) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.stop()
    assert len(set(seqs)) == 1 and len(seqs) == 50
    assert [r[0] for r in wal_rows(dsn)] == [1, 2]
    app.close()


def test_records_verify_after_a_round_trip(settings: Settings, dsn: str) -> None:
    app = new_app(settings, dsn)
    one(app, Deposit("alice", Decimal("5")))
    [record] = app.store.read_records(SHARD, 0, 10)
    assert WalRecord.from_wire(record.to_wire()) == record
    app.close()


def test_after_a_restart_new_keys_skip_the_store_and_old_ones_are_found(
    settings: Settings, dsn: str
) -> None:
    import time

    first = make_writer(settings, new_app(settings, dsn)).start()
    first.execute(Deposit("carol", Decimal("100000")))
    placed = [
        first.execute(
            PlaceOrder("carol", f"k{n}", "BTCUSDT", Side.BUY, OrderType.LIMIT, 1, 400_000)
        )
        for n in range(20)
    ]
    first.stop()

    app = new_app(settings, dsn)
    writer = make_writer(settings, app).start()
    try:
        deadline = time.monotonic() + 10
        while not app.keys.filter_loaded:  # loaded behind the recovery
            assert time.monotonic() < deadline, "key filter never loaded"
            time.sleep(0.01)
        lookups: list[list[str]] = []
        original = app.store.find_command_keys

        def counting(shard_id: str, keys: object) -> object:
            lookups.append(list(keys))  # type: ignore[call-overload]
            return original(shard_id, lookups[-1])

        app.store.find_command_keys = counting  # type: ignore[method-assign]
        fresh = writer.execute(
            PlaceOrder("carol", "new-1", "BTCUSDT", Side.BUY, OrderType.LIMIT, 1, 400_000)
        )
        assert not fresh.duplicate and lookups == []  # certainly new: no round trip
        retry = writer.execute(
            PlaceOrder("carol", "k7", "BTCUSDT", Side.BUY, OrderType.LIMIT, 1, 400_000)
        )
        assert retry.duplicate and retry.seq == placed[7].seq  # found in the store
        assert len(lookups) == 1
    finally:
        writer.stop()


def test_a_standby_checkpoints_at_the_leaders_intervals(settings: Settings, dsn: str) -> None:
    settings = dataclasses.replace(settings, checkpoint_every=300)
    leader = new_app(settings, dsn)
    writer = make_writer(settings, leader).start()
    drive(writer, generate_commands(SHARD, leader.instruments, 1000, seed=5), in_flight=32)
    writer.stop()
    records = list(leader.store.iter_records(SHARD, 0))
    other = scratch_dsn("standby")
    migrate(other)
    try:
        standby = new_app(settings, other)
        for start in range(0, len(records), 37):  # replicated in runs, as the broker delivers
            standby.append_replicated(records[start : start + 37])
        seqs = standby.store.checkpoint_seqs(SHARD)
        assert len(seqs) == len(records) // 300
        assert all(seq // 300 > (seq - 37) // 300 for seq in seqs)  # one per interval crossed
        restarted = make_shard_app(settings, SHARD, dsn=other)
        report = restarted.recover()
        assert report.from_checkpoint_seq == seqs[-1]
        assert report.state_hash == leader.engine.state_hash()
        for a in (standby, restarted):
            a.close()
    finally:
        drop_database(other)
        leader.close()


def test_checkpoints_taken_by_a_forked_child_recover_the_same_state(
    settings: Settings, dsn: str
) -> None:
    from infra.checkpoints.checkpointer import ForkedCheckpointer

    settings = dataclasses.replace(settings, checkpoint_every=300, checkpoint_fork=True)
    leader = new_app(settings, dsn)
    writer = make_writer(settings, leader).start()
    forked = leader.background_checkpoint
    assert isinstance(forked, ForkedCheckpointer)
    drive(writer, generate_commands(SHARD, leader.instruments, 1500, seed=8), in_flight=32)
    writer.stop()  # waits for the checkpoint children
    assert not forked.children and forked.failed == 0
    seqs = leader.store.checkpoint_seqs(SHARD)
    assert forked.taken == len(seqs) == leader.seq // 300
    restarted = make_shard_app(settings, SHARD, dsn=dsn)
    report = restarted.recover()
    assert report.from_checkpoint_seq == seqs[-1]
    assert report.state_hash == leader.engine.state_hash()
    for a in (leader, restarted):
        a.close()


def _stored_rows(dsn: str) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    with psycopg.connect(dsn) as conn:
        records = conn.execute(
            "SELECT shard_id, seq, epoch, command_type, command_key, payload, checksum "
            "FROM wal_records ORDER BY seq"
        ).fetchall()
        events = conn.execute(
            "SELECT originator_id, originator_version, topic, state FROM exchange_events "
            "ORDER BY originator_id, originator_version"
        ).fetchall()
    return records, events


def test_both_append_paths_store_the_same_rows(
    settings: Settings, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch goes as one statement of arrays or, beyond a size, by COPY: the same batches
    appended each way leave the same rows."""
    import infra.wal.pg_wal as pg_wal

    app = new_app(settings, dsn)  # one statement (the batches are far below the limit)
    flow = list(generate_commands(SHARD, app.instruments, 400, seed=5, accounts=10))
    target = scratch_dsn("copy")
    migrate(target)
    try:
        other = new_app(settings, target)
        batches = []
        for start in range(0, len(flow), 50):
            batch = app.prepare(flow[start : start + 50])
            app.commit(batch)
            assert batch.committed
            batches.append(batch)
        monkeypatch.setattr(pg_wal, "ONE_STATEMENT_MAX_ROWS", 0)  # every batch by COPY
        for batch in batches:
            other.store.append(
                batch.stored, batch.records, epoch=app.epoch, prev_seq=batch.first_seq - 1
            )
        app.close()
        other.close()
        by_statement, by_copy = _stored_rows(dsn), _stored_rows(target)
    finally:
        drop_database(target)
    assert by_statement == by_copy
    assert len(by_copy[0]) > 300 and len(by_copy[1]) > len(by_copy[0])
