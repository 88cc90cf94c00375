"""`bench api`: real HTTP load on a served facade (server and clients in separate processes).

A scratch database is migrated, accounts and keys are created, `exchange-dr serve` starts as a
subprocess, and client processes (infra/bench/http_load.py, N requests in flight each) place limit
orders around a mid price on every symbol for the measured seconds. Commits are durable (fsync
on, one transaction per writer batch). Latency is client-side: from send to the full response.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx

from infra.api.keys import KeyStore
from infra.bench.http_load import MIDS, OrderRequests
from infra.bench.store import scratch_dsn
from infra.bootstrap import drop_database, migrate
from infra.replication.rawhttp import ConnectionPool
from infra.settings import REPO_ROOT, Settings


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _drive(
    url: str,
    tokens: list[str],
    symbols: list[str],
    in_flight: int,
    warmup_s: float,
    seconds: float,
    seed: int,
) -> dict[str, Any]:
    """Closed loop: `in_flight` requests outstanding at all times, each on its own connection."""
    requests = OrderRequests(url, tokens, symbols, f"b{seed}-{uuid.uuid4().hex[:6]}", seed)
    pool = ConnectionPool(requests.host, requests.port, in_flight)
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter() + warmup_s
    stop = start + seconds
    counter = iter(range(1 << 62))

    async def worker() -> None:
        nonlocal errors
        while True:
            sent = time.perf_counter()
            if sent >= stop:
                return
            status = await pool.send(requests.build(next(counter)))
            done = time.perf_counter()
            if sent >= start:
                if status in (200, 201):
                    latencies.append(done - sent)
                else:
                    errors += 1

    try:
        await asyncio.gather(*(worker() for _ in range(in_flight)))
    finally:
        pool.close()
    return {"latencies": latencies, "errors": errors}


async def _drive_rate(
    url: str,
    tokens: list[str],
    symbols: list[str],
    rate: float,
    max_in_flight: int,
    seconds: float,
    seed: int,
) -> dict[str, Any]:
    """Open loop: one order every 1/rate s whatever the answers do; latency runs from each
    order's scheduled send time, so a stalled server shows up as latency, not as a lower
    offered rate (no coordinated omission). Orders that would exceed `max_in_flight` count
    as errors."""
    requests = OrderRequests(url, tokens, symbols, f"r{seed}-{uuid.uuid4().hex[:6]}", seed)
    pool = ConnectionPool(requests.host, requests.port, max_in_flight)
    latencies: list[float] = []
    errors = 0

    async def one(request: bytes, due: float) -> None:
        nonlocal errors
        status = await pool.send(request)
        if status in (200, 201):
            latencies.append(time.perf_counter() - due)
        else:
            errors += 1

    tasks = []
    start = time.perf_counter() + 0.2
    total = int(rate * seconds)
    try:
        for n in range(total):
            due = start + n / rate
            request = requests.build(n)
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if pool.exhausted:
                errors += 1
                continue
            tasks.append(asyncio.create_task(one(request, due)))
        await asyncio.gather(*tasks)
    finally:
        pool.close()
    return {"latencies": latencies, "errors": errors, "offered": total}


def _use_uvloop() -> None:
    """Client processes run on uvloop: the load generator should cost as little as it can."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency
        pass


def _rate_process(
    args: tuple[str, list[str], list[str], float, int, float, int],
) -> dict[str, Any]:
    url, tokens, symbols, rate, max_in_flight, seconds, seed = args
    _use_uvloop()
    return asyncio.run(_drive_rate(url, tokens, symbols, rate, max_in_flight, seconds, seed))


def drive_at_rate(
    url: str,
    tokens: list[str],
    symbols: list[str],
    *,
    rate: float,
    seconds: float,
    clients: int = 2,
    max_in_flight: int = 256,
) -> dict[str, Any]:
    """Orders at a fixed total rate from `clients` processes; latencies and errors merged."""
    jobs = [
        (url, tokens, symbols, rate / clients, max(1, max_in_flight // clients), seconds, seed)
        for seed in range(1, clients + 1)
    ]
    context = multiprocessing.get_context("spawn")
    with context.Pool(clients) as pool:
        results = pool.map(_rate_process, jobs)
    return {
        "latencies": [lat for r in results for lat in r["latencies"]],
        "errors": sum(int(r["errors"]) for r in results),
        "offered": sum(int(r["offered"]) for r in results),
    }


def _client_process(
    args: tuple[str, list[str], list[str], int, float, float, int],
) -> dict[str, Any]:
    url, tokens, symbols, in_flight, warmup_s, seconds, seed = args
    _use_uvloop()
    return asyncio.run(_drive(url, tokens, symbols, in_flight, warmup_s, seconds, seed))


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def run_api(
    settings: Settings,
    *,
    seconds: float,
    concurrency: int,
    clients: int = 2,
    accounts: int = 32,
    warmup_s: float = 1.0,
) -> dict[str, Any]:
    """Measure order placement over HTTP; returns the benchmark's one JSON object."""
    dsn = scratch_dsn(settings, "bench_api")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server: subprocess.Popen[bytes] | None = None
    migrate(dsn)
    try:
        store = KeyStore(dsn)
        tokens = []
        for index in range(accounts):
            name = f"bench-{index}"
            store.create_account(name)
            tokens.append(store.create_key(name).token)
        store.create_account("treasury")
        funding = store.create_key("treasury", funding=True).token
        store.close()
        env = {**os.environ, "EXDR_PG_DSN": dsn, "EXDR_API_LEADS": "all"}
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
        _wait_healthy(url, server)
        with httpx.Client(base_url=url, timeout=30) as http:
            for index in range(accounts):
                for shard in settings.shards():
                    r = http.post(
                        "/v1/deposits",
                        json={"amount": "1000000000", "shard": shard, "account": f"bench-{index}"},
                        headers={"Authorization": f"Bearer {funding}"},
                    )
                    r.raise_for_status()
        symbols = [s for symbols in settings.shards().values() for s in symbols if s in MIDS]
        per_client = max(1, concurrency // clients)
        jobs = [
            (url, tokens, symbols, per_client, warmup_s, seconds, seed)
            for seed in range(1, clients + 1)
        ]
        context = multiprocessing.get_context("spawn")
        with context.Pool(clients) as pool:
            results = pool.map(_client_process, jobs)
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        drop_database(dsn)
    latencies = [lat for r in results for lat in r["latencies"]]
    return {
        "seconds": seconds,
        "concurrency": per_client * clients,
        "client_processes": clients,
        "orders": len(latencies),
        "orders_per_second": round(len(latencies) / seconds, 1),
        "p50_ms": round(_percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(_percentile(latencies, 99) * 1000, 2),
        "errors": sum(int(r["errors"]) for r in results),
    }


def _wait_healthy(url: str, server: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited with {server.returncode} before serving")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not healthy within {timeout_s:.0f}s")
