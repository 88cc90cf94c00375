"""`exchange-dr bench quorum`: what the majority costs. The same steady load (orders at a fixed
rate through the leader's facade, sync replication, strict) on two regions and on three sites
(two full regions and a witness), in one run on the same machine: acknowledgement p50/p99 of
each, and their ratios. With three replicas the leader waits for the first of two followers
(any majority), so the quorum should cost little (or even gain: the faster follower answers).

Both set-ups run side by side for the whole run, and the load goes to them in interleaved
slices (two, three, three, two, ...: each gets `seconds` in all). On a machine shared with
other work the background load drifts over a minute; measured one after the other, the two
halves saw different machines and their ratio said more about that drift than about the
quorum. Each slice also says how busy the machine's cores were (`machine_busy_pct`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import httpx

from infra.bench.api import drive_at_rate
from infra.bench.cpu_usage import CpuWindow
from infra.drills.cluster import THREE_SITES, TWO_SITES, Cluster, wait_for

SHARD = "shard-1"
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
TRADERS = 16
SLICES = 4  # slices of load in all: ABBA order, so a steady drift weighs on both alike


def _percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def slice_order(slices: int) -> list[int]:
    """Replica counts of the load's slices, 2 3 3 2 2 3 3 2 ...: each count as often as the
    other (for an even `slices`), and each one first as often as it comes second."""
    if slices < 2 or slices % 2:
        raise ValueError(f"slices must be even and at least 2, not {slices}")
    pattern = [2, 3, 3, 2]
    return [pattern[i % 4] for i in range(slices)]


def _setup(sites: tuple[tuple[str, str], ...]) -> tuple[Cluster, list[str]]:
    """A cluster of these sites, its nodes up, traders funded; (cluster, their API keys)."""
    work = Path(tempfile.mkdtemp(prefix=f"exdr-bench-quorum-{len(sites)}-"))
    cluster = Cluster(work, env={"EXDR_SYNC_POLICY": "strict"}, sites=sites)
    try:
        cluster.prepare()
        for region in cluster.names:
            cluster.start(region)
        cluster.create_keys()
        traders = cluster.create_traders(TRADERS)
        with httpx.Client(base_url=cluster.url("primary"), timeout=30) as http:
            for trader in traders:
                wait_for(
                    lambda t=trader: (
                        http.post(
                            "/v1/deposits",
                            json={"amount": "1000000000", "shard": SHARD, "account": t.owner},
                            headers={"Authorization": f"Bearer {cluster.funding_key}"},
                        ).status_code
                        == 201
                    ),
                    30,
                    "a deposit on the primary",
                )
    except BaseException:
        cluster.close()  # not handed to the caller: nobody else would stop its processes
        raise
    return cluster, [t.key for t in traders]


def run_quorum(*, rate: float, seconds: float, slices: int = SLICES) -> dict[str, Any]:
    order = slice_order(slices)
    per_slice = seconds * 2 / slices
    setups: dict[int, tuple[Cluster, list[str]]] = {}
    acks: dict[int, list[float]] = {2: [], 3: []}
    totals: dict[int, dict[str, int]] = {n: {"offered": 0, "errors": 0} for n in (2, 3)}
    runs: list[dict[str, Any]] = []
    try:
        setups[2] = _setup(TWO_SITES)
        setups[3] = _setup(THREE_SITES)
        for replicas in order:
            cluster, keys = setups[replicas]
            window = CpuWindow({})
            steady = drive_at_rate(
                cluster.url("primary"), keys, SYMBOLS, rate=rate, seconds=per_slice
            )
            got = [lat * 1000 for lat in steady["latencies"]]
            acks[replicas] += got
            totals[replicas]["offered"] += int(steady["offered"])
            totals[replicas]["errors"] += int(steady["errors"])
            runs.append(
                {
                    "replicas": replicas,
                    "acked": len(got),
                    "ack_p50_ms": round(_percentile(got, 50), 2),
                    "machine_busy_pct": window.stop(len(got)).get("machine_busy_pct"),
                }
            )
    finally:
        for cluster, _ in setups.values():
            cluster.close()

    def summary(replicas: int, sites: tuple[tuple[str, str], ...]) -> dict[str, Any]:
        values = acks[replicas]
        return {
            "replicas": replicas,
            "sites": [f"{name} ({kind})" for name, kind in sites],
            **totals[replicas],
            "acked": len(values),
            "ack_p50_ms": round(_percentile(values, 50), 2),
            "ack_p99_ms": round(_percentile(values, 99), 2),
        }

    two = summary(2, TWO_SITES)
    three = summary(3, THREE_SITES)

    def ratio(key: str) -> float | None:
        return round(three[key] / two[key], 3) if two[key] else None

    p50_ratio = ratio("ack_p50_ms")
    return {
        "rate": rate,
        "seconds": seconds,
        "slices": runs,
        "two_replicas": two,
        "three_replicas": three,
        "p50_ratio": p50_ratio,
        "p99_ratio": ratio("ack_p99_ms"),
        "p50_within_20_percent": p50_ratio is not None and p50_ratio <= 1.2,
    }
