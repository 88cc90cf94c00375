"""A facade that indexes its order history in the background: commands are taken from the first
moment, reads the index cannot answer yet say warming_up (503), and once it has caught up the
listings hold every order exactly once, those placed during the warm-up included."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from infra.api.activity import ShardActivity
from infra.api.leadership import StaticLeadership
from infra.bootstrap import drop_database, migrate
from tests.e2e.conftest import MARGIN, Served, serve_in_thread, unique
from tests.integration.conftest import scratch_dsn

HISTORY = 40


def order(**fields: Any) -> dict[str, Any]:
    body = {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "price": "50000.1",
        "quantity": "0.001",
        "client_order_id": unique("c"),
    }
    body.update(fields)
    return body


def client(served: Served, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=served.url, timeout=20, headers={"Authorization": f"Bearer {token}"}
    )


@pytest.fixture
def history() -> Iterator[tuple[str, str, list[str]]]:
    """A database whose WAL holds an account's orders, the first of them filled by another
    account, served no more."""
    dsn = scratch_dsn("warm_start")
    migrate(dsn)
    first = serve_in_thread(dsn, StaticLeadership(leads=True))
    try:
        tokens = []
        for _ in range(2):
            name = unique("acct")
            first.keys.create_account(name)
            tokens.append(first.keys.create_key(name, "trader", funding=True).token)
        token, other = tokens
        with client(first, token) as c, client(first, other) as seller:
            for account in (c, seller):
                deposit = account.post("/v1/deposits", json={"amount": MARGIN, "shard": "shard-1"})
                assert deposit.status_code == 201, deposit.text
            ids = []
            for _ in range(HISTORY):
                placed = c.post("/v1/orders", json=order())
                assert placed.status_code == 201, placed.text
                ids.append(placed.json()["order_id"])
            sold = seller.post("/v1/orders", json=order(side="SELL", time_in_force="IOC"))
            assert sold.json()["status"] == "FILLED", sold.text
    finally:
        first.stop()
    try:
        yield dsn, token, ids
    finally:
        drop_database(dsn)


def test_commands_flow_while_the_history_is_indexed(
    history: tuple[str, str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    dsn, token, old_ids = history
    release = threading.Event()
    real_build = ShardActivity.build

    def held_build(self: ShardActivity, *args: Any, **kwargs: Any) -> int:
        assert release.wait(30)
        return real_build(self, *args, **kwargs)

    monkeypatch.setattr(ShardActivity, "build", held_build)
    served = serve_in_thread(dsn, StaticLeadership(leads=True), warm=True)
    try:
        with client(served, token) as c:
            placed = c.post("/v1/orders", json=order(price="49000.1"))
            assert placed.status_code == 201, placed.text
            new_id = placed.json()["order_id"]
            assert c.get(f"/v1/orders/{new_id}").status_code == 200
            for path in ("/v1/orders", "/v1/trades", f"/v1/orders/{old_ids[1]}"):
                early = c.get(path)
                assert early.status_code == 503 and early.json()["code"] == "warming_up", path
                assert early.headers["Retry-After"] == "1"
            refused = c.delete(f"/v1/orders/{old_ids[1]}")
            assert refused.status_code == 503 and refused.json()["code"] == "warming_up"
            assert c.get("/v1/accounts/me").status_code == 200  # the engine needs no index

            release.set()
            deadline = time.monotonic() + 15
            while (listed := c.get("/v1/orders", params={"limit": 500})).status_code == 503:
                assert time.monotonic() < deadline, "the index never caught up"
                time.sleep(0.05)
            ids = [o["order_id"] for o in listed.json()["orders"]]
            assert ids == [*old_ids, new_id]
            assert [t["order_id"] for t in c.get("/v1/trades").json()["trades"]] == [old_ids[0]]
            assert c.delete(f"/v1/orders/{old_ids[1]}").status_code == 200
    finally:
        release.set()
        served.stop()
