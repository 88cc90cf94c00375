"""A witness keeps a shard's WAL and nothing else: records stored at their seq and epoch, no hot
state, no checkpoints, and a restart that reads only where the WAL ends."""

from __future__ import annotations

import dataclasses

from domain.engine import ShardEngine
from infra.bench.flow import generate_commands
from infra.bench.writer_load import drive
from infra.bootstrap import drop_database, make_shard_app, make_writer, migrate
from infra.settings import Settings
from tests.integration.conftest import scratch_dsn

SHARD = "shard-1"


def test_a_witness_stores_without_applying_and_recovers_its_head(
    settings: Settings, dsn: str
) -> None:
    settings = dataclasses.replace(settings, checkpoint_every=100)
    leader = make_shard_app(settings, SHARD, dsn=dsn)
    leader.recover()
    writer = make_writer(settings, leader).start()
    drive(writer, generate_commands(SHARD, leader.instruments, 400, seed=7), in_flight=16)
    writer.stop()
    records = list(leader.store.iter_records(SHARD, 0))
    head, rest = records[:300], records[300:]
    other = scratch_dsn("witness")
    migrate(other)
    try:
        witness = make_shard_app(settings, SHARD, dsn=other, log_only=True)
        witness.recover()
        empty = ShardEngine(SHARD, witness.instruments).state_hash()
        for start in range(0, len(head), 41):
            witness.append_replicated(head[start : start + 41])
        # restarted between two runs: its chain goes on from its stored head
        witness.close()
        witness = make_shard_app(settings, SHARD, dsn=other, log_only=True)
        witness.recover()
        assert witness.chain_checksum == head[-1].checksum
        witness.append_replicated(rest)
        assert witness.seq == len(records) == leader.seq
        assert witness.engine.state_hash() == empty  # nothing applied
        assert witness.store.checkpoint_seqs(SHARD) == []
        assert [r.seq for r in witness.store.iter_records(SHARD, 0)] == [r.seq for r in records]
        assert witness.store.head(SHARD).seq == leader.seq
        restarted = make_shard_app(settings, SHARD, dsn=other, log_only=True)
        report = restarted.recover()
        assert (report.seq, report.records, restarted.seq) == (leader.seq, 0, leader.seq)
        for app in (witness, restarted):
            app.close()
    finally:
        drop_database(other)
        leader.close()
