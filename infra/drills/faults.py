"""The faults a drill injects, the planned-failover script, and the heals afterwards."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg

from domain.account import Account
from domain.order import Order
from infra.drills.cluster import SHARD, Cluster, wait_for
from infra.drills.timeline import Timeline

# the planned script's test orders: ten before the hand-over, one after
# (docs/runbook.md, Planned switchover)
MARKERS = (*(f"planned-before-{n}" for n in range(10)), "planned-after")


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
        # the coordinator lost, as an operator means it: the whole service, not one member (an
        # ensemble of three is built to lose one; witness-loss and site-loss do that)
        members = len(cluster.zk_ports) or 1
        at = tl.mark("failure")
        cluster.stop_zookeeper()
        tl.step("ZooKeeper killed" if members == 1 else f"all {members} ZooKeeper members killed")
        cluster.start_zookeeper()
        tl.mark("healed")
        tl.step(
            "ZooKeeper restarted (its data kept, as a real ensemble member's)"
            if members == 1
            else f"the ensemble restarted, its data kept: all {members} members serve again"
        )
        return at
    if kind == "partition":
        return partition(cluster, tl)
    if kind == "planned":
        return planned_script(cluster, tl)
    # replay: no fault under load; the checks after the load are the drill
    at = tl.mark("failure")
    tl.step("no fault: the load runs on; replay from scratch follows")
    return at


def partition(cluster: Cluster, tl: Timeline) -> float:
    """Cut the primary off from ZooKeeper while it runs on and its clients still reach it.

    Its lease must lapse before the standby may promote, so from then on it refuses every
    command: a 2xx from it while cut off would be a split brain."""
    _deposit_for_test_orders(cluster, "primary")  # so that an order it ran would be placed
    at = tl.mark("failure")
    cluster.zk_proxies["primary"].cut()
    tl.step("primary cut off from ZooKeeper (every packet dropped); it runs on, clients reach it")
    wait_for(lambda: cluster.shards("standby")[SHARD]["leader"], 30, "the standby to take over")
    tl.mark("promotion")
    tl.step(f"standby took over at epoch {cluster.shards('standby')[SHARD]['epoch']}")
    answers = []
    for n in range(5):  # a client that still talks to the old primary
        response = _post_test_order(cluster, "primary", f"partitioned-{n}")
        code = response.json().get("code") if response.status_code >= 400 else "ACCEPTED"
        answers.append(f"{response.status_code} {code}")
        if response.status_code != 503:  # it ran the command: a split brain
            tl.findings.append(
                f"split brain: the cut-off primary answered {response.status_code} {code}"
            )
        time.sleep(0.1)
    tl.step(f"the cut-off primary answered commands with: {', '.join(sorted(set(answers)))}")
    time.sleep(1.0)
    cluster.zk_proxies["primary"].heal()
    tl.mark("healed")
    tl.step("partition healed: the old primary must find itself fenced and follow")
    return at


def planned_script(cluster: Cluster, tl: Timeline) -> float:
    """The planned-failover procedure of docs/runbook.md (Planned switchover), step by step."""
    for region in ("primary", "standby"):
        status = httpx.get(cluster.url(region) + "/health", timeout=5).status_code
        tl.step(f"1. health of {region}: {status}")
    lag = cluster.metric("standby", "standby_lag_records")
    tl.step(f"2. standby lag before the hand-over: {lag:.0f} records")
    _deposit_for_test_orders(cluster, "primary")
    with ThreadPoolExecutor(len(MARKERS) - 1) as pool:  # ten clients at once
        seqs = sorted(pool.map(lambda cid: _place_marker(cluster, "primary", cid), MARKERS[:-1]))
    tl.step(f"3. {len(seqs)} test orders placed on the primary, seq {seqs[0]}..{seqs[-1]}")
    at = tl.mark("failure")
    response = httpx.post(
        cluster.url("primary") + "/v1/admin/switchover",
        json={"shard": SHARD, "to": "standby"},
        headers={"Authorization": f"Bearer {cluster.operator_key}"},
        timeout=30,
    )
    tl.step(f"4. primary handed over: {response.status_code} {response.text[:160]}")
    wait_for(lambda: cluster.shards("standby")[SHARD]["leader"], 20, "the standby to lead")
    tl.step("5. waited for the failover")
    health = httpx.get(cluster.url("standby") + "/primary", timeout=5).status_code
    epoch = cluster.shards("standby")[SHARD]["epoch"]
    tl.step(f"6. new primary: standby answers /primary {health}, epoch {epoch}")
    seq = _place_marker(cluster, "standby", MARKERS[-1])
    tl.step(f"7. service test: an order placed on the new primary at seq {seq}")
    listed = _listed_orders(cluster, "standby")
    found = sum(1 for cid in MARKERS if cid in listed)
    tl.step(f"8. verify: the new primary lists {found} of the {len(MARKERS)} test orders")
    if found != len(MARKERS):
        tl.findings.append(f"the new primary lists {found} of {len(MARKERS)} test orders")
    return at


def _listed_orders(cluster: Cluster, region: str) -> set[str]:
    """client_order_ids of the test account's ETHUSDT orders, every page (GET /v1/orders)."""
    seen: set[str] = set()
    params: dict[str, str] = {"symbol": "ETHUSDT", "limit": "100"}
    for _ in range(50):
        response = httpx.get(
            cluster.url(region) + "/v1/orders",
            params=params,
            headers={"Authorization": f"Bearer {cluster.key}"},
            timeout=10,
        )
        if response.status_code == 503:  # warming up after the promotion: ask again
            time.sleep(0.2)
            continue
        response.raise_for_status()
        page = response.json()
        seen.update(o["client_order_id"] for o in page["orders"])
        cursor = page.get("next_cursor") or page.get("cursor")
        if not cursor:
            break
        params["cursor"] = cursor
    return seen


def _deposit_for_test_orders(cluster: Cluster, region: str) -> None:
    httpx.post(
        cluster.url(region) + "/v1/deposits",
        headers={"Authorization": f"Bearer {cluster.funding_key}"},
        json={"amount": "100000", "symbol": "ETHUSDT", "account": "traders"},
        timeout=10,
    ).raise_for_status()


def _post_test_order(cluster: Cluster, region: str, cid: str) -> httpx.Response:
    """A small resting ETHUSDT buy of the operator's test account (not the load's accounts)."""
    return httpx.post(
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


def _place_marker(cluster: Cluster, region: str, cid: str, retry_for_s: float = 15.0) -> int:
    """Place a test order as a well-behaved client does: a 503 (not confirmed by a standby yet,
    warming up) is retried with the same client_order_id, which returns the first outcome."""
    deadline = time.monotonic() + retry_for_s
    while True:
        response = _post_test_order(cluster, region, cid)
        if response.status_code != 503 or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
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
