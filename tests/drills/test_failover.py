"""Failover with real processes, real ZooKeeper, real PostgreSQL and a real broker."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from infra.coordination.zookeeper import Coordinator
from infra.drills.cluster import Cluster, place_orders, wait_for
from infra.settings import Settings

pytestmark = pytest.mark.drill

SHARD = "shard-1"


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Any]:
    made: list[Cluster] = []

    def make(**kwargs: Any) -> Cluster:
        cluster = Cluster(tmp_path / f"c{len(made)}", **kwargs)
        made.append(cluster)
        cluster.prepare()
        return cluster

    yield make
    for cluster in made:
        cluster.close()


def order(cid: str) -> dict[str, str]:
    return {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "type": "LIMIT",
        "price": "49000",
        "quantity": "0.001",
        "client_order_id": cid,
    }


def first_accept(cluster: Cluster, region: str, started: float, limit: float = 15) -> float:
    """Send orders to `region` until one is accepted; seconds since `started`."""
    headers = {"Authorization": f"Bearer {cluster.key}"}
    n = 0
    with httpx.Client(base_url=cluster.url(region), headers=headers, timeout=2) as client:
        while time.monotonic() - started < limit:
            n += 1
            try:
                if client.post("/v1/orders", json=order(f"probe-{n}")).status_code == 201:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.01)
    raise AssertionError(f"{region} accepted nothing within {limit}s")


def order_ids(cluster: Cluster, region: str) -> set[str]:
    with psycopg.connect(cluster.dsns[region]) as conn:
        rows = conn.execute("SELECT command_key FROM wal_records WHERE command_key IS NOT NULL")
        return {row[0] for row in rows}


def acked_keys(acked: dict[str, int]) -> set[str]:
    from domain.account import Account
    from domain.order import Order

    account = Account.create_id(SHARD, "traders")
    return {str(Order.create_id(account, cid)) for cid in acked}


@pytest.mark.long  # make drills; make test kills the primary under load in test_chaos (unplanned)
def test_sigkill_primary_standby_takes_over_fast_and_loses_nothing(make_cluster: Any) -> None:
    cluster = make_cluster(env={"EXDR_SYNC_POLICY": "degrade"})
    cluster.start("primary")
    cluster.start("standby")
    cluster.create_keys()
    ids = [f"k-{i}" for i in range(4000)]
    result: dict[str, Any] = {}

    def load() -> None:
        result.update(
            asyncio.run(
                place_orders(
                    cluster.url("primary"),
                    cluster.key,
                    ids,
                    concurrency=16,
                    funding_key=cluster.funding_key,
                )
            )
        )

    loader = threading.Thread(target=load)
    loader.start()
    time.sleep(2.0)
    killed = time.monotonic()
    cluster.stop("primary", signal.SIGKILL)
    rto = first_accept(cluster, "standby", killed)
    loader.join(60)
    print(f"\nRTO {rto:.3f}s, acknowledged before the kill: {len(result['acked'])}")
    assert rto < 2.0
    missing = acked_keys(result["acked"]) - order_ids(cluster, "standby")
    assert not missing, f"{len(missing)} acknowledged orders lost"
    shards = cluster.shards("standby")
    assert shards[SHARD]["leader"] is True and shards[SHARD]["epoch"] >= 2
    assert cluster.metric("standby", "failover_total") == 1


def test_paused_primary_is_fenced_then_rejoins_as_standby(make_cluster: Any) -> None:
    cluster = make_cluster(env={"EXDR_SYNC_POLICY": "strict"})
    cluster.start("primary")
    cluster.start("standby")
    cluster.create_keys()
    asyncio.run(
        place_orders(
            cluster.url("primary"),
            cluster.key,
            [f"p-{i}" for i in range(200)],
            funding_key=cluster.funding_key,
        )
    )
    old = cluster.procs["primary"]
    old.send_signal(signal.SIGSTOP)
    try:
        wait_for(
            lambda: "FailoverCompleted" in cluster.log("standby").read_text(),
            15,
            "the standby's promotion",
        )
    finally:
        old.send_signal(signal.SIGCONT)
    # the old primary woke up with an expired lease: it accepts nothing
    headers = {"Authorization": f"Bearer {cluster.key}"}
    response = httpx.post(
        cluster.url("primary") + "/v1/orders", headers=headers, json=order("after-wake"), timeout=10
    )
    assert response.status_code == 503
    assert response.json()["code"] in ("not_leader", "unavailable")
    # strict sync: the new primary acknowledges once its new standby (the old primary) holds
    # the records, which needs the rejoin
    first_accept(cluster, "standby", time.monotonic(), limit=30)
    # ... and rejoins as a standby of the new primary, with the same state
    asyncio.run(
        place_orders(
            cluster.url("standby"),
            cluster.key,
            [f"n-{i}" for i in range(50)],
            deposit=__import__("decimal").Decimal("1"),
            funding_key=cluster.funding_key,
        )
    )
    new_seq = cluster.shards("standby")[SHARD]["seq"]
    wait_for(
        lambda: cluster.shards("primary")[SHARD]["seq"] == new_seq, 30, "the old primary to follow"
    )
    old_view = cluster.shards("primary", state_hash=True)[SHARD]
    new_view = cluster.shards("standby", state_hash=True)[SHARD]
    assert old_view["leader"] is False
    assert old_view["state_hash"] == new_view["state_hash"]


def test_deposed_leader_with_no_standby_takes_its_shard_back(make_cluster: Any) -> None:
    # the standby region is down: when the leader's session expires, nobody else can lead
    cluster = make_cluster(
        env={"EXDR_REPLICATION": "async", "EXDR_FAILOVER_AFTER_MS": "1000"},
    )
    cluster.start("primary")
    cluster.create_keys()
    ids = [f"r-{i}" for i in range(200)]
    result = asyncio.run(
        place_orders(cluster.url("primary"), cluster.key, ids, funding_key=cluster.funding_key)
    )
    assert len(result["acked"]) == len(ids)
    before = cluster.shards("primary")[SHARD]
    proc = cluster.procs["primary"]
    proc.send_signal(signal.SIGSTOP)  # longer than the 2 s session: ZooKeeper expires it
    time.sleep(4.0)
    proc.send_signal(signal.SIGCONT)
    woke = time.monotonic()
    wait_for(lambda: "deposed shard=" in cluster.log("primary").read_text(), 10, "the deposition")
    retake_s = first_accept(cluster, "primary", woke, limit=20)
    print(f"\nshard retaken {retake_s:.2f}s after the leader woke")
    after = cluster.shards("primary")[SHARD]
    assert after["leader"] is True
    assert after["epoch"] > before["epoch"]
    assert after["seq"] > before["seq"]  # the probe order, after everything before it
    assert acked_keys(result["acked"]) <= order_ids(cluster, "primary")
    assert "retook the shard" in cluster.log("primary").read_text()


def test_zookeeper_restart_causes_no_failover(make_cluster: Any) -> None:
    # a restart shorter than the session: sessions, and the leader's node, survive it
    cluster = make_cluster(
        own_zookeeper=True, env={"EXDR_ZK_SESSION_MS": "8000", "EXDR_FAILOVER_AFTER_MS": "1000"}
    )
    cluster.start("primary")
    cluster.start("standby")
    cluster.create_keys()
    epoch = cluster.shards("primary")[SHARD]["epoch"]
    cluster.stop_zookeeper()
    cluster.start_zookeeper()
    headers = {"Authorization": f"Bearer {cluster.funding_key}"}

    def primary_takes_commands() -> bool:
        response = httpx.post(
            cluster.url("primary") + "/v1/deposits",
            headers=headers,
            json={"amount": "1000", "symbol": "BTCUSDT"},
            timeout=5,
        )
        return response.status_code == 201

    wait_for(primary_takes_commands, 20, "the primary to take commands again", interval=0.2)
    assert cluster.shards("primary")[SHARD]["leader"] is True
    assert cluster.shards("primary")[SHARD]["epoch"] == epoch
    assert cluster.shards("standby")[SHARD]["leader"] is False
    assert cluster.metric("standby", "failover_total") == 0


def test_lagging_standby_is_not_promoted(make_cluster: Any) -> None:
    cluster = make_cluster(env={"EXDR_REPLICATION": "async", "EXDR_MAX_STANDBY_LAG_MS": "300"})
    cluster.start("primary")
    cluster.start("standby", EXDR_FAULT_STALL_AFTER_SEQ="20")
    cluster.create_keys()
    asyncio.run(
        place_orders(
            cluster.url("primary"),
            cluster.key,
            [f"l-{i}" for i in range(100)],
            funding_key=cluster.funding_key,
        )
    )
    wait_for(lambda: cluster.metric("standby", "standby_lag_records") > 0, 10, "lag")
    time.sleep(0.5)
    cluster.stop("primary", signal.SIGKILL)
    wait_for(
        lambda: "FailoverRefused" in cluster.log("standby").read_text(), 15, "the refusal alert"
    )
    time.sleep(1.0)
    assert cluster.shards("standby")[SHARD]["leader"] is False
    assert "the shard stays down rather than lose data" in cluster.log("standby").read_text()


def test_two_failover_managers_racing_make_one_leader() -> None:
    settings = Settings.from_env()
    root = f"/exdr/race{time.time_ns()}"
    coordinators = [
        Coordinator(
            settings.zk_hosts,
            f"r{i}",
            f"http://127.0.0.1:{9000 + i}",
            root=root,
            session_timeout_s=1.0,
        )
        for i in range(3)
    ]
    for coord in coordinators:
        coord.start([SHARD])
    winners: list[str] = []
    barrier = threading.Barrier(len(coordinators))

    def race(coord: Coordinator) -> None:
        barrier.wait()
        lock = coord.lock(SHARD, timeout=5)
        if lock is None:
            return
        try:
            if coord.refresh_leader(SHARD) is None:
                coord.take_leadership(SHARD, applied_seq=10)
                winners.append(coord.region)
        finally:
            lock.release()

    threads = [threading.Thread(target=race, args=(c,)) for c in coordinators]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    try:
        assert len(winners) == 1
        leaders = [c.region for c in coordinators if c.is_leader(SHARD)]
        assert leaders == winners
        assert coordinators[0].epochs(SHARD) == [(1, 11)]
    finally:
        for coord in coordinators:
            coord.stop()
