"""A node's reads, with real processes: shown once a majority of replicas holds them.

A leader in strict sync mode whose standby is paused commits an order it cannot acknowledge;
its reads of that state answer 503 `unconfirmed` until the standby, resumed, confirms it; then
they answer `X-Exdr-State: confirmed`. A standby that finished its rejoin check shows what it
applied as confirmed.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.drills.cluster import Cluster, place_orders, wait_for

pytestmark = pytest.mark.drill

SHARD = "shard-1"
BOOK = "/v1/book/BTCUSDT"


def _get(cluster: Cluster, region: str, path: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {cluster.key}"}
    return httpx.get(cluster.url(region) + path, headers=headers, timeout=10)


def _state(cluster: Cluster, region: str, path: str = BOOK) -> str:
    response = _get(cluster, region, path)
    if response.status_code == 503:
        return str(response.json()["code"])
    return str(response.headers.get("X-Exdr-State"))


def test_a_node_shows_only_what_a_majority_holds(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, env={"EXDR_SYNC_POLICY": "strict", "EXDR_SYNC_TIMEOUT_MS": "500"})
    cluster.prepare()
    try:
        cluster.start("primary")
        cluster.start("standby")
        cluster.create_keys()
        placed = asyncio.run(
            place_orders(
                cluster.url("primary"),
                cluster.key,
                [f"r-{i}" for i in range(20)],
                funding_key=cluster.funding_key,
            )
        )
        assert placed["statuses"] == {201: 20}
        book = _get(cluster, "primary", BOOK)
        assert book.status_code == 200 and book.headers["X-Exdr-State"] == "confirmed"
        assert int(book.headers["X-Exdr-Seq"]) == book.json()["seq"]
        # the standby rejoined (its check is done): what it applied is on two replicas
        wait_for(lambda: _state(cluster, "standby") == "confirmed", 30, "standby's reads")

        standby = cluster.procs["standby"]
        standby.send_signal(signal.SIGSTOP)
        try:
            headers = {"Authorization": f"Bearer {cluster.key}"}
            body: dict[str, Any] = {
                "symbol": "BTCUSDT",
                "side": "BUY",
                "price": "49000",
                "quantity": "0.001",
                "client_order_id": "unconfirmed-1",
            }
            response = httpx.post(
                cluster.url("primary") + "/v1/orders", headers=headers, json=body, timeout=10
            )
            assert response.status_code == 503, response.text  # committed, not acknowledged
            refused = _get(cluster, "primary", BOOK)
            assert refused.status_code == 503 and refused.json()["code"] == "unconfirmed"
            assert _state(cluster, "primary", "/v1/orders") == "unconfirmed"
            # the operators' view is never held back: it answers, at the unconfirmed seq
            assert cluster.shards("primary")[SHARD]["seq"] > book.json()["seq"]
        finally:
            standby.send_signal(signal.SIGCONT)
        wait_for(lambda: _state(cluster, "primary") == "confirmed", 30, "the standby to confirm")
    finally:
        cluster.close()
