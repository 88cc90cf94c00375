"""Hot standby with real processes: two regions, their own broker, real PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from infra.drills.cluster import Cluster, place_orders, wait_for

pytestmark = pytest.mark.integration

SHARD = "shard-1"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    c.prepare()
    try:
        yield c
    finally:
        c.close()


def caught_up(cluster: Cluster, timeout: float = 60) -> int:
    primary_seq = cluster.shards("primary")[SHARD]["seq"]
    wait_for(
        lambda: cluster.shards("standby")[SHARD]["seq"] == primary_seq,
        timeout,
        f"standby to reach seq {primary_seq}",
    )
    return int(primary_seq)


def assert_same_state(cluster: Cluster) -> None:
    primary = cluster.shards("primary", state_hash=True)[SHARD]
    standby = cluster.shards("standby", state_hash=True)[SHARD]
    assert standby["seq"] == primary["seq"]
    assert standby["state_hash"] == primary["state_hash"], "hot state differs"
    heads = {region: cluster.store_heads(region)[SHARD] for region in ("primary", "standby")}
    # (shard, seq) is the primary key, so a seq cannot be stored twice; what can go wrong is a
    # gap, or another record at a seq: the head and the record count agree, and the two
    # regions hold the very same records (seq, epoch, checksum)
    assert heads["standby"][:2] == heads["primary"][:2], f"the regions differ: {heads}"
    assert heads["primary"][0] == heads["primary"][1], f"gap in the WAL: {heads}"
    assert wal_digest(cluster, "standby") == wal_digest(cluster, "primary"), "records differ"


def wal_digest(cluster: Cluster, region: str) -> str:
    """One hash of every (seq, epoch, checksum) of the shard's WAL in the region, in order."""
    with psycopg.connect(cluster.dsns[region]) as conn:
        row = conn.execute(
            "SELECT md5(string_agg(seq || ':' || epoch || ':' || checksum, ',' ORDER BY seq)) "
            "FROM wal_records WHERE shard_id = %s",
            (SHARD,),
        ).fetchone()
    assert row is not None and row[0] is not None, f"no records in {region}"
    return str(row[0])


@pytest.mark.parametrize(
    "commands",
    [1_000, pytest.param(10_000, marks=pytest.mark.long)],  # `make drills`: 10,000
)
def test_standby_holds_the_same_state_after_many_commands(cluster: Cluster, commands: int) -> None:
    started = time.monotonic()
    cluster.start("primary")
    cluster.start("standby")
    print(f"\nboth regions answering after {time.monotonic() - started:.1f}s")
    cluster.create_keys()
    ids = [f"load-{i}" for i in range(commands)]
    result = asyncio.run(
        place_orders(
            cluster.url("primary"),
            cluster.key,
            ids,
            concurrency=48,
            retries=5,
            funding_key=cluster.funding_key,
        )
    )
    # every order acknowledged exactly once (a retry after a 503 returns the first outcome)
    assert result["statuses"] == {201: commands} or (
        set(result["statuses"]) <= {200, 201} and len(result["acked"]) == commands
    ), result["statuses"]
    # nothing placed twice: each acknowledged order has a seq of its own
    assert len(set(result["acked"].values())) == commands
    seq = caught_up(cluster)
    assert seq == commands + 1
    assert_same_state(cluster)
    # every acknowledged command is on the standby (sync mode: RPO = 0)
    assert max(result["acked"].values()) <= cluster.shards("standby")[SHARD]["seq"]
    # the regions share a peer token: records went on the peer link, its answers confirmed them
    metrics = httpx.get(cluster.url("primary") + "/metrics").text
    pattern = r'^replication_confirmations_total\{path="push"\} ([0-9.e+]+)$'
    pushed = re.search(pattern, metrics, re.M)
    assert pushed is not None and float(pushed.group(1)) > 0, "no peer-link confirmation taken"
    link = r'^replication_peer_link_up\{peer="standby",shard="shard-1"\} 1\.0$'
    assert re.search(link, metrics, re.M), "the peer link is not up"
    joined = re.findall(r"group joined after ([0-9.]+)s", cluster.log("standby").read_text())
    print(f"standby consumer group joined after {joined} s")


def test_broker_restart_loses_topics_but_not_records(cluster: Cluster) -> None:
    cluster.start("primary")
    cluster.start("standby")
    cluster.create_keys()
    first = asyncio.run(
        place_orders(
            cluster.url("primary"),
            cluster.key,
            [f"a-{i}" for i in range(400)],
            funding_key=cluster.funding_key,
        )
    )
    assert first["statuses"] == {201: 400}
    cluster.restart_broker()  # every topic, offset and group is gone
    second = asyncio.run(
        place_orders(
            cluster.url("primary"),
            cluster.key,
            [f"b-{i}" for i in range(400)],
            funding_key=cluster.funding_key,
        )
    )
    # the broker is gone for a while: some orders may be refused (503), not all of them
    assert set(second["statuses"]) <= {201, 503}, second["statuses"]
    assert second["statuses"].get(201, 0) > 0, second["statuses"]
    caught_up(cluster)
    assert_same_state(cluster)
    # the clients retry what was refused: every order ends acknowledged exactly once, and an
    # order acknowledged before is answered with its first outcome (200, same seq)
    retried = asyncio.run(
        place_orders(
            cluster.url("primary"),
            cluster.key,
            [f"b-{i}" for i in range(400)],
            funding_key=cluster.funding_key,
        )
    )
    assert set(retried["statuses"]) <= {200, 201} and len(retried["acked"]) == 400
    assert retried["statuses"].get(201, 0) <= 400 - len(second["acked"])
    assert all(retried["acked"][cid] == seq for cid, seq in second["acked"].items())
    # 800 orders and the three deposits place_orders made: nothing lost, nothing twice
    assert caught_up(cluster) == 803
    assert_same_state(cluster)


def test_standby_killed_with_sigkill_catches_up_exactly_once(cluster: Cluster) -> None:
    cluster.start("primary", EXDR_REPLICATION="async")
    cluster.start("standby")
    cluster.create_keys()
    ids = [f"k-{i}" for i in range(1500)]

    async def load_and_kill() -> dict[str, object]:
        task = asyncio.create_task(
            place_orders(cluster.url("primary"), cluster.key, ids, funding_key=cluster.funding_key)
        )
        await asyncio.sleep(2.0)
        cluster.stop("standby", signal.SIGKILL)
        result = await task
        return result

    result = asyncio.run(load_and_kill())
    # every order acknowledged once (a client's retry after a timeout gets the first outcome)
    assert set(result["statuses"]) <= {200, 201} and len(result["acked"]) == 1500, result
    assert len(set(result["acked"].values())) == 1500
    cluster.start("standby")
    caught_up(cluster)
    assert_same_state(cluster)


def test_record_altered_in_transit_is_never_applied_and_heals(cluster: Cluster) -> None:
    cluster.start("primary", EXDR_FAULT_TAMPER_SEQS="5,40")
    cluster.start("standby")
    cluster.create_keys()
    result = asyncio.run(
        place_orders(
            cluster.url("primary"),
            cluster.key,
            [f"t-{i}" for i in range(100)],
            funding_key=cluster.funding_key,
        )
    )
    assert result["statuses"] == {201: 100}
    caught_up(cluster)
    assert_same_state(cluster)
    log = cluster.log("standby").read_text()
    for seq in (5, 40):
        assert f"corrupt WAL record in transit: shard {SHARD} seq {seq}" in log
        assert f"healed shard={SHARD} seq={seq}" in log
    assert cluster.metric("standby", "replication_corrupt_records_total") == 2


def test_sync_strict_acknowledges_nothing_without_a_standby(cluster: Cluster) -> None:
    cluster.start("primary", EXDR_SYNC_POLICY="strict", EXDR_SYNC_TIMEOUT_MS="400")
    cluster.create_keys()
    headers = {"Authorization": f"Bearer {cluster.funding_key}"}
    body = {"amount": "1000", "symbol": "BTCUSDT", "account": "traders"}
    with httpx.Client(base_url=cluster.url("primary"), headers=headers, timeout=10) as client:
        deposit = client.post("/v1/deposits", json=body)
        assert deposit.status_code == 503, deposit.text
        assert deposit.json()["code"] == "unavailable"
    # the standby arrives: it copies what the primary stored, and acks flow again
    cluster.start("standby")
    caught_up(cluster)
    with httpx.Client(base_url=cluster.url("primary"), headers=headers, timeout=10) as client:
        again = client.post("/v1/deposits", json=body)
        assert again.status_code == 201, again.text


def test_sync_degrade_alerts_and_continues_without_a_standby(cluster: Cluster) -> None:
    cluster.start("primary", EXDR_SYNC_POLICY="degrade", EXDR_SYNC_TIMEOUT_MS="400")
    cluster.create_keys()
    result = asyncio.run(
        place_orders(
            cluster.url("primary"),
            cluster.key,
            [f"d-{i}" for i in range(50)],
            funding_key=cluster.funding_key,
        )
    )
    assert result["statuses"] == {201: 50}
    log = cluster.log("primary").read_text()
    assert "replication degraded to ASYNC" in log
    assert cluster.metric("primary", "replication_degraded") == 1
    cluster.start("standby")
    caught_up(cluster)
    wait_for(
        lambda: cluster.metric("primary", "replication_degraded") == 0, 10, "sync mode to come back"
    )
