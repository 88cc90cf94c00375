"""Event-store benchmarks: batched writer vs one transaction per command; replay and recovery."""

from __future__ import annotations

import itertools
import json
import os
import time
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from infra.bench.flow import generate_commands, steady_commands
from infra.bench.writer_load import drive
from infra.bootstrap import drop_database, make_shard_app, make_writer, migrate
from infra.cli.progress import Progress
from infra.settings import Settings


def scratch_dsn(settings: Settings, label: str) -> str:
    """A throw-away database on the configured server, named for this process."""
    url = urlsplit(settings.pg_dsn)
    return url._replace(path=f"/exdr_{label}_{os.getpid()}").geturl()


def _first_shard(settings: Settings) -> str:
    return next(iter(settings.shards()))


def run_store(settings: Settings, *, commands: int, seed: int = 1) -> dict[str, Any]:
    shard = _first_shard(settings)
    batched_dsn = scratch_dsn(settings, "bench_batched")
    naive_dsn = scratch_dsn(settings, "bench_naive")
    try:
        migrate(batched_dsn)
        migrate(naive_dsn)
        app = make_shard_app(settings, shard, dsn=batched_dsn)
        flow = list(generate_commands(shard, app.instruments, commands, seed=seed))
        app.recover()
        writer = make_writer(settings, app).start()
        with Progress("batched", len(flow)) as bar:
            stats = drive(writer, flow, in_flight=256, on_done=bar.update_to)
        writer.stop()
        batches = writer.batches
        app.close()

        naive = make_shard_app(settings, shard, dsn=naive_dsn)
        naive.recover()
        naive_flow = flow[: min(len(flow), 3000)]
        started = time.perf_counter()
        with Progress("naive", len(naive_flow)) as bar:
            for index, command in enumerate(naive_flow, 1):
                naive.execute_batch([command])
                bar.update_to(index)
        naive_seconds = time.perf_counter() - started
        naive.close()
    finally:
        drop_database(batched_dsn)
        drop_database(naive_dsn)
    per_second = stats.submitted / stats.seconds
    naive_per_second = len(naive_flow) / naive_seconds
    return {
        "commands": stats.submitted,
        "acked": stats.acked,
        "rejected_by_domain": stats.domain_errors,
        "failed": stats.failures,
        "seconds": round(stats.seconds, 3),
        "commands_per_second": round(per_second, 1),
        "ack_p50_ms": round(stats.percentile_ms(50), 3),
        "ack_p99_ms": round(stats.percentile_ms(99), 3),
        "mean_batch": round(stats.submitted / max(batches, 1), 1),
        "naive_commands": len(naive_flow),
        "naive_commands_per_second": round(naive_per_second, 1),
        "ratio": round(per_second / naive_per_second, 2),
    }


def named_dsn(settings: Settings, name: str) -> str:
    """A database on the configured server that outlives the process (`--keep-db NAME`)."""
    url = urlsplit(settings.pg_dsn)
    return url._replace(path=f"/exdr_bench_{name}").geturl()


def _kept_generation(dsn: str) -> dict[str, Any] | None:
    """What a kept database was generated with, from its comment (None: not generated)."""
    url = urlsplit(dsn)
    admin = url._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            (url.path.lstrip("/"),),
        ).fetchone()
    if row is None or not row[0]:
        return None
    try:
        found: dict[str, Any] = json.loads(row[0])
    except ValueError:
        return None
    return found


def _mark_generated(dsn: str, generation: dict[str, Any]) -> None:
    url = urlsplit(dsn)
    admin = url._replace(path="/postgres").geturl()
    name = url.path.lstrip("/")
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(name), sql.Literal(json.dumps(generation))
            )
        )


def _generate(settings: Settings, shard: str, dsn: str, events: int, seed: int) -> dict[str, Any]:
    """Drive one steady-state flow through the batched writer until `events` are stored (the
    open orders stay bounded, so the checkpoint a recovery starts from does not grow with N)."""
    migrate(dsn)
    app = make_shard_app(settings, shard, dsn=dsn)
    app.recover()
    writer = make_writer(settings, app)
    writer.batch_max = 500
    writer.start()
    flow = steady_commands(shard, app.instruments, seed=seed, prefix="g")
    with Progress("generate", events) as bar:
        while app.events_written < events:
            drive(writer, itertools.islice(flow, 20_000), in_flight=2000)
            bar.update_to(min(app.events_written, events))
    writer.stop()
    generation = {
        "requested": events,
        "seed": seed,
        "flow": "steady",
        "events": app.events_written,
        "records": app.seq,
        "live_hash": app.engine.state_hash(),
    }
    app.close()
    return generation


def run_replay(
    settings: Settings, *, events: int, seed: int = 1, keep_db: str | None = None
) -> dict[str, Any]:
    """Replay from scratch and recovery from the newest checkpoint, on `events` generated events.

    With `keep_db` the generated database is kept and reused by the next run with the same
    events and seed (its live state hash is kept in the database's comment).
    """
    shard = _first_shard(settings)
    dsn = named_dsn(settings, keep_db) if keep_db else scratch_dsn(settings, "bench_replay")
    try:
        generation = _kept_generation(dsn) if keep_db else None
        if generation is None or (
            generation.get("requested"),
            generation.get("seed"),
            generation.get("flow"),
        ) != (events, seed, "steady"):
            drop_database(dsn)
            generation = _generate(settings, shard, dsn, events, seed)
            if keep_db:
                _mark_generated(dsn, generation)
        written_events, head_seq = generation["events"], generation["records"]
        live_hash = generation["live_hash"]

        # CPU seconds too: on a shared machine the wall clock also measures the neighbours
        scratch = make_shard_app(settings, shard, dsn=dsn)
        cpu = time.process_time()
        with Progress("replay", head_seq) as bar:
            replay = scratch.recover(from_scratch=True, progress=bar.update_to)
        replay_cpu = time.process_time() - cpu
        scratch.close()
        recovering = make_shard_app(settings, shard, dsn=dsn)
        cpu = time.process_time()
        recovery = recovering.recover()
        recovery_cpu = time.process_time() - cpu
        recovering.close()
    finally:
        if not keep_db:
            drop_database(dsn)
    return {
        "events": written_events,
        "records": head_seq,
        "replay_seconds": round(replay.seconds, 3),
        "events_per_second": round(replay.events / replay.seconds, 1),
        "replay_cpu_seconds": round(replay_cpu, 3),
        "recovery_seconds": round(recovery.seconds, 3),
        "recovery_cpu_seconds": round(recovery_cpu, 3),
        "recovery_tail_records": recovery.records,
        "state_hash_matches": replay.state_hash == recovery.state_hash == live_hash,
    }
