"""Event-store benchmarks: batched writer vs one transaction per command; replay and recovery."""

from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import urlsplit

from infra.bootstrap import drop_database, make_shard_app, make_writer, migrate
from infra.flow import generate_commands
from infra.load import drive
from infra.progress import Progress
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
            stats = drive(writer, flow, in_flight=256, on_done=bar.update)
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
                bar.update(index)
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


def run_replay(settings: Settings, *, events: int, seed: int = 1) -> dict[str, Any]:
    shard = _first_shard(settings)
    dsn = scratch_dsn(settings, "bench_replay")
    try:
        migrate(dsn)
        app = make_shard_app(settings, shard, dsn=dsn)
        app.recover()
        writer = make_writer(settings, app)
        writer.batch_max = 500
        writer.start()
        chunk = 0
        with Progress("generate", events) as bar:
            while app.events_written < events:
                flow = generate_commands(
                    shard, app.instruments, 20_000, seed=seed + chunk, prefix=f"g{chunk}-"
                )
                drive(writer, flow, in_flight=2000)
                chunk += 1
                bar.update(min(app.events_written, events))
        writer.stop()
        written_events, head_seq = app.events_written, app.seq
        live_hash = app.engine.state_hash()
        app.close()

        # CPU seconds too: on a shared machine the wall clock also measures the neighbours
        scratch = make_shard_app(settings, shard, dsn=dsn)
        cpu = time.process_time()
        with Progress("replay", head_seq) as bar:
            replay = scratch.recover(from_scratch=True, progress=bar.update)
        replay_cpu = time.process_time() - cpu
        scratch.close()
        recovering = make_shard_app(settings, shard, dsn=dsn)
        cpu = time.process_time()
        recovery = recovering.recover()
        recovery_cpu = time.process_time() - cpu
        recovering.close()
    finally:
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
