"""Read models on real PostgreSQL and the real broker: rebuilt and streamed, exactly once.

A few thousand generated commands go through a ShardApp and its batched writer; the views are
then compared with the engine's live state (projections_match_engine). The streaming test runs
`exchange-dr projections run` as a real process on a topic of its own, feeds it duplicates, a
hole and a corrupt record, kills it with SIGKILL half-way and restarts it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from application.shard.app import ShardApp
from application.wal.records import WalRecord
from domain.engine import ShardEngine
from infra.bench.flow import generate_commands
from infra.bench.writer_load import drive
from infra.bootstrap import make_projector, make_shard_app, make_writer
from infra.settings import Settings
from projections.agents import ensure_wal_topics
from projections.read_models.check import projections_match_engine
from projections.read_models.confirmed import ConfirmedPoint, record_confirmed
from projections.read_models.models import TradeRow
from projections.read_models.projector import PROJECTION, ReadModelProjector

pytestmark = pytest.mark.integration

SHARD = "shard-1"
COMMANDS = 3000
ROOT = Path(__file__).resolve().parents[2]
EXE = Path(sys.executable).with_name("exchange-dr")


@pytest.fixture
def shard(settings: Settings, dsn: str) -> Iterator[ShardApp]:
    """A shard with COMMANDS generated commands committed through its writer."""
    app = make_shard_app(settings, SHARD, dsn=dsn)
    app.recover()
    writer = make_writer(settings, app).start()
    try:
        stats = drive(writer, generate_commands(SHARD, app.instruments, COMMANDS, seed=11))
    finally:
        writer.stop()
    assert stats.failures == 0
    assert app.seq > COMMANDS // 2
    try:
        yield app
    finally:
        app.close()


def _differences(projector: ReadModelProjector, engine: ShardEngine) -> list[str]:
    with projector.sessions() as session:
        return projections_match_engine(session, engine)


def _env(dsn: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "EXDR_PG_DSN": dsn, **extra}


def _rebuild(dsn: str, *extra: str) -> dict[str, object]:
    result = subprocess.run(
        [str(EXE), "projections", "rebuild", "--json", *extra],
        env=_env(dsn), cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_rebuild_stops_at_the_confirmed_point(
    settings: Settings, dsn: str, shard: ShardApp
) -> None:
    """What the node would project: nothing a failover can take back. No point recorded in
    this database: the views are emptied (they refill as the node confirms records)."""
    projector = make_projector(settings, dsn=dsn)
    summary = _rebuild(dsn)
    assert (summary["to"], summary["records"]) == ("confirmed", 0)
    assert f"{SHARD}:0" in str(summary["upto"]).split(",")
    assert projector.tracked(SHARD) == 0
    point = shard.seq - 100
    (record,) = shard.store.read_records(SHARD, point - 1, 1)
    record_confirmed(
        projector.sessions, ConfirmedPoint(SHARD, point, record.epoch, record.checksum)
    )
    summary = _rebuild(dsn)
    assert summary["records"] == point
    assert f"{SHARD}:{point}" in str(summary["upto"]).split(",")
    assert projector.tracked(SHARD) == point


def test_rebuild_gives_the_engine_state(settings: Settings, dsn: str, shard: ShardApp) -> None:
    summary = _rebuild(dsn, "--to", "head")
    assert summary["records"] == shard.seq
    assert summary["orders"] == shard.engine.counters()["next_priority"] - 1
    assert summary["trades"] == shard.engine.counters()["next_trade_id"] - 1 > 0

    projector = make_projector(settings, dsn=dsn)
    assert _differences(projector, shard.engine) == []
    assert projector.tracked(SHARD) == shard.seq

    # a shard-only rebuild over existing views, and a re-applied record, change nothing
    projector.rebuild([SHARD], everything=False)
    again = projector.apply(SHARD, shard.store.read_records(SHARD, shard.seq - 5, 5))
    assert (again.applied, again.duplicates) == (0, 5)
    assert _differences(projector, shard.engine) == []


def test_gap_is_filled_from_the_store_before_anything_after_it(
    settings: Settings, dsn: str, shard: ShardApp
) -> None:
    projector = make_projector(settings, dsn=dsn)
    records = list(shard.store.iter_records(SHARD, 0))
    head, tail = records[:100], records[150:]
    assert projector.apply(SHARD, head).tracked == 100
    report = projector.apply(SHARD, tail)
    assert report.filled_from_store == 50
    assert report.tracked == shard.seq
    assert _differences(projector, shard.engine) == []
    with projector.sessions() as session:
        trades = session.query(TradeRow).filter(TradeRow.shard == SHARD).count()
    assert trades == shard.engine.counters()["next_trade_id"] - 1


# -- the Faust projector as a real process ---------------------------------------------------


def _corrupt(record: WalRecord) -> dict[str, object]:
    wire = record.to_wire()
    wire["checksum"] = "0" * 64
    return wire


async def _publish(bootstrap: str, topic: str, messages: list[dict[str, object]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for message in messages:
            producer_key = str(message["shard_id"]).encode()
            await producer.send(topic, json.dumps(message).encode(), key=producer_key)
        await producer.flush()
    finally:
        await producer.stop()


class Projector:
    """`exchange-dr projections run` in a process of its own; stderr kept for the join time."""

    def __init__(self, dsn: str, prefix: str) -> None:
        self.log = Path(f"/tmp/exdr-projector-{prefix}-{uuid.uuid4().hex[:6]}.log")
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [str(EXE), "projections", "run", "--shard", SHARD],
            env=_env(dsn, EXDR_TOPIC_PREFIX=prefix, EXDR_VAR_DIR=f"/tmp/exdr-{prefix}"),
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.log.open("w"),
        )

    def joined_in(self, timeout: float = 20.0) -> float:
        """Seconds from spawn to the group join, as the worker logs it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"joined in ([0-9.]+) s", self.log.read_text())
            if found:
                return float(found.group(1))
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            time.sleep(0.05)
        raise AssertionError(f"no group join in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def _confirm(projector: ReadModelProjector, record: WalRecord) -> None:
    """What the region's node does once a majority holds `record`."""
    point = ConfirmedPoint(SHARD, record.seq, record.epoch, record.checksum)
    assert record_confirmed(projector.sessions, point)


def _wait_tracked(projector: ReadModelProjector, at_least: int, timeout: float) -> float:
    started = time.monotonic()
    while projector.tracked(SHARD) < at_least:
        if time.monotonic() - started > timeout:
            raise AssertionError(f"views at {projector.tracked(SHARD)}, wanted {at_least}")
        time.sleep(0.02)
    return time.monotonic() - started


def test_faust_projector_applies_the_stream_exactly_once(
    settings: Settings, dsn: str, shard: ShardApp
) -> None:
    prefix = f"exdr-test-{uuid.uuid4().hex[:10]}"
    topic = f"{prefix}.wal.{SHARD}"
    records = list(shard.store.iter_records(SHARD, 0))
    head = records[-1].seq
    hole, corrupt = records[len(records) // 3], records[len(records) // 2]
    stream: list[dict[str, object]] = []
    for record in records:
        if record is hole:
            continue  # never published: must come from the store
        stream.append(_corrupt(record) if record is corrupt else record.to_wire())
        if record.seq % 7 == 0:
            stream.append(record.to_wire())  # at-least-once: duplicates
    asyncio.run(ensure_wal_topics(dataclasses.replace(settings, topic_prefix=prefix), [SHARD]))
    half = len(stream) // 2
    asyncio.run(_publish(settings.kafka_bootstrap, topic, stream[:half]))

    projector = make_projector(settings, dsn=dsn)
    # the node confirmed a quarter of the records so far: nothing beyond is projected
    quarter = records[len(records) // 4]
    _confirm(projector, quarter)
    first = Projector(dsn, prefix)
    try:
        join_first = first.joined_in()
        _wait_tracked(projector, quarter.seq, timeout=30)
        time.sleep(0.3)  # records beyond the confirmed point stay held
        assert projector.tracked(SHARD) == quarter.seq
        first.kill()
    finally:
        first.stop()
    killed_at = projector.tracked(SHARD)
    assert killed_at == quarter.seq < head

    asyncio.run(_publish(settings.kafka_bootstrap, topic, stream[half:]))
    _confirm(projector, records[-1])
    second = Projector(dsn, prefix)
    try:
        join_second = second.joined_in()
        caught_up_in = _wait_tracked(projector, head, timeout=60)
        time.sleep(0.5)  # anything still in flight would show as a difference below
    finally:
        second.stop()
    log = second.log.read_text() + first.log.read_text()
    print(f"\nprojector group join: {join_first:.2f} s first start, {join_second:.2f} s "
          f"after SIGKILL; killed at seq {killed_at}/{head}; caught up in {caught_up_in:.2f} s")

    assert projector.tracked(SHARD) == head
    assert _differences(projector, shard.engine) == []
    assert f"shard={SHARD} seq={corrupt.seq}" in log, "the corrupt record is reported"
    assert "CRITICAL" in log
    assert join_first < 10 and join_second < 10, "the group forms in seconds, not 30 s"
    with projector.sessions() as session:
        tracked_rows = session.execute(
            TradeRow.__table__.select().where(TradeRow.shard == SHARD)
        ).all()
    assert len(tracked_rows) == shard.engine.counters()["next_trade_id"] - 1
    assert PROJECTION == "read_models"
