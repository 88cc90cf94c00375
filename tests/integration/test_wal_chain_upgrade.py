"""A store written before records were chained upgrades in place: its records stay readable,
new ones chain from the recorded starting point, and an unchained record after it is corrupt."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import psycopg
import pytest

from alembic import command
from application.wal.records import WALCorruptionError, compute_checksum, decode_payload
from domain.commands import Deposit
from infra.bootstrap import alembic_config, drop_database, make_shard_app, migrate
from infra.settings import Settings
from tests.integration.conftest import scratch_dsn

pytestmark = pytest.mark.integration

SHARD = "shard-1"


@pytest.fixture
def old_dsn() -> Iterator[str]:
    """A database at the revision before chained records, holding 20 records written then."""
    url = scratch_dsn("chain")
    migrate(url)  # creates the database; then back to the old schema
    command.downgrade(alembic_config(url), "0004")
    try:
        yield url
    finally:
        drop_database(url)


def _legacy_copy(settings: Settings, source: str, target: str, count: int) -> str:
    """Write `count` records with today's code in `source`, store them in `target` as the
    code before chaining did (no link, no MAC, the checksum of that time)."""
    app = make_shard_app(settings, SHARD, dsn=source)
    app.recover()
    for i in range(count):
        [result] = app.execute_batch([Deposit(f"acct-{i % 5}", Decimal(i + 1))])
        assert not isinstance(result, Exception)
    records = list(app.store.iter_records(SHARD, 0))
    app.close()
    last = ""
    with psycopg.connect(target) as conn:
        for r in records:
            last = compute_checksum(
                SHARD, r.epoch, r.seq, r.command_type, r.command_key, r.recorded_at_us, r.payload
            )
            conn.execute(
                "INSERT INTO wal_records (shard_id, seq, epoch, command_type, command_key, "
                "recorded_at_us, payload, checksum) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    SHARD,
                    r.seq,
                    r.epoch,
                    r.command_type,
                    r.command_key,
                    r.recorded_at_us,
                    r.payload,
                    last,
                ),
            )
            for e in decode_payload(r.payload):
                conn.execute(
                    "INSERT INTO exchange_events (originator_id, originator_version, topic, "
                    "state) VALUES (%s, %s, %s, %s)",
                    (e.originator_id, e.originator_version, e.topic, e.state),
                )
        conn.execute(
            "INSERT INTO wal_heads (shard_id, seq, epoch) VALUES (%s, %s, %s)",
            (SHARD, records[-1].seq, records[-1].epoch),
        )
    return last


def test_records_before_the_upgrade_start_the_chain(
    settings: Settings, dsn: str, old_dsn: str
) -> None:
    last_legacy = _legacy_copy(settings, dsn, old_dsn, 20)
    migrate(old_dsn)
    with psycopg.connect(old_dsn) as conn:
        start = conn.execute("SELECT seq, checksum FROM wal_chain_starts").fetchall()
    assert start == [(20, last_legacy)]

    app = make_shard_app(settings, SHARD, dsn=old_dsn)
    app.recover()
    assert app.chain_checksum == last_legacy
    for i in range(10):
        [result] = app.execute_batch([Deposit(f"acct-{i % 5}", Decimal(100 + i))])
        assert not isinstance(result, Exception)
    live = app.engine.state_hash()
    app.close()

    reader = make_shard_app(settings, SHARD, dsn=old_dsn)
    records = {r.seq: r for r in reader.store.iter_records(SHARD, 0)}
    reader.close()
    assert records[21].prev_checksum == last_legacy and records[21].mac is not None
    assert all(records[s].prev_checksum == records[s - 1].checksum for s in range(22, 31))
    assert all(records[s].mac is None for s in range(1, 21))

    replayed = make_shard_app(settings, SHARD, dsn=old_dsn)
    report = replayed.recover(from_scratch=True)
    assert (report.seq, report.state_hash) == (30, live)
    replayed.close()

    # a record after the start stripped of its link (its plain checksum made right again)
    r = records[25]
    plain = compute_checksum(
        SHARD, r.epoch, r.seq, r.command_type, r.command_key, r.recorded_at_us, r.payload
    )
    with psycopg.connect(old_dsn) as conn:
        conn.execute(
            "UPDATE wal_records SET prev_checksum = NULL, mac = NULL, checksum = %s "
            "WHERE shard_id = %s AND seq = 25",
            (plain, SHARD),
        )
    refused = make_shard_app(settings, SHARD, dsn=old_dsn)
    with pytest.raises(WALCorruptionError, match="seq 25") as caught:
        refused.recover(from_scratch=True)
    assert caught.value.seq == 25
    refused.close()
