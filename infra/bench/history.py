"""`bench history`: what a start costs on a shard with a long history.

A shard gets N records (the replay benchmark's generated flow, through the batched writer, with
its checkpoints); the archiver moves what the retention window lets go (timed); then
`exchange-dr serve` starts on it and the clock runs until its first command is accepted and
until a listing answers 200; its RSS is read then. With `keep_db` the generated and archived
history is kept (database exdr_bench_NAME, archive under EXDR_VAR_DIR) and reused by the next
run with the same records and seed; the archive timing is the one of the run that archived.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
from psycopg import sql

from infra.api.keys import KeyStore
from infra.bench.api import _free_port
from infra.bench.flow import generate_commands
from infra.bench.store import (
    _first_shard,
    _kept_generation,
    _mark_generated,
    named_dsn,
    scratch_dsn,
)
from infra.bench.writer_load import drive
from infra.bootstrap import drop_database, make_shard_app, make_writer, migrate
from infra.cli.progress import Progress
from infra.settings import REPO_ROOT, Settings
from infra.wal.archive import SegmentArchive
from infra.wal.archiver import Archiver
from infra.wal.retention_settings import ArchiveSettings

ACCOUNT = "bench-history"
START_TIMEOUT_S = 900.0


def _generate(settings: Settings, shard: str, dsn: str, records: int, seed: int) -> dict[str, Any]:
    """Drive generated commands through the batched writer until `records` are stored."""
    migrate(dsn)
    app = make_shard_app(settings, shard, dsn=dsn)
    app.recover()
    writer = make_writer(settings, app)
    writer.batch_max = 500
    writer.start()
    chunk = 0
    with Progress("generate", records) as bar:
        while app.seq < records:
            size = min(20_000, max(1000, records - app.seq))
            flow = generate_commands(
                shard, app.instruments, size, seed=seed + chunk, prefix=f"h{chunk}-"
            )
            drive(writer, flow, in_flight=2000)
            chunk += 1
            bar.update_to(min(app.seq, records), records)
    writer.stop()
    checkpointer = app.background_checkpoint
    if checkpointer is not None:
        checkpointer.wait(120)
    generation = {"requested": records, "seed": seed, "records": app.seq}
    app.close()
    return generation


def _archive(dsn: str, shard: str, config: ArchiveSettings) -> dict[str, Any]:
    archiver = Archiver(dsn, SegmentArchive(config.url), config.policy)
    cpu = time.process_time()
    run = archiver.run(shard, max_segments=1_000_000)
    cpu = time.process_time() - cpu
    return {
        # this process's CPU only (the server's share of COPY and DELETE is not in it): on a
        # shared machine the wall clock also measures the neighbours
        "archive_cpu_seconds": round(cpu, 3),
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
                    if listings is None:
                        r = http.get("/v1/orders", params={"limit": 10}, headers=headers)
                        if r.status_code == 200:
                            listings = time.perf_counter() - started
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)
            rss = _rss_mb(server.pid)
            cpu = _cpu_seconds(server.pid)
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
    }


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
    settings: Settings, *, records: int, seed: int = 1, keep_db: str | None = None
) -> dict[str, Any]:
    """The benchmark's one JSON object.

    The generated history stays as it was generated (kept with `keep_db`); each run archives
    and starts a copy of it, so every run times the archiving too.
    """
    shard = _first_shard(settings)
    template = named_dsn(settings, keep_db) if keep_db else scratch_dsn(settings, "bench_hist")
    dsn = scratch_dsn(settings, "bench_history_run")
    config = ArchiveSettings.from_env(settings, dsn)
    try:
        generation = _kept_generation(template) if keep_db else None
        if generation is None or (generation.get("requested"), generation.get("seed")) != (
            records,
            seed,
        ):
            drop_database(template)
            generation = _generate(settings, shard, template, records, seed)
            store = KeyStore(template)
            store.create_account(ACCOUNT)
            generation["token"] = store.create_key(ACCOUNT).token
            store.close()
            if keep_db:
                _mark_generated(template, generation)
        _clone(template, dsn)
        shutil.rmtree(config.url, ignore_errors=True)
        archived = _archive(dsn, shard, config)
        with psycopg.connect(dsn) as conn:
            row = conn.execute(
                "SELECT count(*) FROM wal_records WHERE shard_id = %s", (shard,)
            ).fetchone()
        live = int(row[0]) if row else 0
        timings = _start_and_time(settings, dsn, shard, generation["token"], config.url)
    finally:
        drop_database(dsn)
        shutil.rmtree(config.url, ignore_errors=True)
        if not keep_db:
            drop_database(template)
    return {
        "records": generation["records"],
        "retain_records": config.policy.retain_records,
        "live_wal_records": live,
        **timings,
        **archived,
    }
