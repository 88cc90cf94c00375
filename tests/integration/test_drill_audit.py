"""The post-drill audit on real PostgreSQL: a shard's aggregates agree with its trade log."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from decimal import Decimal

import psycopg
import pytest

from application.shard.app import Outcome, ShardApp
from application.wal.records import WALCorruptionError
from domain.commands import CancelOrder, Command, Deposit, PlaceOrder, Withdraw
from domain.errors import DomainError
from domain.values import OrderType, Side, TimeInForce
from infra.bench.flow import generate_commands
from infra.bootstrap import make_shard_app
from infra.drills.audit import audit_shard
from infra.settings import Settings

pytestmark = pytest.mark.integration

SHARD = "shard-1"
BTC, ETH = "BTCUSDT", "ETHUSDT"
PRICE = 500_000


def run(app: ShardApp, commands: Sequence[Command], batch: int = 100) -> int:
    """Execute in batches like the writer does; returns how many trades were committed."""
    trades = 0
    for start in range(0, len(commands), batch):
        for result in app.execute_batch(commands[start : start + batch]):
            if isinstance(result, Outcome) and result.result is not None:
                trades += len(result.result.trades)
            elif isinstance(result, Exception) and not isinstance(result, DomainError):
                raise result
    return trades


def store_fingerprint(dsn: str) -> tuple[object, ...]:
    with psycopg.connect(dsn) as conn:
        return tuple(
            conn.execute(query).fetchone()
            for query in (
                "SELECT count(*), coalesce(max(seq), 0) FROM wal_records",
                "SELECT count(*) FROM exchange_events",
                "SELECT count(*) FROM exchange_snapshots",
                "SELECT count(*), coalesce(max(seq), 0) FROM wal_checkpoints",
                "SELECT seq, epoch FROM wal_heads",
            )
        )


def test_crossing_orders_audit_clean_and_nothing_is_written(settings: Settings, dsn: str) -> None:
    app = make_shard_app(settings, SHARD, dsn=dsn)
    app.recover()
    sell = PlaceOrder("alice", "a1", BTC, Side.SELL, OrderType.LIMIT, 4, PRICE)
    trades = run(
        app,
        [
            Deposit("alice", Decimal("100000")),
            Deposit("bob", Decimal("100000")),
            Deposit("carol", Decimal("100000.12345678")),
            sell,
            PlaceOrder("bob", "b1", BTC, Side.BUY, OrderType.LIMIT, 10, PRICE + 5),  # partial
            PlaceOrder("carol", "c1", BTC, Side.SELL, OrderType.LIMIT, 9, PRICE),  # 6 + rest 3
            PlaceOrder("alice", "a2", BTC, Side.BUY, OrderType.MARKET, 8),  # alice flips long
            PlaceOrder("carol", "c2", ETH, Side.SELL, OrderType.LIMIT, 5, 300_000),
            PlaceOrder("bob", "b2", ETH, Side.BUY, OrderType.LIMIT, 7, 300_010, TimeInForce.IOC),
            PlaceOrder("bob", "b3", BTC, Side.SELL, OrderType.LIMIT, 2, PRICE + 900),
            Withdraw("alice", Decimal("10")),
        ],
        batch=4,
    )
    resting = app.engine.open_orders()
    assert resting, "something rests, so cancel it"
    order = resting[0]
    run(app, [CancelOrder(order.owner, order.id)])
    state_hash = app.engine.state_hash()
    app.close()
    assert trades == 4

    before = store_fingerprint(dsn)
    result = audit_shard(dsn, SHARD)
    assert store_fingerprint(dsn) == before, "the audit wrote to the store"
    json.dumps(result)
    assert result["mismatches"] == []
    assert result["trades"] == trades
    assert result["accounts"] == 4  # alice, bob, carol and the fee account
    assert result["positions"] == 5  # alice, bob, carol in BTC; bob, carol in ETH
    reopened = make_shard_app(settings, SHARD, dsn=dsn)
    assert reopened.recover(from_scratch=True).state_hash == state_hash
    reopened.close()


def test_generated_flow_across_checkpoints_audits_clean(settings: Settings, dsn: str) -> None:
    app = make_shard_app(
        dataclasses.replace(settings, checkpoint_every=300, snapshot_every=20), SHARD, dsn=dsn
    )
    app.recover()
    commands = list(generate_commands(SHARD, app.instruments, 1500, seed=11, accounts=12))
    trades = run(app, commands)
    app.close()
    assert trades > 100

    result = audit_shard(dsn, SHARD)
    assert result["mismatches"] == []
    assert result["trades"] == trades
    assert result["seq"] > 1000


def test_a_corrupt_record_stops_the_audit_naming_shard_and_seq(
    settings: Settings, dsn: str
) -> None:
    app = make_shard_app(settings, SHARD, dsn=dsn)
    app.recover()
    run(app, [Deposit("alice", Decimal("5")), Deposit("bob", Decimal("7"))])
    app.close()
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "UPDATE wal_records SET payload = overlay(payload placing '\\xff'::bytea from 30) "
            "WHERE shard_id = %s AND seq = 2",
            (SHARD,),
        )
    with pytest.raises(WALCorruptionError, match=f"shard {SHARD} at seq 2"):
        audit_shard(dsn, SHARD)
