"""`exchange-dr bench replication`: both regions as processes, load at a fixed rate, lag measured
from the data itself: each record's primary timestamp against the standby's commit time."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from pathlib import Path
from typing import Any

import psycopg

from infra.drills.cluster import Cluster, wait_for
from infra.drills.load import LoadGenerator

SHARD = "shard-1"


def _percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def run_replication(*, rate: float, seconds: float, mode: str) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="exdr-bench-replication-"))
    cluster = Cluster(work, env={"EXDR_REPLICATION": mode})
    cluster.prepare()
    try:
        cluster.start("primary")
        cluster.start("standby")
        cluster.create_keys()
        load = LoadGenerator(
            [cluster.url("primary")], cluster.key, rate=rate, clients=max(8, int(rate // 25))
        )
        box: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: box.update(ledger=asyncio.run(load.run(seconds))))
        thread.start()
        thread.join(seconds + 120)
        ledger = box["ledger"]
        top = cluster.shards("primary")[SHARD]["seq"]
        wait_for(lambda: cluster.shards("standby")[SHARD]["seq"] >= top, 60, "the standby")
        with psycopg.connect(cluster.dsns["standby"]) as conn:
            rows = conn.execute(
                "SELECT seq, recorded_at_us, (extract(epoch FROM created_at) * 1e6)::bigint "
                "FROM wal_records WHERE shard_id = %s ORDER BY seq",
                (SHARD,),
            ).fetchall()
        lags_ms = [(stored - recorded) / 1000 for _, recorded, stored in rows]
        span_s = (rows[-1][2] - rows[0][2]) / 1e6 if len(rows) > 1 else 0.0
        acks = [a.latency_s * 1000 for a in ledger.attempts if a.status in (200, 201)]
        return {
            "mode": mode,
            "rate": rate,
            "seconds": seconds,
            "commands_acked": len(ledger.acked),
            "offered_per_second": round(len(ledger.sent) / seconds, 1),
            "records": len(rows),
            "applied_per_second": round(len(rows) / span_s, 1) if span_s else 0.0,
            "lag_p50_ms": round(_percentile(lags_ms, 50), 2),
            "lag_p99_ms": round(_percentile(lags_ms, 99), 2),
            "ack_p50_ms": round(_percentile(acks, 50), 2),
            "ack_p99_ms": round(_percentile(acks, 99), 2),
        }
    finally:
        cluster.close()
