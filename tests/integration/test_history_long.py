"""Two million records of history: archived down to the window with the state unchanged, replay
from scratch through the archive equal, a restart equal, and a start on it that takes its first
command within the bound. Minutes of generation: runs with EXDR_LONG_TESTS=1; with
EXDR_HISTORY_DB=<database> it starts from a history `bench history --keep-db` generated (the
database is copied, never changed)."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest

from infra.bench.history import ACCOUNT, _clone, _generate, _start_and_time
from infra.bootstrap import drop_database, make_shard_app
from infra.settings import Settings
from infra.wal.archive import SegmentArchive
from infra.wal.archiver import Archiver
from infra.wal.retention_settings import ArchiveSettings

from .conftest import scratch_dsn

RECORDS = int(os.environ.get("EXDR_HISTORY_RECORDS", "2000000"))
SHARD = "shard-1"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.long,
    pytest.mark.skipif(not os.environ.get("EXDR_LONG_TESTS"), reason="EXDR_LONG_TESTS=1 runs it"),
]


def test_two_million_records_archive_replay_restart_and_start(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = str(tmp_path / "archive")
    monkeypatch.setenv("EXDR_ARCHIVE_URL", url)
    monkeypatch.setenv(
        "EXDR_WAL_RETAIN_RECORDS", os.environ.get("EXDR_WAL_RETAIN_RECORDS", "100000")
    )
    dsn = scratch_dsn("history")
    source = os.environ.get("EXDR_HISTORY_DB")
    try:
        if source:
            _clone(scratch_dsn("x").rsplit("/", 1)[0] + "/" + source, dsn)
        else:
            _generate(settings, SHARD, dsn, RECORDS, 1)
        with psycopg.connect(dsn) as conn:
            (head,) = conn.execute(  # type: ignore[misc]
                "SELECT seq FROM wal_heads WHERE shard_id = %s", (SHARD,)
            ).fetchone()
        assert head >= RECORDS

        before = make_shard_app(settings, SHARD, dsn=dsn)
        hash_before = before.recover().state_hash
        before.close()

        config = ArchiveSettings.from_env(settings, dsn)
        run = Archiver(dsn, SegmentArchive(config.url), config.policy).run(
            SHARD, max_segments=1_000_000
        )
        retain = config.policy.retain_records
        with psycopg.connect(dsn) as conn:
            (live,) = conn.execute(  # type: ignore[misc]
                "SELECT count(*) FROM wal_records WHERE shard_id = %s", (SHARD,)
            ).fetchone()
        assert run.records > 0 and live == head - run.archived_seq
        assert live <= retain + config.policy.segment_records + settings.checkpoint_every

        scratch = make_shard_app(settings, SHARD, dsn=dsn)
        replay = scratch.recover(from_scratch=True)
        assert (replay.seq, replay.state_hash) == (head, hash_before)
        assert replay.checkpoint_hash_matches is not False
        scratch.close()

        restarted = make_shard_app(settings, SHARD, dsn=dsn)
        assert restarted.recover().state_hash == hash_before
        restarted.close()

        from infra.api.keys import KeyStore

        store = KeyStore(dsn)
        store.create_account(ACCOUNT)
        token = store.create_key(ACCOUNT, funding=True).token  # the first command deposits
        store.close()
        timings = _start_and_time(settings, dsn, SHARD, token, url)
        print("start on", head, "records:", timings)
        assert timings["first_command_seconds"] <= float(
            os.environ.get("EXDR_FIRST_COMMAND_BOUND_S", "3")
        )
    finally:
        drop_database(dsn)
