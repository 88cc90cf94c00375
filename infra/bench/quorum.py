"""`exchange-dr bench quorum`: what the majority costs. The same steady load (orders at a fixed
rate through the leader's facade, sync replication, strict) on two regions, then on three sites
(two full regions and a witness), in one run on the same machine: acknowledgement p50/p99 of
each, and the ratio. With three replicas the leader waits for the first of two followers, so
the quorum should cost little (or even gain: the faster follower answers).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import httpx

from infra.bench.api import drive_at_rate
from infra.drills.cluster import THREE_SITES, TWO_SITES, Cluster, wait_for

SHARD = "shard-1"
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
TRADERS = 16


def _percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _one(sites: tuple[tuple[str, str], ...], rate: float, seconds: float) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"exdr-bench-quorum-{len(sites)}-"))
    cluster = Cluster(work, env={"EXDR_SYNC_POLICY": "strict"}, sites=sites)
    cluster.prepare()
    try:
        for region in cluster.names:
            cluster.start(region)
        cluster.create_keys()
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
        steady = drive_at_rate(url, [t.key for t in traders], SYMBOLS, rate=rate, seconds=seconds)
        acks = [lat * 1000 for lat in steady["latencies"]]
        return {
            "replicas": len(sites),
            "sites": [f"{name} ({kind})" for name, kind in sites],
            "offered": steady["offered"],
            "acked": len(acks),
            "errors": steady["errors"],
            "ack_p50_ms": round(_percentile(acks, 50), 2),
            "ack_p99_ms": round(_percentile(acks, 99), 2),
        }
    finally:
        cluster.close()


def run_quorum(*, rate: float, seconds: float) -> dict[str, Any]:
    two = _one(TWO_SITES, rate, seconds)
    three = _one(THREE_SITES, rate, seconds)
    p50_ratio = three["ack_p50_ms"] / two["ack_p50_ms"] if two["ack_p50_ms"] else None
    return {
        "rate": rate,
        "seconds": seconds,
        "two_replicas": two,
        "three_replicas": three,
        "p50_ratio": None if p50_ratio is None else round(p50_ratio, 3),
        "p50_within_20_percent": p50_ratio is not None and p50_ratio <= 1.2,
    }
