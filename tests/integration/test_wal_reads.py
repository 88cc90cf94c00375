"""Reading a shard's WAL in pages on real PostgreSQL: every record once, in order, and each page
a scan of its own range, with or without the planner's statistics."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, cast

import psycopg
import pytest

from application.shard.app import ShardApp
from domain.commands import Deposit
from infra.bootstrap import make_shard_app
from infra.settings import Settings
from infra.wal.pg_wal import _READ_PAGE, PostgresWalRecorder

pytestmark = pytest.mark.integration

SHARD = "shard-1"
RECORDS = 3000


def deposits(app: ShardApp, first: int, last: int) -> None:
    """One record per deposit; every seventh carries a deposit_id (a command key)."""
    for start in range(first, last + 1, 100):
        batch = [
            Deposit(f"trader-{n % 13}", Decimal(1), f"transfer-{n}" if n % 7 == 0 else None)
            for n in range(start, min(start + 100, last + 1))
        ]
        assert not [r for r in app.execute_batch(batch) if isinstance(r, Exception)]


@pytest.fixture
def app(settings: Settings, dsn: str) -> ShardApp:
    """A WAL of RECORDS records that was never analyzed, as a table filled faster than
    autovacuum gets to it (a standby catching up, a region restored from a backup)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE wal_records SET (autovacuum_enabled = false)")
    shard_app = make_shard_app(settings, SHARD, dsn=dsn)
    shard_app.recover()
    deposits(shard_app, 1, RECORDS)
    assert shard_app.seq == RECORDS
    return shard_app


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(n for child in plan.get("Plans", []) for n in _nodes(child))]


def test_a_page_scans_its_own_range_only(app: ShardApp, dsn: str) -> None:
    # `seq > after ... LIMIT n` alone was planned here as a scan of every row past `after`
    # (2,000 for a page of 500) and a sort: reading a long WAL from its start was quadratic
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + _READ_PAGE, (SHARD, 1000, 1500, 500)
        ).fetchone()
    assert row is not None
    nodes = _nodes(row[0][0]["Plan"])
    scans = [n for n in nodes if "Scan" in n["Node Type"]]
    assert scans and max(n["Actual Rows"] for n in scans) == 500
    assert not [n for n in nodes if n["Node Type"] == "Sort"]
    app.close()


def test_pages_give_every_record_once_in_order(app: ShardApp) -> None:
    store = cast(PostgresWalRecorder, app.store)
    assert [r.seq for r in store.iter_records(SHARD, 0)] == list(range(1, RECORDS + 1))
    assert [r.seq for r in store.iter_records(SHARD, 17, page=7, upto_seq=60)] == list(
        range(18, 61)
    )
    assert [r.seq for r in store.read_records(SHARD, RECORDS - 10, 500)] == list(
        range(RECORDS - 9, RECORDS + 1)
    )
    assert store.read_records(SHARD, RECORDS, 500) == []
    raw = [row[0] for page in store.iter_raw_pages(SHARD, 100, 2000, page=300) for row in page]
    assert raw == list(range(101, 2001))
    app.close()


def test_command_keys_are_all_found_across_windows_without_keys(app: ShardApp, dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        stored = [
            key
            for (key,) in conn.execute(
                "SELECT command_key FROM wal_records WHERE shard_id = %s "
                "AND command_key IS NOT NULL ORDER BY seq",
                (SHARD,),
            )
        ]
    assert len(stored) == RECORDS // 7
    # windows of 5 seqs: most hold no key at all, which must not end the listing
    store = cast(PostgresWalRecorder, app.store)
    assert list(store.command_keys(SHARD, RECORDS, page=5)) == stored
    assert list(store.command_keys(SHARD, 700, page=64)) == stored[:100]
    app.close()
