"""WAL retention with an archive, on real PostgreSQL and real files: nothing lost, nothing twice,
replay from scratch through the archive equal to live, a damaged segment named, retries after
archiving answered with their first outcome, and a SIGKILL at every step of the archiver."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import psycopg
import pytest

from application.shard.app import Outcome, ShardApp
from application.wal.records import iter_payload
from application.wal.retention import Follower, RetentionPolicy
from domain.commands import CancelOrder, Deposit, PlaceOrder
from domain.values import OrderType, Side
from infra.bench.flow import generate_commands
from infra.bootstrap import drop_database, make_projector, make_shard_app, migrate
from infra.settings import Settings
from infra.wal.archive import ArchiveError, SegmentArchive
from infra.wal.archive_cli import archive_shard
from infra.wal.archive_service import ArchiveService
from infra.wal.archiver import Archiver
from infra.wal.retention_settings import ArchiveSettings

pytestmark = pytest.mark.integration

SHARD = "shard-1"
ROOT = Path(__file__).resolve().parents[2]
POLICY = RetentionPolicy(retain_records=800, segment_records=1000, checkpoints_keep=2)


@pytest.fixture
def archive_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = str(tmp_path / "archive")
    monkeypatch.setenv("EXDR_ARCHIVE_URL", url)
    return url


@pytest.fixture
def settings(archive_env: str) -> Settings:
    """Read after EXDR_ARCHIVE_URL is set: the shards' stores read this archive."""
    return Settings.from_env()


def _app(settings: Settings, dsn: str) -> ShardApp:
    tuned = dataclasses.replace(settings, checkpoint_every=250)
    app = make_shard_app(tuned, SHARD, dsn=dsn)
    app.recover()
    return app


def _fill(app: ShardApp, commands: int, seed: int = 3) -> None:
    flow = list(generate_commands(SHARD, app.instruments, commands, seed=seed))
    for start in range(0, len(flow), 50):
        app.execute_batch(flow[start : start + 50])
        if app._crossed_checkpoint(app.seq - 1) or app.seq % 250 < 3:
            app.checkpoint()


def _live(dsn: str) -> tuple[int, int, int]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*), coalesce(min(seq), 0), coalesce(max(seq), 0) FROM wal_records "
            "WHERE shard_id = %s",
            (SHARD,),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def _all_seqs(app: ShardApp, upto: int) -> list[int]:
    pages = app.store.iter_raw_pages(SHARD, 0, upto)  # type: ignore[attr-defined]
    return [row[0] for page in pages for row in page]


def test_archive_keeps_replay_recovery_and_state_equal(
    settings: Settings, dsn: str, archive_env: str
) -> None:
    app = _app(settings, dsn)
    _fill(app, 3000)
    head, live_hash = app.seq, app.engine.state_hash()
    app.close()

    run = Archiver(dsn, SegmentArchive(archive_env), POLICY).run(SHARD)
    assert run.segments >= 2 and run.records > 0, run
    count, low, high = _live(dsn)
    assert low == run.archived_seq + 1 and high == head and count == head - run.archived_seq
    assert count <= POLICY.retain_records + POLICY.segment_records

    scratch = make_shard_app(settings, SHARD, dsn=dsn)
    report = scratch.recover(from_scratch=True)
    assert report.seq == head and report.state_hash == live_hash
    assert report.checkpoint_hash_matches is not False
    assert _all_seqs(scratch, head) == list(range(1, head + 1))
    scratch.close()

    restarted = make_shard_app(settings, SHARD, dsn=dsn)
    assert restarted.recover().state_hash == live_hash
    restarted.close()

    # the CLI replay reads the archive too and says so in its JSON
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "infra.cli.main",
            "replay",
            "--shard",
            SHARD,
            "--from-scratch",
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "EXDR_PG_DSN": dsn},
    )
    assert out.returncode == 0, out.stderr
    assert f'"state_hash": "{live_hash}"' in out.stdout and '"matches_live": true' in out.stdout

    with psycopg.connect(dsn) as conn:
        seqs = [
            r[0]
            for r in conn.execute(
                "SELECT seq FROM wal_checkpoints WHERE shard_id = %s ORDER BY seq", (SHARD,)
            ).fetchall()
        ]
        starts = [
            r[0] - 1
            for r in conn.execute(
                "SELECT first_seq FROM wal_archive_segments WHERE shard_id = %s", (SHARD,)
            ).fetchall()
        ]
    assert all(s in seqs for s in starts if s > 0)  # every archived range starts at a checkpoint
    assert len(seqs) < head // 250


def test_a_standby_holds_archiving_back_until_away_too_long(
    settings: Settings, dsn: str, archive_env: str
) -> None:
    app = _app(settings, dsn)
    _fill(app, 2000)
    app.close()
    archiver = Archiver(dsn, SegmentArchive(archive_env), POLICY)
    held = archiver.run(SHARD, [Follower("standby", stored_seq=100, away_s=5)])
    assert held.segments == 0 and "standby standby has stored up to 100" in held.decision
    released = archiver.run(SHARD, [Follower("standby", stored_seq=100, away_s=1e9)])
    assert released.segments >= 1 and released.released == ("standby",)


def test_damaged_or_missing_segment_is_named_with_its_first_bad_seq(
    settings: Settings, dsn: str, archive_env: str
) -> None:
    app = _app(settings, dsn)
    _fill(app, 2000)
    app.close()
    run = Archiver(dsn, SegmentArchive(archive_env), POLICY).run(SHARD)
    assert run.segments >= 1
    files = sorted(Path(archive_env, SHARD).glob("*.seg"))
    first = files[0]
    data = first.read_bytes()

    first.write_bytes(data[: len(data) // 2])  # truncated
    scratch = make_shard_app(settings, SHARD, dsn=dsn)
    with pytest.raises(ArchiveError) as caught:
        scratch.recover(from_scratch=True)
    assert first.name in str(caught.value) and caught.value.seq > 1

    altered = bytearray(data)
    altered[len(altered) // 2] ^= 0xFF  # altered
    first.write_bytes(bytes(altered))
    with pytest.raises(ArchiveError) as caught:
        scratch.recover(from_scratch=True)
    assert first.name in str(caught.value)

    first.unlink()  # missing
    with pytest.raises(ArchiveError) as caught:
        scratch.recover(from_scratch=True)
    assert first.name in str(caught.value) and caught.value.seq == 1
    scratch.close()


def test_retry_after_its_record_was_archived_returns_the_first_outcome(
    settings: Settings, dsn: str, archive_env: str
) -> None:
    app = _app(settings, dsn)
    app.enable_key_filter()
    symbol = app.instruments[0].symbol
    first = app.execute_batch(
        [
            Deposit("alice", Decimal("1000000"), deposit_id="dep-1"),
            PlaceOrder("alice", "keep-1", symbol, Side.BUY, OrderType.LIMIT, 1, 1000),
        ]
    )
    placed = first[1]
    assert isinstance(placed, Outcome) and not placed.duplicate
    _fill(app, 2000, seed=5)
    app.close()
    Archiver(dsn, SegmentArchive(archive_env), POLICY).run(SHARD)
    assert _live(dsn)[1] > placed.seq  # both records left the live table

    again = _app(settings, dsn)
    again.enable_key_filter()
    retried = again.execute_batch(
        [
            PlaceOrder("alice", "keep-1", symbol, Side.BUY, OrderType.LIMIT, 1, 1000),
            Deposit("alice", Decimal("1000000"), deposit_id="dep-1"),
            Deposit("alice", Decimal("5"), deposit_id="dep-1"),
        ]
    )
    order, deposit, other = retried
    assert isinstance(order, Outcome) and order.duplicate and order.seq == placed.seq
    assert order.order is not None and order.order.id == placed.order.id  # type: ignore[union-attr]
    assert isinstance(deposit, Outcome) and deposit.duplicate and not deposit.differs
    assert isinstance(other, Outcome) and other.duplicate and other.differs
    again.close()


@pytest.mark.parametrize("crash_at", ["after_file", "after_manifest", "during_delete"])
def test_sigkill_at_each_archiver_step_loses_nothing_and_duplicates_nothing(
    settings: Settings, dsn: str, archive_env: str, crash_at: str
) -> None:
    app = _app(settings, dsn)
    _fill(app, 2000)
    head, live_hash = app.seq, app.engine.state_hash()
    app.close()
    worker = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("archive_worker.py")),
            dsn,
            SHARD,
            archive_env,
            crash_at,
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    assert worker.returncode == -9, worker.stderr

    with psycopg.connect(dsn) as conn:
        (deleted,) = conn.execute(  # type: ignore[misc]
            "SELECT count(*) FROM wal_archive_segments WHERE deleted"
        ).fetchone()
    assert deleted == 0  # the kill came before any delete committed
    assert _live(dsn) == (head, 1, head)  # the live table is whole
    with psycopg.connect(dsn) as conn:
        (kept,) = conn.execute("SELECT count(*) FROM wal_archived_keys").fetchone()  # type: ignore[misc]
    # the keys commit with the manifest row, never before it
    assert (kept > 0) == (crash_at != "after_file"), kept

    run = Archiver(dsn, SegmentArchive(archive_env), POLICY).run(SHARD)
    assert run.segments >= 1
    count, low, _ = _live(dsn)
    assert low == run.archived_seq + 1 and count == head - run.archived_seq
    scratch = make_shard_app(settings, SHARD, dsn=dsn)
    assert _all_seqs(scratch, head) == list(range(1, head + 1))  # none lost, none twice
    assert scratch.recover(from_scratch=True).state_hash == live_hash
    # the archived records' keys, each once (archived keys are read beside the live ones)
    keys = list(scratch.store.command_keys(SHARD, head))  # type: ignore[attr-defined]
    assert len(keys) == len(set(keys))
    with psycopg.connect(dsn) as conn:
        kept = conn.execute("SELECT seq FROM wal_archived_keys ORDER BY seq").fetchall()
    assert kept and kept[-1][0] <= run.archived_seq
    # the archived records' events left with them, the live records' events are all there
    assert _stored_keys(dsn, "exchange_events") == _record_events(scratch, run.archived_seq, head)
    scratch.close()


def test_a_standby_whose_gap_reaches_archived_records_catches_up_through_the_archive(
    settings: Settings, dsn: str, archive_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from projections.replication.replicator import Replicator

    from .conftest import scratch_dsn

    app = _app(settings, dsn)
    _fill(app, 2000)
    head, live_hash = app.seq, app.engine.state_hash()
    app.close()
    Archiver(dsn, SegmentArchive(archive_env), POLICY).run(SHARD)
    assert _live(dsn)[1] > 1

    standby_dsn = scratch_dsn("standby")
    migrate(standby_dsn)
    try:
        # the standby's own archive is elsewhere; the leader's is found by its database name
        monkeypatch.setenv("EXDR_ARCHIVE_URL", str(Path(archive_env).parent / "{database}"))
        Path(archive_env).rename(Path(archive_env).parent / dsn.rsplit("/", 1)[1])
        settings = Settings.from_env()
        leader_view = make_shard_app(settings, SHARD, dsn=dsn)
        standby = make_shard_app(settings, SHARD, dsn=standby_dsn)
        standby.recover()
        replicator = Replicator(standby, leader_view.store)
        assert replicator.catch_up() == head
        assert standby.engine.state_hash() == live_hash
        standby.close()
        leader_view.close()
    finally:
        drop_database(standby_dsn)


def test_a_run_stopped_while_deleting_with_the_next_segment_written_is_finished_by_the_next(
    settings: Settings, dsn: str, archive_env: str
) -> None:
    """The archiver deletes segment k while it writes k+1: a run that stops in k's delete
    leaves k and possibly k+1 between manifest and delete; the next run finishes both."""
    app = _app(settings, dsn)
    _fill(app, 2000)
    head, live_hash = app.seq, app.engine.state_hash()
    app.close()

    class StopsInFirstDelete(Archiver):
        def _delete_rows(self, conn: psycopg.Connection[object], segment: object) -> None:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:  # the next segment's manifest row is written
                (written,) = conn.execute(  # type: ignore[misc]
                    "SELECT count(*) FROM wal_archive_segments"
                ).fetchone()
                if written >= 2:
                    break
                time.sleep(0.02)
            raise RuntimeError("stopped in the delete of the first segment")

    with pytest.raises(RuntimeError, match="stopped in the delete"):
        StopsInFirstDelete(dsn, SegmentArchive(archive_env), POLICY).run(SHARD)
    with psycopg.connect(dsn) as conn:
        states = conn.execute(
            "SELECT deleted FROM wal_archive_segments ORDER BY first_seq"
        ).fetchall()
    assert [s[0] for s in states] == [False, False]  # two segments between manifest and delete
    assert _live(dsn) == (head, 1, head)

    run = Archiver(dsn, SegmentArchive(archive_env), POLICY).run(SHARD)
    assert run.segments >= 2
    count, low, _ = _live(dsn)
    assert low == run.archived_seq + 1 and count == head - run.archived_seq
    scratch = make_shard_app(settings, SHARD, dsn=dsn)
    assert _all_seqs(scratch, head) == list(range(1, head + 1))  # none lost, none twice
    assert scratch.recover(from_scratch=True).state_hash == live_hash
    scratch.close()


def _service(dsn: str, archive_env: str) -> ArchiveService:
    """The node's archiver of this database, no followers: only the window, the checkpoints
    and the region's read models decide."""
    return ArchiveService(dsn, ArchiveSettings(archive_env, POLICY), [SHARD], lambda _s: [])


def test_archiving_waits_for_the_read_models_then_proceeds(
    settings: Settings, dsn: str, archive_env: str
) -> None:
    app = _app(settings, dsn)
    _fill(app, 3000)
    head = app.seq
    app.close()
    projector = make_projector(dataclasses.replace(settings, pg_dsn=dsn), dsn=dsn)
    behind = 900  # far behind the window (the newest 800 of ~3000 stay live)
    assert projector.apply(SHARD, (), through=behind).tracked == behind
    service = _service(dsn, archive_env)

    held = service.run_pass(SHARD)
    count, low, _high = _live(dsn)
    # history is served from the read models and the live WAL after their tracking row:
    # nothing after it may have left the live table
    assert 0 < held.archived_seq <= behind and low == held.archived_seq + 1 <= behind + 1
    assert held.read_models_seq == behind and held.held_by_read_models
    assert f"read models have projected up to {behind}" in held.last_decision

    projector.catch_up(SHARD)
    caught_up = service.run_pass(SHARD)
    assert caught_up.archived_seq > behind and not caught_up.held_by_read_models
    assert caught_up.read_models_seq == head
    assert caught_up.archived_seq <= head - POLICY.retain_records
    count, low, _high = _live(dsn)
    assert low == caught_up.archived_seq + 1 and count == head - caught_up.archived_seq


def test_without_read_models_tracking_archiving_is_held_and_said_so(
    settings: Settings, dsn: str, archive_env: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = _app(settings, dsn)
    _fill(app, 2000)
    app.close()
    service = _service(dsn, archive_env)
    with caplog.at_level(logging.WARNING, logger="exchange_dr.archive"):
        state = service.run_pass(SHARD)
        service.run_pass(SHARD)
    assert state.archived_seq == 0 and _live(dsn)[1] == 1
    assert state.held_by_read_models and state.read_models_seq is None
    assert "no tracking row" in state.last_decision
    held_lines = [r for r in caplog.records if "read models" in r.getMessage()]
    assert len(held_lines) == 1, held_lines  # said once, not at every pass
    # the operator's pass says the same, and a region without read models can opt out
    options = dataclasses.replace(settings.archive, retain_records=800, segment_records=1000)
    tuned = dataclasses.replace(settings, pg_dsn=dsn, archive=options)
    report = archive_shard(tuned, SHARD)
    assert report["records"] == 0 and report["read_models_seq"] is None, str(report)
    assert report["held_by_read_models"] and "no tracking row" in report["decision"], str(report)
    ignoring = dataclasses.replace(
        tuned, archive=dataclasses.replace(options, read_models="ignore")
    )
    report = archive_shard(ignoring, SHARD)
    assert report["segments"] >= 1 and report["read_models"] is None, str(report)
    assert not report["held_by_read_models"]


def _stored_keys(dsn: str, table: str) -> set[tuple[UUID, int]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f"SELECT originator_id, originator_version FROM {table}").fetchall()
    return {(r[0], int(r[1])) for r in rows}


def _record_events(app: ShardApp, after: int, upto: int) -> set[tuple[UUID, int]]:
    """The (originator, version) of every event the records after..upto carry in their payload
    (archived ones read back from the archive)."""
    pages = app.store.iter_raw_pages(SHARD, after, upto)  # type: ignore[attr-defined]
    return {
        (originator_id, version)
        for page in pages
        for row in page
        for originator_id, version, _topic, _state in iter_payload(bytes(row[5]))
    }


def test_archiving_removes_the_events_and_snapshots_of_archived_records(
    settings: Settings, dsn: str, archive_env: str
) -> None:
    """exchange_events (and the snapshots taken at its versions) holds what the WAL records
    carry: the rows of archived records leave the live database with them, and state, replay
    from scratch, recovery and a retry of an order closed before archiving are unchanged."""
    tuned = dataclasses.replace(settings, snapshot_every=5)
    app = make_shard_app(dataclasses.replace(tuned, checkpoint_every=250), SHARD, dsn=dsn)
    app.recover()
    app.enable_key_filter()
    symbol = app.instruments[0].symbol
    _deposit, placed = app.execute_batch(
        [
            Deposit("carol", Decimal("1000000"), deposit_id="dep-c"),
            PlaceOrder("carol", "closed-1", symbol, Side.BUY, OrderType.LIMIT, 1, 1000),
        ]
    )
    assert isinstance(placed, Outcome) and placed.order is not None
    (cancelled,) = app.execute_batch([CancelOrder("carol", placed.order.id)])
    assert isinstance(cancelled, Outcome) and app.engine.order(placed.order.id) is None
    _fill(app, 3000, seed=7)
    head, live_hash = app.seq, app.engine.state_hash()
    app.close()
    events_before = _stored_keys(dsn, "exchange_events")
    snapshots_before = _stored_keys(dsn, "exchange_snapshots")

    run = Archiver(dsn, SegmentArchive(archive_env), POLICY).run(SHARD)
    assert run.segments >= 2 and run.archived_seq > cancelled.seq, run

    scratch = make_shard_app(tuned, SHARD, dsn=dsn)
    archived = _record_events(scratch, 0, run.archived_seq)
    live = _record_events(scratch, run.archived_seq, head)
    assert archived and archived <= events_before and live <= events_before
    assert archived & snapshots_before  # snapshots were taken at archived versions
    events_after = _stored_keys(dsn, "exchange_events")
    snapshots_after = _stored_keys(dsn, "exchange_snapshots")
    assert not archived & events_after, f"{len(archived & events_after)} archived events remain"
    assert events_after == live  # the live records' events, all of them
    assert not archived & snapshots_after
    assert snapshots_after == snapshots_before - archived

    report = scratch.recover(from_scratch=True)
    assert report.seq == head and report.state_hash == live_hash
    assert _all_seqs(scratch, head) == list(range(1, head + 1))
    scratch.close()

    restarted = make_shard_app(tuned, SHARD, dsn=dsn)
    restarted.enable_key_filter()
    assert restarted.recover().state_hash == live_hash
    # orders whose events are (partly) archived: read as absent, never a broken aggregate
    for originator_id, _version in archived:
        order = restarted.find_order(originator_id)
        assert order is None or order.id == originator_id
    assert restarted.find_order(placed.order.id) is None  # closed, events archived
    retried = restarted.execute_batch(
        [PlaceOrder("carol", "closed-1", symbol, Side.BUY, OrderType.LIMIT, 1, 1000)]
    )
    (again,) = retried
    assert isinstance(again, Outcome) and again.duplicate and again.seq == placed.seq
    assert again.order is not None and again.order.id == placed.order.id
    assert again.order.client_order_id == "closed-1" and again.order.quantity_lots == 1
    assert restarted.engine.state_hash() == live_hash  # the retry changed nothing
    restarted.close()
