"""A standby away past the maximum hold, with real processes: the leader archives past it; when
it returns it re-seeds from the leader's checkpoint and archive by itself (an alert says so),
catches up to the leader's state, and takes over when the leader dies."""

from __future__ import annotations

import asyncio
import contextlib
import json
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
ENV = {
    "EXDR_REPLICATION": "async",
    "EXDR_CHECKPOINT_EVERY": "200",
    "EXDR_WAL_RETAIN_RECORDS": "200",
    "EXDR_ARCHIVE_SEGMENT_RECORDS": "500",
    "EXDR_ARCHIVE_MAX_HOLD_S": "2",
    "EXDR_ARCHIVE_INTERVAL_S": "0.5",
    "EXDR_ARCHIVE_READ_MODELS": "ignore",
}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    c.prepare()
    try:
        yield c
    finally:
        c.close()


def _archived_seq(cluster: Cluster, region: str) -> int:
    with psycopg.connect(cluster.dsns[region]) as conn:
        row = conn.execute(
            "SELECT coalesce(max(last_seq), 0) FROM wal_archive_segments "
            "WHERE shard_id = %s AND deleted",
            (SHARD,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_standby_back_after_the_leader_archived_past_it_reseeds_and_can_take_over(
    cluster: Cluster,
) -> None:
    cluster.start("primary", **ENV)
    cluster.start("standby", **ENV)
    cluster.create_keys()
    first = asyncio.run(
        place_orders(
            cluster.url("primary"),
            cluster.key,
            [f"a-{i}" for i in range(300)],
            funding_key=cluster.funding_key,
        )
    )
    assert first["statuses"] == {201: 300}
    wait_for(
        lambda: cluster.shards("standby")[SHARD]["seq"] == cluster.shards("primary")[SHARD]["seq"],
        60,
        "the standby to catch up",
    )
    cluster.stop("standby", signal.SIGKILL)
    stored = cluster.store_heads("standby")[SHARD][0]

    second = asyncio.run(
        place_orders(
            cluster.url("primary"),
            cluster.key,
            [f"b-{i}" for i in range(1500)],
            funding_key=cluster.funding_key,
        )
    )
    assert second["statuses"] == {201: 1500}
    wait_for(
        lambda: _archived_seq(cluster, "primary") > stored + 200,
        60,
        f"the leader to archive past the standby's seq {stored}",
    )
    archived = _archived_seq(cluster, "primary")

    cluster.start("standby", **ENV)
    wait_for(
        lambda: cluster.shards("standby")[SHARD]["seq"] == cluster.shards("primary")[SHARD]["seq"],
        60,
        "the standby to re-seed and catch up",
    )
    log = cluster.log("standby").read_text()
    alerts = [
        json.loads(line.split("ALERT ", 1)[1])
        for line in log.splitlines()
        if '"alert": "StandbyReseeding"' in line
    ]
    assert alerts, log[-3000:]
    # the intake may have copied a few archived records before the catch-up timer re-seeded
    assert alerts[0]["shard"] == SHARD and alerts[0]["region"] == "standby"
    assert stored < alerts[0]["from_seq"] <= alerts[0]["to_seq"] <= alerts[0]["checkpoint_seq"]
    assert "standby reseeded shard=shard-1" in log
    primary = cluster.shards("primary", state_hash=True)[SHARD]
    standby = cluster.shards("standby", state_hash=True)[SHARD]
    assert (standby["seq"], standby["state_hash"]) == (primary["seq"], primary["state_hash"])
    assert _archived_seq(cluster, "standby") >= archived  # its archive holds the range

    # it confirms what comes next
    third = asyncio.run(
        place_orders(
            cluster.url("primary"),
            cluster.key,
            [f"c-{i}" for i in range(100)],
            funding_key=cluster.funding_key,
        )
    )
    assert third["statuses"] == {201: 100}
    wait_for(
        lambda: cluster.shards("standby")[SHARD]["seq"] == cluster.shards("primary")[SHARD]["seq"],
        60,
        "the standby to follow",
    )
    primary = cluster.shards("primary", state_hash=True)[SHARD]
    standby = cluster.shards("standby", state_hash=True)[SHARD]
    assert standby["state_hash"] == primary["state_hash"]

    # and takes over: the leader dies, the re-seeded standby leads and accepts an order
    cluster.stop("primary", signal.SIGKILL)
    wait_for(lambda: cluster.shards("standby")[SHARD]["leader"] is True, 30, "a failover")
    promoted = cluster.shards("standby", state_hash=True)[SHARD]
    assert promoted["state_hash"] == primary["state_hash"]
    headers = {"Authorization": f"Bearer {cluster.key}"}
    body = {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "type": "LIMIT",
        "price": "49000",
        "quantity": "0.001",
        "client_order_id": "after-failover",
    }
    deadline = time.monotonic() + 15
    status = 0
    while time.monotonic() < deadline and status != 201:
        with contextlib.suppress(httpx.HTTPError):
            status = httpx.post(
                cluster.url("standby") + "/v1/orders", json=body, headers=headers, timeout=2
            ).status_code
        time.sleep(0.1)
    assert status == 201
