"""Before a promoted standby takes commands it fetches, from a survivor ahead of it (here a
witness, ahead of every standby), the records it lacks: verified and stored at their own seq."""

from __future__ import annotations

import asyncio
import dataclasses
from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

from application.replication.quorum import Position, ReplicaKind, ReplicaPosition
from infra.bench.flow import generate_commands
from infra.bench.writer_load import drive
from infra.bootstrap import drop_database, make_shard_app, make_writer, migrate
from infra.failover.quorum_promotion import decide, fetch_from
from infra.settings import Region, Settings
from projections.replication.replicator import Replicator
from tests.integration.conftest import scratch_dsn

SHARD = "shard-1"


class _Writer:
    def __init__(self, app: Any) -> None:
        self.app = app

    def query(self, fn: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_result(fn(self.app))
        return future


def test_a_standby_behind_the_witness_fetches_from_it(settings: Settings, dsn: str) -> None:
    leader = make_shard_app(settings, SHARD, dsn=dsn)
    leader.recover()
    writer = make_writer(settings, leader).start()
    drive(writer, generate_commands(SHARD, leader.instruments, 300, seed=3), in_flight=16)
    writer.stop()
    records = list(leader.store.iter_records(SHARD, 0))
    standby_dsn, witness_dsn = scratch_dsn("standby"), scratch_dsn("witness")
    for other in (standby_dsn, witness_dsn):
        migrate(other)
    apps: list[Any] = [leader]
    try:
        witness = make_shard_app(settings, SHARD, dsn=witness_dsn, log_only=True)
        witness.recover()
        witness.append_replicated(records)  # the witness confirmed the last records...
        standby = make_shard_app(settings, SHARD, dsn=standby_dsn)
        standby.recover()
        standby.append_replicated(records[:-7])  # ...the standby had not stored them yet
        apps += [witness, standby]

        me = ReplicaPosition("standby", ReplicaKind.FULL, Position(standby.epoch, standby.seq))
        ahead = ReplicaPosition(
            "witness", ReplicaKind.WITNESS, Position(witness.epoch, witness.seq)
        )
        decision = decide(me, [ahead], unhealthy_for_s=5, failover_after_s=5)
        assert decision.go and decision.sources == ("witness",)

        regions = (
            Region("standby", standby_dsn, "http://127.0.0.1:1"),
            Region("witness", witness_dsn, "http://127.0.0.1:2", ReplicaKind.WITNESS),
        )
        views = dataclasses.replace(settings, regions=regions)

        def open_store(region: str) -> Any:
            return make_shard_app(views, SHARD, dsn=views.region_named(region).pg_dsn)

        controller = SimpleNamespace(
            ctx=SimpleNamespace(open_store=open_store, region="standby"),
            shard_id=SHARD,
            app=standby,
            writer=_Writer(standby),
            replicator=Replicator(standby, standby.store),
            leader_views={},
            history=[],
            coord=SimpleNamespace(epochs=lambda shard: []),
        )
        assert asyncio.run(fetch_from(controller, "witness"))  # type: ignore[arg-type]
        assert standby.seq == witness.seq == len(records)
        assert standby.engine.state_hash() == leader.engine.state_hash()
        assert controller.replicator.primary is standby.store  # put back as it was
        apps += list(controller.leader_views.values())
    finally:
        for app in apps:
            app.close()
        for other in (standby_dsn, witness_dsn):
            drop_database(other)
