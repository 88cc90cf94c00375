"""`bench history`: what a start costs on a shard with a long history.

A shard gets N records (the replay benchmark's generated flow, through the batched writer, with
its checkpoints); the archiver moves what the retention window lets go (timed); then
`exchange-dr serve` starts on it and the clock runs until its first command is accepted and
until a listing answers 200; its RSS is read then. With `keep_db` the generated and archived
history is kept (database exdr_bench_NAME, archive under EXDR_VAR_DIR) and reused by the next
run with the same records and seed; the archive timing is the one of the run that archived.
"""

from __future__ import annotations

import gc
import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
from psycopg import sql

from application.shard.app import PreparedBatch, ShardApp
from infra.api.keys import KeyStore
from infra.bench.api import _free_port
from infra.bench.flow import steady_commands
from infra.bench.store import (
    _first_shard,
    _kept_generation,
    _mark_generated,
    named_dsn,
    scratch_dsn,
)
from infra.bootstrap import drop_database, make_projector, make_shard_app, migrate
from infra.cli.progress import Progress
from infra.settings import REPO_ROOT, Settings
from infra.wal.archive import SegmentArchive
from infra.wal.archiver import Archiver
from infra.wal.retention_settings import ArchiveSettings
from projections.read_models.projector import ReadModelProjector

ACCOUNT = "bench-history"
FLOW = "steady, projected"  # what a kept history was generated with; another is regenerated
RETAIN_RECORDS = 100_000  # the benchmark's window: a backlog to archive from 200,000 on
START_TIMEOUT_S = 900.0


GENERATE_BATCH = 5000  # commands per in-process batch: one COPY transaction each


def _generate(settings: Settings, shard: str, dsn: str, records: int, seed: int) -> dict[str, Any]:
    """Run one steady-state flow through the shard application until `records` are stored: the
    open orders stay bounded however long the history (a market's day, not a filling book).

    The commands go through the leader's own write path (`prepare`, then `commit`: the engine,
    the sealed and signed hash chain, idempotency keys, snapshots, checkpoints), in batches far
    larger than a live writer's and with no writer thread, futures or HTTP in between: the
    batch size changes how many records share a transaction, not what is stored. The commit of
    one batch runs while the next is prepared, as the writer pipelines them. Each committed
    batch is then applied to the read models in a transaction of its own, as a region's
    projector applies the records it receives, so a node started on the history finds it
    projected up to the head and indexes no tail.
    """
    migrate(dsn)
    app = make_shard_app(settings, shard, dsn=dsn)
    app.recover()
    projector = make_projector(settings, dsn=dsn)
    flow = steady_commands(shard, app.instruments, seed=seed, prefix="h")
    started = time.perf_counter()
    committing: Future[None] | None = None
    with (
        ThreadPoolExecutor(1, thread_name_prefix="bench-commit") as pool,
        Progress("generate", records) as bar,
    ):
        while app.seq < records:
            size = min(GENERATE_BATCH, max(100, records - app.seq))
            batch = app.prepare(list(itertools.islice(flow, size)))
            if committing is not None:
                committing.result()
            committing = pool.submit(_commit_and_project, app, projector, shard, batch)
            bar.update_to(min(app.seq, records), records)
            if app.seq // 100_000 != (app.seq - len(batch.records)) // 100_000:
                _say("generate", min(app.seq, records), records, started)
        if committing is not None:
            committing.result()
    projected = projector.tracked(shard)
    if projected != app.seq:
        raise RuntimeError(f"bench history: read models at {projected}, WAL at {app.seq}")
    generation = {
        "requested": records,
        "seed": seed,
        "flow": FLOW,
        "records": app.seq,
        "projected": projected,
        "open_orders": len(app.engine.open_orders()),
        "state_hash": app.engine.state_hash(),
        "generate_seconds": round(time.perf_counter() - started, 1),
    }
    _say("generate", app.seq, records, started)
    app.close()
    _close_projector(projector)
    return generation


def _close_projector(projector: ReadModelProjector) -> None:
    """Its sessions' engine and its own WAL store's pool: the database is copied next, which
    PostgreSQL refuses while a connection to it is open."""
    projector.sessions.kw["bind"].dispose()
    datastore = getattr(projector.store, "datastore", None)
    if datastore is not None:
        datastore.close()
    gc.collect()  # a connection of a pool closed with its recorder lingers until collected


def _commit_and_project(
    app: ShardApp, projector: ReadModelProjector, shard: str, batch: PreparedBatch
) -> None:
    """One prepared batch made durable, then projected; a failed commit stops the generation
    (what the benchmark measures is a history stored whole)."""
    app.commit(batch)
    if batch.failed:
        raise RuntimeError(f"bench history: a generated batch was not stored at seq {app.seq}")
    projector.apply(shard, batch.records)


def _say(step: str, done: int, total: int, started: float) -> None:
    """A progress line on stderr (also when stderr is a file: a long run is watched there)."""
    elapsed = time.perf_counter() - started
    rate = done / elapsed if elapsed > 0 else 0.0
    print(
        f"bench history: {step} {done}/{total} records, {elapsed:.1f}s, {rate:.0f}/s",
        file=sys.stderr,
        flush=True,
    )


class _ServerCpu:
    """CPU seconds of the database's server processes serving one database, sampled while
    they live (readable only where the server runs on this machine; None elsewhere)."""

    def __init__(self, admin_dsn: str, database: str) -> None:
        self._admin = admin_dsn
        self._database = database
        self._seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._readable = True
        self._thread = threading.Thread(target=self._poll, name="bench-server-cpu", daemon=True)

    def __enter__(self) -> _ServerCpu:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def seconds(self) -> float | None:
        return round(sum(self._seen.values()), 3) if self._readable and self._seen else None

    def _poll(self) -> None:
        with psycopg.connect(self._admin, autocommit=True, connect_timeout=5) as conn:
            while not self._stop.is_set():
                rows = conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s", (self._database,)
                ).fetchall()
                for (pid,) in rows:
                    try:
                        self._seen[int(pid)] = _cpu_seconds(int(pid))
                    except (OSError, IndexError, ValueError):
                        self._readable = False
                self._stop.wait(0.1)  # what a backend spends after its last sample is lost


def _archive(dsn: str, shard: str, config: ArchiveSettings, backlog: int) -> dict[str, Any]:
    archiver = Archiver(dsn, SegmentArchive(config.url), config.policy)
    admin = urlsplit(dsn)._replace(path="/postgres").geturl()
    cpu = time.process_time()
    started = time.perf_counter()
    with _ServerCpu(admin, urlsplit(dsn).path.lstrip("/")) as server:
        run = archiver.run(
            shard,
            max_segments=1_000_000,
            progress=lambda done: _say("archive", done, backlog, started),
        )
    cpu = time.process_time() - cpu
    both = None if server.seconds is None else cpu + server.seconds
    return {
        # CPU of this process and of the database's processes serving it: on a shared machine
        # the wall clock also measures the neighbours, the CPU seconds do not
        "archive_cpu_seconds": round(cpu, 3),
        "archive_server_cpu_seconds": server.seconds,
        "archived_records_per_cpu_second": round(run.records / both, 1)
        if run.records and both
        else None,
        "archived_records": run.records,
        "archive_segments": run.segments,
        "archive_seconds": round(run.seconds, 3),
        "archived_records_per_second": round(run.records / run.seconds, 1)
        if run.records and run.seconds
        else None,
    }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _start_and_time(
    settings: Settings, dsn: str, shard: str, token: str, archive_url: str
) -> dict[str, Any]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    symbol = settings.shards()[shard][0]
    env = {
        **os.environ,
        "EXDR_PG_DSN": dsn,
        "EXDR_API_LEADS": "all",
        "EXDR_ARCHIVE_URL": archive_url,
        "PYTHONPATH": str(REPO_ROOT),
    }
    started = time.perf_counter()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "infra.cli.main",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=REPO_ROOT,
        env=env,
    )
    first_command = listings = None
    headers = {"Authorization": f"Bearer {token}"}
    order = {
        "symbol": symbol,
        "side": "BUY",
        "price": "1",
        "quantity": "0.001",
        "client_order_id": f"first-{time.time_ns()}",
        "post_only": True,
    }
    try:
        with httpx.Client(base_url=url, timeout=5) as http:
            deadline = started + START_TIMEOUT_S
            while (first_command is None or listings is None) and time.perf_counter() < deadline:
                if server.poll() is not None:
                    raise RuntimeError(f"serve exited with {server.returncode}")
                try:
                    if first_command is None:
                        r = http.post(
                            "/v1/deposits",
                            json={"amount": "1000000", "shard": shard},
                            headers=headers,
                        )
                        if r.status_code in (200, 201):
                            first_command = time.perf_counter() - started
                            http.post("/v1/orders", json=order, headers=headers)
                        elif r.status_code in (400, 401, 403, 404, 422):
                            # refused, not still starting: waiting would only time out
                            raise RuntimeError(f"the first command was refused: {r.text}")
                    if listings is None:
                        r = http.get("/v1/orders", params={"limit": 10}, headers=headers)
                        if r.status_code == 200:
                            listings = time.perf_counter() - started
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)
            rss = _rss_mb(server.pid)
            cpu = _cpu_seconds(server.pid)
            load = os.getloadavg()[0]
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    if first_command is None or listings is None:
        raise RuntimeError(f"serve did not answer within {START_TIMEOUT_S:.0f}s")
    return {
        "first_command_seconds": round(first_command, 3),
        "listings_ready_seconds": round(listings, 3),
        "rss_mb": rss,
        "start_cpu_seconds": cpu,  # the server's CPU until its listings answered
        # the machine's 1-minute load then: on a shared machine the wall clock measures it too
        "start_load_average": round(load, 2),
    }


def _prepare(template: str, generation: dict[str, Any]) -> dict[str, Any]:
    """Once per generated history: a key that may deposit (the first command is a deposit),
    and a vacuum, as autovacuum would long have done to records old enough to be archived
    (the archiver then reads settled pages, not a freshly written table)."""
    store = KeyStore(template)
    if not store.account_exists(ACCOUNT):
        store.create_account(ACCOUNT)
    token = store.create_key(ACCOUNT, funding=True).token
    store.close()
    with psycopg.connect(template, autocommit=True, connect_timeout=10) as conn:
        conn.execute("VACUUM (ANALYZE) wal_records")
    return {**generation, "funding_token": token, "vacuumed": True}


def _clone(template: str, dsn: str) -> None:
    """A copy of the generated database for one run (archiving changes it)."""
    drop_database(dsn)
    admin = urlsplit(dsn)._replace(path="/postgres").geturl()
    source = urlsplit(template).path.lstrip("/")
    target = urlsplit(dsn).path.lstrip("/")
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(target), sql.Identifier(source)
            )
        )


def run_history(
    settings: Settings,
    *,
    records: int,
    seed: int = 1,
    keep_db: str | None = None,
    retain_records: int = RETAIN_RECORDS,
) -> dict[str, Any]:
    """The benchmark's one JSON object.

    The generated history stays as it was generated (kept with `keep_db`); each run archives
    and starts a copy of it, so every run times the archiving too. The newest `retain_records`
    stay live, the rest is the backlog the archiver moves before the node starts.
    """
    if records < 1 or retain_records < 0:
        raise ValueError("bench history: records >= 1 and retain_records >= 0")
    shard = _first_shard(settings)
    template = named_dsn(settings, keep_db) if keep_db else scratch_dsn(settings, "bench_hist")
    dsn = scratch_dsn(settings, "bench_history_run")
    config = ArchiveSettings.from_env(settings, dsn)
    config = replace(config, policy=replace(config.policy, retain_records=retain_records))
    try:
        generation = _kept_generation(template) if keep_db else None
        if generation is None or (
            generation.get("requested"),
            generation.get("seed"),
            generation.get("flow"),
        ) != (records, seed, FLOW):
            drop_database(template)
            generation = _generate(settings, shard, template, records, seed)
            if keep_db:
                _mark_generated(template, generation)
        else:
            print(
                f"bench history: reusing {generation['records']} generated records of {template}",
                file=sys.stderr,
                flush=True,
            )
        if not generation.get("funding_token") or not generation.get("vacuumed"):
            generation = _prepare(template, generation)
            if keep_db:
                _mark_generated(template, generation)
        _clone(template, dsn)
        migrate(dsn)  # a history kept by an older version: the schema this one writes and reads
        shutil.rmtree(config.url, ignore_errors=True)
        archived = _archive(dsn, shard, config, max(0, generation["records"] - retain_records))
        with psycopg.connect(dsn) as conn:
            row = conn.execute(
                "SELECT count(*) FROM wal_records WHERE shard_id = %s", (shard,)
            ).fetchone()
            # eventsourcing's rows left with their records (those written before migration
            # 0009 name no record and stay: a history kept by an older version keeps them)
            stored = conn.execute(
                "SELECT (SELECT count(*) FROM exchange_events), "
                "(SELECT count(*) FROM exchange_snapshots)"
            ).fetchone()
        live = int(row[0]) if row else 0
        live_events, live_snapshots = (int(stored[0]), int(stored[1])) if stored else (0, 0)
        print("bench history: starting the node", file=sys.stderr, flush=True)
        timings = _start_and_time(settings, dsn, shard, generation["funding_token"], config.url)
        print(
            f"bench history: first command after {timings['first_command_seconds']}s, "
            f"listings after {timings['listings_ready_seconds']}s, rss {timings['rss_mb']} MB",
            file=sys.stderr,
            flush=True,
        )
    finally:
        drop_database(dsn)
        shutil.rmtree(config.url, ignore_errors=True)
        if not keep_db:
            drop_database(template)
    return {
        "records": generation["records"],
        "flow": generation.get("flow"),
        "generated_open_orders": generation.get("open_orders"),
        "generate_seconds": generation.get("generate_seconds"),  # of the run that generated
        "retain_records": config.policy.retain_records,
        "live_wal_records": live,
        "live_event_rows": live_events,
        "live_snapshot_rows": live_snapshots,
        **timings,
        **archived,
    }
