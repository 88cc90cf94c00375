"""Checksums guard every stored record: an altered row stops recovery at its seq, by name."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest

from application.shard.app import ShardApp
from application.wal.records import WALCorruptionError
from domain.commands import Deposit
from infra.bootstrap import alembic_config, make_shard_app
from infra.settings import Settings

pytestmark = pytest.mark.integration

SHARD = "shard-1"


def filled_app(settings: Settings, dsn: str, count: int, **kwargs: int) -> ShardApp:
    app = make_shard_app(settings, SHARD, dsn=dsn)
    for key, value in kwargs.items():
        setattr(app, key, value)
    app.recover()
    for i in range(count):
        [result] = app.execute_batch([Deposit(f"acct-{i % 7}", Decimal(i + 1))])
        assert not isinstance(result, Exception)
    return app


@pytest.mark.parametrize("column", ["payload", "checksum", "epoch"])
def test_altered_row_stops_recovery_naming_shard_and_seq(
    settings: Settings, dsn: str, column: str
) -> None:
    app = filled_app(settings, dsn, 30)
    app.close()
    change = {
        "payload": "payload = overlay(payload placing '9' from 20 for 1)",
        "checksum": "checksum = repeat('0', 64)",
        "epoch": "epoch = epoch + 1",
    }[column]
    with psycopg.connect(dsn) as conn:
        conn.execute(f"UPDATE wal_records SET {change} WHERE shard_id = %s AND seq = 17", (SHARD,))
    recovering = make_shard_app(settings, SHARD, dsn=dsn)
    before = recovering.engine.state_hash()
    with pytest.raises(WALCorruptionError, match=r"shard shard-1 at seq 17") as caught:
        recovering.recover(from_scratch=True)
    assert caught.value.seq == 17 and caught.value.shard_id == SHARD
    # nothing was applied: the application keeps its previous state and still needs recovery
    assert recovering.engine.state_hash() == before and recovering.seq == 0
    assert recovering.needs_recovery
    recovering.close()


def test_altered_checkpoint_is_refused(settings: Settings, dsn: str) -> None:
    app = filled_app(settings, dsn, 12, checkpoint_every=5)
    app.close()
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE wal_checkpoints SET state = state || ' '::bytea WHERE seq = 10")
    recovering = make_shard_app(settings, SHARD, dsn=dsn)
    with pytest.raises(WALCorruptionError, match="seq 10: checkpoint checksum mismatch"):
        recovering.recover()
    recovering.close()


def test_migrations_go_up_and_down_on_an_empty_database(dsn: str) -> None:
    from alembic import command

    config = alembic_config(dsn)
    command.downgrade(config, "base")
    with psycopg.connect(dsn) as conn:
        tables = {
            r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        }
    assert tables <= {"alembic_version"}
    command.upgrade(config, "head")
    with psycopg.connect(dsn) as conn:
        tables = {
            r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        }
    assert {
        "exchange_events",
        "exchange_snapshots",
        "wal_records",
        "wal_heads",
        "wal_checkpoints",
    } <= tables
