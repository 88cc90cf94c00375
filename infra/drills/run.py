"""`exchange-dr drill planned|unplanned`: a failover under load, measured, then checked.

unplanned: SIGKILL the primary region's process in the middle of the load.
planned:   the seed's planned-failover script: check both regions, check the standby's lag,
           place test orders, hand the shard over (operator endpoint), check the new primary,
           place an order, verify.
RTO: from the failure (the kill, or the start of the hand-over) to the first command
acknowledged by the new primary. RPO: acknowledged commands missing on the new primary.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from domain.account import Account
from domain.order import Order
from infra.drills.cluster import Cluster, wait_for
from infra.drills.load import LoadGenerator

SHARD = "shard-1"


def check_ledger(
    cluster: Cluster, region: str, ledger: Any, owner: str = "traders"
) -> dict[str, int]:
    """Compare the clients' ledger with what the (new) primary holds."""
    account = Account.create_id(SHARD, owner)
    expected = {str(Order.create_id(account, cid)): cid for cid in ledger.sent}
    with psycopg.connect(cluster.dsns[region]) as conn:
        rows = conn.execute(
            "SELECT command_key, count(*) FROM wal_records WHERE shard_id = %s AND "
            "command_type = 'PlaceOrder' GROUP BY command_key",
            (SHARD,),
        ).fetchall()
    present = {row[0]: int(row[1]) for row in rows}
    acked_keys = {str(Order.create_id(account, cid)) for cid in ledger.acked}
    return {
        "lost": sum(1 for key in acked_keys if key not in present),
        "duplicated": sum(count - 1 for count in present.values() if count > 1),
        "phantom": sum(1 for key in present if key not in expected),
    }


def run_drill(
    kind: str,
    *,
    rate: float,
    seconds: float = 12.0,
    fail_after: float = 4.0,
    workdir: Path | None = None,
    mode: str = "sync",
) -> dict[str, Any]:
    work = workdir or Path(tempfile.mkdtemp(prefix=f"exdr-drill-{kind}-"))
    # drills run the way a latency-tuned deployment would: a 600 ms ZooKeeper session (lease
    # 300 ms); degrade, so the new primary acknowledges while its old peer is still down
    session_ms = os.environ.get("EXDR_DRILL_ZK_SESSION_MS", "600")
    cluster = Cluster(work, env={"EXDR_REPLICATION": mode, "EXDR_SYNC_POLICY": "degrade",
                                 "EXDR_ZK_SESSION_MS": session_ms})
    cluster.prepare()
    try:
        cluster.start("primary")
        cluster.start("standby")
        cluster.create_keys()
        before = cluster.shards("primary")[SHARD]
        load = LoadGenerator(
            [cluster.url("primary"), cluster.url("standby")], cluster.key, rate=rate
        )
        ledger_box: dict[str, Any] = {}

        def drive() -> None:
            ledger_box["ledger"] = asyncio.run(load.run(seconds))

        driver = threading.Thread(target=drive, name="drill-load")
        driver.start()
        time.sleep(fail_after)
        steps: list[str] = []
        failed_at = time.monotonic()
        if kind == "unplanned":
            cluster.stop("primary", signal.SIGKILL)
            steps.append("primary killed with SIGKILL")
        else:
            lag = cluster.metric("standby", "standby_lag_records")
            steps.append(f"standby lag before hand-over: {lag:.0f} records")
            response = httpx.post(
                cluster.url("primary") + "/v1/admin/switchover",
                json={"shard": SHARD, "to": "standby"},
                headers={"Authorization": f"Bearer {cluster.operator_key}"},
                timeout=30,
            )
            steps.append(f"switchover answered {response.status_code}: {response.text[:200]}")
        driver.join(seconds + 60)
        ledger = ledger_box["ledger"]
        new_url = cluster.url("standby")
        first = ledger.first_ack_at(new_url, failed_at)
        wait_for(lambda: cluster.shards("standby")[SHARD]["leader"], 30, "the new primary")
        after = cluster.shards("standby")[SHARD]
        checked = check_ledger(cluster, "standby", ledger)
        refused_window = [
            a.sent_at
            for a in ledger.attempts
            if a.status not in (200, 201) and a.sent_at >= failed_at - 1
        ]
        latencies = sorted(a.latency_s for a in ledger.attempts if a.status in (200, 201))
        return {
            "kind": kind,
            "rate": rate,
            "rto_seconds": None if first is None else round(first - failed_at, 3),
            "sent": len(ledger.sent),
            "acked": len(ledger.acked),
            **checked,
            "refused": ledger.refused,
            "refused_window_seconds": round(max(refused_window) - min(refused_window), 3)
            if refused_window
            else 0.0,
            "ack_p50_ms": round(latencies[len(latencies) // 2] * 1000, 2) if latencies else None,
            "ack_p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2)
            if latencies
            else None,
            "epoch_before": before["epoch"],
            "epoch_after": after["epoch"],
            "steps": steps,
            "workdir": str(work),
        }
    finally:
        cluster.close()
