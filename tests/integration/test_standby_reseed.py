"""A standby whose gap reaches records its leader has archived, on real PostgreSQL and real
files: with the leader's segments out of its reach it is refused with an alert naming the
range, never left retrying; with them in reach it is re-seeded from the leader's checkpoint and
archive, verified, and then confirms new records and can be promoted with the leader's state."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from application.shard.app import Outcome, ShardApp
from application.shard.keys import command_key
from application.wal.retention import RetentionPolicy
from domain.commands import PlaceOrder
from infra.bench.flow import generate_commands
from infra.bootstrap import drop_database, make_shard_app, migrate
from infra.settings import Settings
from infra.wal.archive import SegmentArchive
from infra.wal.archiver import Archiver
from infra.wal.reseed import StandbyReseed
from projections.replication.replicator import Replicator

from .conftest import scratch_dsn

pytestmark = pytest.mark.integration

SHARD = "shard-1"
POLICY = RetentionPolicy(retain_records=300, segment_records=1000, checkpoints_keep=2)


@pytest.fixture
def standby_dsn() -> Iterator[str]:
    url = scratch_dsn("standby")
    migrate(url)
    try:
        yield url
    finally:
        drop_database(url)


def _settings(monkeypatch: pytest.MonkeyPatch, url: str) -> Settings:
    monkeypatch.setenv("EXDR_ARCHIVE_URL", url)
    return dataclasses.replace(Settings.from_env(), checkpoint_every=250)


def _open(settings: Settings, dsn: str) -> ShardApp:
    app = make_shard_app(settings, SHARD, dsn=dsn)
    app.recover()
    return app


def _fill(app: ShardApp, commands: int, seed: int = 3) -> None:
    flow = list(generate_commands(SHARD, app.instruments, commands, seed=seed))
    for start in range(0, len(flow), 50):
        app.execute_batch(flow[start : start + 50])
        if app._crossed_checkpoint(app.seq - 1) or app.seq % 250 < 3:
            app.checkpoint()


def _first_live(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT coalesce(min(seq), 0) FROM wal_records WHERE shard_id = %s", (SHARD,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def _archived_keys(dsn: str) -> list[tuple[str, int]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT command_key, seq FROM wal_archived_keys WHERE shard_id = %s ORDER BY seq",
            (SHARD,),
        ).fetchall()
    return [(str(key), int(seq)) for key, seq in rows]


class Alerts:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, name: str, message: str, labels: Any) -> None:
        self.sent.append((name, message, dict(labels)))

    def severe(self, severity: str, name: str, message: str, labels: Any) -> None:
        self.sent.append((name, message, {**dict(labels), "severity": severity}))

    def named(self, name: str) -> list[tuple[str, str, dict[str, Any]]]:
        return [a for a in self.sent if a[0] == name]


def _standby_behind(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, dsn: str, standby_dsn: str, stop_at: int
) -> tuple[int, str, int]:
    """Leader with 2000 commands of history, a standby that stored up to `stop_at` and then
    went away, and the leader archiving past it (its archive: tmp/<its database>). Returns
    (head, state hash, leader's archived seq)."""
    settings = _settings(monkeypatch, str(tmp_path / "{database}"))
    leader = _open(settings, dsn)
    _fill(leader, 2000)
    head, live_hash = leader.seq, leader.engine.state_hash()
    standby = _open(settings, standby_dsn)
    replicator = Replicator(standby, leader.store)
    for step in [*range(300, stop_at, 300), stop_at]:  # checkpoints along the way
        replicator.stall_after_seq = step
        assert replicator.catch_up() == step
    standby.close()
    leader.close()
    archive = SegmentArchive(str(tmp_path / _database(dsn)))
    run = Archiver(dsn, archive, POLICY).run(SHARD)
    assert run.archived_seq > stop_at, run
    assert _first_live(dsn) == run.archived_seq + 1
    return head, live_hash, run.archived_seq


def _database(dsn: str) -> str:
    return dsn.rsplit("/", 1)[1]


def test_without_the_leaders_archive_a_standby_is_refused_with_an_alert_then_reseeded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, dsn: str, standby_dsn: str
) -> None:
    """The standby's region keeps its archive in a place of its own (EXDR_ARCHIVE_URL without
    {database}, another machine): the leader's segments are out of its reach. Before the
    re-seed, every catch-up raised ArchiveError ('file missing') with no alert, for ever."""
    head, live_hash, archived = _standby_behind(monkeypatch, tmp_path, dsn, standby_dsn, 100)
    settings = _settings(monkeypatch, str(tmp_path / "standby-only"))
    leader_view = make_shard_app(settings, SHARD, dsn=dsn)
    standby = _open(settings, standby_dsn)
    alerts = Alerts()
    replicator = Replicator(standby, leader_view.store)
    replicator.reseed = StandbyReseed("standby-region", alerts.severe)
    outcomes = [replicator.catch_up(everything=False) for _ in range(3)]
    replicator.apply_wire([])  # the broker's path asks nothing of the archive either
    print("catch-up outcomes:", outcomes, "alerts:", alerts.sent)
    assert outcomes == [100, 100, 100]
    blocked = alerts.named("StandbyReseedBlocked")
    assert len(blocked) == 1, alerts.sent  # once, not every 0.5 s
    labels = blocked[0][2]
    assert labels["shard"] == SHARD and labels["region"] == "standby-region"
    assert (labels["from_seq"], labels["to_seq"]) == (101, archived)
    assert "not readable from this region" in blocked[0][1]
    assert replicator.lag_records() == head - 100

    # the operator points this region at the leader's archive: the next catch-up re-seeds
    leader_view.close()
    settings = _settings(monkeypatch, str(tmp_path / "{database}"))
    reachable = make_shard_app(settings, SHARD, dsn=dsn)
    replicator.primary = reachable.store
    assert replicator.catch_up() == head
    assert standby.engine.state_hash() == live_hash
    assert alerts.named("StandbyReseeding")
    assert replicator.reseed_refused is None
    reachable.close()
    standby.close()


@pytest.mark.parametrize("stop_at", [100, 700])
def test_a_standby_behind_the_leaders_archive_is_reseeded_then_confirms_and_can_be_promoted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, dsn: str, standby_dsn: str, stop_at: int
) -> None:
    """At 700 the standby had archived a range of its own before it went away: the leader's
    segments replace it in its manifest."""
    head, live_hash, archived = _standby_behind(monkeypatch, tmp_path, dsn, standby_dsn, stop_at)
    settings = _settings(monkeypatch, str(tmp_path / "{database}"))
    own_archive = SegmentArchive(str(tmp_path / _database(standby_dsn)))
    if stop_at == 700:
        own = Archiver(standby_dsn, own_archive, POLICY).run(SHARD)
        assert 0 < own.archived_seq < stop_at, own
        own_file = own_archive.name(SHARD, 1, own.archived_seq)
        assert (tmp_path / _database(standby_dsn) / own_file).exists()
    leader = _open(settings, dsn)
    standby = _open(settings, standby_dsn)
    alerts = Alerts()
    replicator = Replicator(standby, leader.store)
    replicator.keys = settings.replication_keys()
    reseed = StandbyReseed("standby-region", alerts.severe)
    replicator.reseed = reseed

    assert replicator.catch_up(everything=False) >= archived
    result = reseed.last_result
    assert result is not None and result.archived_to == archived
    assert result.checkpoint_seq >= archived and result.segments >= 1
    (_, message, labels) = alerts.named("StandbyReseeding")[0]
    assert (labels["from_seq"], labels["to_seq"]) == (stop_at + 1, archived), message
    assert labels["checkpoint_seq"] == result.checkpoint_seq
    # its archive now holds the leader's segments, byte for byte, and its live table the rest
    assert standby.store.archived_seq(SHARD) == archived  # type: ignore[attr-defined]
    assert _first_live(standby_dsn) == archived + 1
    files = sorted(p.name for p in (tmp_path / _database(standby_dsn) / SHARD).glob("*.seg"))
    assert files == sorted(p.name for p in (tmp_path / _database(dsn) / SHARD).glob("*.seg"))
    # like the leader's: no event of an archived record stays live, each live one names its seq
    with psycopg.connect(standby_dsn) as conn:
        archived_events, unnamed, live_events = conn.execute(
            "SELECT count(*) FILTER (WHERE seq <= %s), count(*) FILTER (WHERE seq IS NULL), "
            "count(*) FILTER (WHERE seq > %s) FROM exchange_events",
            (archived, archived),
        ).fetchone()  # type: ignore[misc]
    assert (archived_events, unnamed) == (0, 0) and live_events > 0

    # then it follows the live table: caught up, same state, same chain
    assert replicator.catch_up() == head
    assert standby.engine.state_hash() == live_hash
    assert standby.chain_checksum == leader.chain_checksum

    # new records are stored and confirmed (a confirmation signs seq and the stored checksum)
    flow = list(generate_commands(SHARD, leader.instruments, 200, seed=11))
    for start in range(0, len(flow), 50):
        leader.execute_batch(flow[start : start + 50])
    assert replicator.catch_up() == leader.seq
    assert standby.chain_checksum == leader.chain_checksum
    assert standby.engine.state_hash() == leader.engine.state_hash()
    final_hash, final_seq, epoch = leader.engine.state_hash(), leader.seq, leader.epoch
    leader.close()
    standby.close()

    # replay from scratch on the standby reads its archive (the leader's segments) and then
    # its live table, every checksum and seam verified
    scratch = make_shard_app(settings, SHARD, dsn=standby_dsn)
    report = scratch.recover(from_scratch=True)
    assert (report.seq, report.state_hash) == (final_seq, final_hash)
    scratch.close()

    # the standby's own archiver goes on after the adopted range
    assert Archiver(standby_dsn, own_archive, POLICY).run(SHARD).archived_seq >= archived

    # promoted: recovers the leader's state and takes commands under its new epoch
    promoted = make_shard_app(settings, SHARD, dsn=standby_dsn, epoch=epoch + 1)
    promoted.enable_key_filter()
    assert promoted.recover().state_hash == final_hash
    # a retry of an order whose record the standby never stored itself (it was in the gap,
    # archived on the leader): its first outcome, from the keys the re-seed brought
    in_gap = {key: seq for key, seq in _archived_keys(standby_dsn) if stop_at < seq <= archived}
    retry = next(
        c
        for c in generate_commands(SHARD, promoted.instruments, 2000, seed=3)
        if isinstance(c, PlaceOrder) and command_key(SHARD, c) in in_gap
    )
    (outcome,) = promoted.execute_batch([retry])
    assert isinstance(outcome, Outcome) and outcome.duplicate
    assert outcome.seq == in_gap[str(command_key(SHARD, retry))]
    assert promoted.seq == final_seq  # nothing written for it
    more = list(generate_commands(SHARD, promoted.instruments, 20, seed=12))
    promoted.execute_batch(more)
    assert promoted.seq > final_seq
    promoted.close()


def test_a_damaged_leader_segment_stops_the_reseed_with_an_alert_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, dsn: str, standby_dsn: str
) -> None:
    head, _, archived = _standby_behind(monkeypatch, tmp_path, dsn, standby_dsn, 100)
    settings = _settings(monkeypatch, str(tmp_path / "{database}"))
    segment = sorted((tmp_path / _database(dsn) / SHARD).glob("*.seg"))[-1]
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    leader = make_shard_app(settings, SHARD, dsn=dsn)
    standby = _open(settings, standby_dsn)
    before = standby.engine.state_hash()
    alerts = Alerts()
    replicator = Replicator(standby, leader.store)
    replicator.reseed = StandbyReseed("standby-region", alerts.severe)
    assert [replicator.catch_up() for _ in range(3)] == [100, 100, 100]  # no error loop
    failed = alerts.named("StandbyReseedFailed")
    assert len(failed) == 1 and failed[0][2]["severity"] == "critical", alerts.sent
    print("alert:", failed[0][1])
    assert segment.name in failed[0][1] and "bad at seq" in failed[0][1]
    assert replicator.reseed_refused is not None
    # nothing installed: same seq, same state, its own records, no manifest rows
    assert standby.seq == 100 and standby.engine.state_hash() == before
    assert _first_live(standby_dsn) == 1
    assert standby.store.archived_seq(SHARD) == 0  # type: ignore[attr-defined]
    reopened = _open(settings, standby_dsn)
    assert reopened.seq == 100 and reopened.engine.state_hash() == before
    reopened.close()
    standby.close()
    leader.close()
    assert head > archived
