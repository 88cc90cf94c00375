"""`exchange-dr bench replication`: both regions as processes, orders at a fixed rate through the
primary's facade, lag measured from the data itself: each record's primary timestamp against
the standby's commit time.

Two phases:
1. Steady load at `rate` orders/s (open loop, two client processes): acknowledgement latency
   at the client, the standby's lag per record (sealed on the primary to stored on the
   standby), and the hop alone (stored on the primary to stored on the standby).
2. Apply throughput: the standby is paused (SIGSTOP) while the primary takes as many orders as
   it can for a few seconds, then resumed; the backlog's records divided by the time between
   the standby storing the first and the last of them is what it sustains when it has work
   (its consumer rejoining the group after the pause is not counted).

Over phase 1 the machine's CPU is read too (infra/bench/cpu_usage.py): how busy all cores were and
how much was stolen, each region's process in percent of one core, and the CPU the whole
machine spent per acknowledged command. Latencies of two runs compare only at similar readings.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg

from infra.bench.api import drive_at_rate
from infra.bench.cpu_usage import CpuWindow
from infra.cli.progress import Progress
from infra.drills.cluster import Cluster, wait_for

SHARD = "shard-1"
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
TRADERS = 16
BACKLOG_SECONDS = 4.0
BACKLOG_RATE = 3000.0


def _percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _stored(dsn: str, after_seq: int) -> list[tuple[int, int, int]]:
    """(seq, primary recorded_at µs, standby stored_at µs) of the standby's records."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT seq, recorded_at_us, (extract(epoch FROM created_at) * 1e6)::bigint "
            "FROM wal_records WHERE shard_id = %s AND seq > %s ORDER BY seq",
            (SHARD, after_seq),
        ).fetchall()


def _watch_apply(
    seq: Callable[[], int], resumed_at: float, start_seq: int, target: int, timeout_s: float = 120
) -> dict[str, Any]:
    """Wait for the standby's applied seq to reach `target`: the backlog over the time from
    its resumption (so its own restart of consumption counts against it) to the end."""
    deadline = resumed_at + timeout_s
    while seq() < target:
        if time.monotonic() > deadline:
            raise AssertionError(f"the standby did not apply up to {target} in time")
        time.sleep(0.01)
    seconds = time.monotonic() - resumed_at
    records = target - start_seq
    return {
        "backlog_records": records,
        "backlog_seconds": round(seconds, 3),
        "applied_per_second": round(records / seconds, 1) if seconds else 0.0,
    }


def run_replication(*, rate: float, seconds: float, mode: str) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="exdr-bench-replication-"))
    cluster = Cluster(work, env={"EXDR_REPLICATION": mode, "EXDR_SYNC_POLICY": "degrade"})
    progress = Progress("bench replication", 5)
    cluster.prepare()
    try:
        cluster.start("primary")
        cluster.start("standby")
        cluster.create_keys()
        progress.update_to(1)
        traders = cluster.create_traders(TRADERS)
        url = cluster.url("primary")
        with httpx.Client(base_url=url, timeout=30) as http:
            for trader in traders:
                wait_for(
                    lambda t=trader: (
                        http.post(
                            "/v1/deposits",
                            json={"amount": "1000000000", "shard": SHARD},
                            headers={"Authorization": f"Bearer {t.key}"},
                        ).status_code
                        == 201
                    ),
                    30,
                    "a deposit on the primary",
                )
        tokens = [t.key for t in traders]

        def primary_seq() -> int:
            return int(cluster.shards("primary")[SHARD]["seq"])

        def standby_seq() -> int:
            return int(cluster.shards("standby")[SHARD]["seq"])

        wait_for(lambda: standby_seq() >= primary_seq(), 60, "the standby")
        progress.update_to(2)

        # phase 1: steady load
        before = primary_seq()
        pids = {name: proc.pid for name, proc in cluster.procs.items()}
        if cluster.broker is not None:
            pids["broker"] = cluster.broker.pid
        cpu = CpuWindow(pids)
        steady = drive_at_rate(url, tokens, SYMBOLS, rate=rate, seconds=seconds)
        machine = cpu.stop(len(steady["latencies"]))
        top = primary_seq()
        wait_for(lambda: standby_seq() >= top, 60, "the standby")
        rows = [r for r in _stored(cluster.dsns["standby"], before) if r[0] <= top]
        lags_ms = [(stored - recorded) / 1000 for _, recorded, stored in rows]
        span_s = (rows[-1][2] - rows[0][2]) / 1e6 if len(rows) > 1 else 0.0
        acks = [lat * 1000 for lat in steady["latencies"]]
        # the hop alone: the primary's store to the standby's (both clocks are this machine's)
        primary_at = {r[0]: r[2] for r in _stored(cluster.dsns["primary"], before) if r[0] <= top}
        hops_ms = [(stored - primary_at[q]) / 1000 for q, _, stored in rows if q in primary_at]
        progress.update_to(3)

        # phase 2: a backlog applied at full speed
        standby = cluster.procs["standby"]
        backlog_from = standby_seq()
        os.kill(standby.pid, signal.SIGSTOP)
        try:
            drive_at_rate(url, tokens, SYMBOLS, rate=BACKLOG_RATE, seconds=BACKLOG_SECONDS)
            backlog_to = primary_seq()
        finally:
            os.kill(standby.pid, signal.SIGCONT)
            resumed_at = time.monotonic()
        progress.update_to(4)
        applied = _watch_apply(standby_seq, resumed_at, backlog_from, backlog_to)
        progress.update_to(5)
        result = {
            "mode": mode,
            "rate": rate,
            "seconds": seconds,
            "offered": steady["offered"],
            "commands_acked": len(acks),
            "errors": steady["errors"],
            "acked_per_second": round(len(acks) / seconds, 1),
            "records": len(rows),
            "records_per_second": round(len(rows) / span_s, 1) if span_s else 0.0,
            "lag_p50_ms": round(_percentile(lags_ms, 50), 2),
            "lag_p99_ms": round(_percentile(lags_ms, 99), 2),
            "hop_p50_ms": round(_percentile(hops_ms, 50), 2),
            "hop_p99_ms": round(_percentile(hops_ms, 99), 2),
            "ack_p50_ms": round(_percentile(acks, 50), 2),
            "ack_p99_ms": round(_percentile(acks, 99), 2),
            **applied,
            **machine,
        }
    finally:
        progress.close()
        cluster.close()
    # a run that failed raised above and keeps the regions' logs in `work` for a look
    shutil.rmtree(work, ignore_errors=True)
    return result
