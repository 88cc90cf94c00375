"""The faults a drill injects, the planned-failover script, and the heals afterwards."""

from __future__ import annotations

import signal
import time

import httpx
import psycopg

from domain.account import Account
from domain.order import Order
from infra.drills.cluster import SHARD, Cluster, wait_for
from infra.drills.timeline import Timeline

MARKERS = ("planned-before", "planned-after")  # the planned script's test orders


def inject(kind: str, cluster: Cluster, tl: Timeline) -> float:
    """Inject the fault of `kind`; returns the moment of the fault (monotonic)."""
    if kind == "unplanned":
        at = tl.mark("failure")
        cluster.stop("primary", signal.SIGKILL)
        tl.step("primary region's process killed with SIGKILL")
        return at
    if kind == "region-loss":
        at = tl.mark("failure")
        cluster.pg_servers["primary"].stop("immediate")
        tl.step("primary region's PostgreSQL server stopped (immediate: no checkpoint, no goodbye)")
        return at
    if kind == "broker-loss":
        at = tl.mark("failure")
        cluster.restart_broker()
        tl.mark("healed")
        tl.step("broker killed and restarted empty: every topic and offset lost")
        return at
    if kind == "coordinator-loss":
        at = tl.mark("failure")
        cluster.stop_zookeeper()
        tl.step("ZooKeeper killed")
        cluster.start_zookeeper()
        tl.mark("healed")
        tl.step("ZooKeeper restarted (its data kept, as a real ensemble member's)")
        return at
    if kind == "partition":
        proc = cluster.procs["primary"]
        at = tl.mark("failure")
        proc.send_signal(signal.SIGSTOP)
        tl.step("primary frozen (SIGSTOP): cut off from ZooKeeper, its standby and its clients")
        wait_for(lambda: cluster.shards("standby")[SHARD]["leader"], 20, "the standby to take over")
        tl.step("standby took over; the old primary is still frozen")
        time.sleep(1.0)
        proc.send_signal(signal.SIGCONT)
        tl.mark("healed")
        tl.step("partition healed (SIGCONT): the old primary must find itself fenced")
        return at
    if kind == "planned":
        return planned_script(cluster, tl)
    # replay: no fault under load; the checks after the load are the drill
    at = tl.mark("failure")
    tl.step("no fault: the load runs on; replay from scratch follows")
    return at


def planned_script(cluster: Cluster, tl: Timeline) -> float:
    """The seed's planned-failover procedure, step by step."""
    for region in ("primary", "standby"):
        status = httpx.get(cluster.url(region) + "/health", timeout=5).status_code
        tl.step(f"1. health of {region}: {status}")
    lag = cluster.metric("standby", "standby_lag_records")
    tl.step(f"2. standby lag before the hand-over: {lag:.0f} records")
    httpx.post(
        cluster.url("primary") + "/v1/deposits",
        headers={"Authorization": f"Bearer {cluster.key}"},
        json={"amount": "100000", "symbol": "ETHUSDT"},
        timeout=10,
    ).raise_for_status()
    marker = _place_marker(cluster, "primary", MARKERS[0])
    tl.step(f"3. test order placed on the primary at seq {marker}")
    at = tl.mark("failure")
    response = httpx.post(
        cluster.url("primary") + "/v1/admin/switchover",
        json={"shard": SHARD, "to": "standby"},
        headers={"Authorization": f"Bearer {cluster.operator_key}"},
        timeout=30,
    )
    tl.step(f"4. switchover answered {response.status_code}: {response.text[:160]}")
    wait_for(lambda: cluster.shards("standby")[SHARD]["leader"], 20, "the standby to lead")
    tl.step(f"5. new primary: standby leads at epoch {cluster.shards('standby')[SHARD]['epoch']}")
    seq = _place_marker(cluster, "standby", MARKERS[1])
    tl.step(f"6. test order placed on the new primary at seq {seq}")
    ok = order_exists(cluster, "standby", MARKERS[0])
    tl.step(f"7. verify: the first test order is on the new primary: {ok}")
    return at


def _place_marker(cluster: Cluster, region: str, cid: str) -> int:
    response = httpx.post(
        cluster.url(region) + "/v1/orders",
        headers={"Authorization": f"Bearer {cluster.key}"},
        json={
            "symbol": "ETHUSDT",
            "side": "BUY",
            "type": "LIMIT",
            "price": "1000",
            "quantity": "0.01",
            "client_order_id": cid,
        },
        timeout=10,
    )
    response.raise_for_status()
    return int(response.json()["seq"])


def order_exists(cluster: Cluster, region: str, cid: str) -> bool:
    account = Account.create_id(SHARD, "traders")
    with psycopg.connect(cluster.dsns[region]) as conn:
        row = conn.execute(
            "SELECT 1 FROM wal_records WHERE shard_id = %s AND command_key = %s",
            (SHARD, str(Order.create_id(account, cid))),
        ).fetchone()
    return row is not None


def heal(kind: str, cluster: Cluster, tl: Timeline) -> None:
    """After the load: bring the failed part back; it must rejoin as a follower."""
    if kind == "unplanned":
        cluster.start("primary")
        tl.mark("healed")
        tl.step("old primary restarted: it rejoins as a standby of the new primary")
    elif kind == "region-loss":
        cluster.pg_servers["primary"].start()
        tl.mark("healed")
        tl.step("primary region's PostgreSQL server back: the old primary rejoins as a standby")
