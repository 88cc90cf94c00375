"""kill -9 in the middle of batched writes: every acknowledged command survives, whole."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from application.wal.records import WalRecord
from domain.account import Account
from domain.order import Order
from infra.bootstrap import make_shard_app
from infra.settings import Settings

pytestmark = pytest.mark.integration

SHARD = "shard-1"
ROOT = Path(__file__).resolve().parents[2]


def test_sigkill_during_batched_writes_loses_no_acknowledged_command(
    settings: Settings, dsn: str
) -> None:
    worker = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("crash_worker.py")), dsn, SHARD, "200000"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert worker.stdout is not None
    acks: list[tuple[int, str, str, str]] = []
    try:
        for line in worker.stdout:
            if line.startswith("ACK"):
                _, seq, kind, account, label = line.split()
                acks.append((int(seq), kind, account, label))
                if len(acks) >= 3000:
                    break
        worker.send_signal(signal.SIGKILL)
    finally:
        worker.kill()
        worker.wait(10)
    assert len(acks) >= 3000

    with psycopg.connect(dsn) as conn:
        count, top = conn.execute(
            "SELECT count(*), coalesce(max(seq), 0) FROM wal_records WHERE shard_id = %s",
            (SHARD,),
        ).fetchone()  # type: ignore[misc]
        (stored_events,) = conn.execute("SELECT count(*) FROM exchange_events").fetchone()  # type: ignore[misc]
        keys = {
            row[0]
            for row in conn.execute(
                "SELECT command_key FROM wal_records WHERE command_key IS NOT NULL"
            )
        }
    assert count == top, "the WAL is dense after the crash"
    assert max(seq for seq, *_ in acks) <= top, "every acknowledged seq is stored"

    app = make_shard_app(settings, SHARD, dsn=dsn)
    report = app.recover()
    assert report.seq == top
    records = list(app.store.iter_records(SHARD, 0))
    assert sum(len(r.events) for r in records) == stored_events, "no command half-applied"
    for _seq, kind, account, label in acks:
        if kind == "PlaceOrder":
            order_id = Order.create_id(Account.create_id(SHARD, account), label)
            assert str(order_id) in keys, f"acknowledged order {label} missing"
    # dense from 1 and checksummed (iter_records verifies), and each acknowledged seq holds
    # the very command that was acknowledged with it
    assert [r.seq for r in records] == list(range(1, top + 1))
    by_seq: dict[int, WalRecord] = {r.seq: r for r in records}
    for seq, kind, account, label in acks:
        assert by_seq[seq].command_type == kind, f"seq {seq} holds another command"
        if kind == "PlaceOrder":
            order_id = Order.create_id(Account.create_id(SHARD, account), label)
            assert by_seq[seq].command_key == str(order_id), f"seq {seq} is not order {label}"
    scratch = make_shard_app(settings, SHARD, dsn=dsn)
    assert scratch.recover(from_scratch=True).state_hash == report.state_hash
    app.close()
    scratch.close()
