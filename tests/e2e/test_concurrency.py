"""50 clients retrying the same client_order_id at once produce exactly one order."""

from __future__ import annotations

import threading
from decimal import Decimal

import httpx

from tests.e2e.conftest import NewAccount, Served
from tests.e2e.test_orders import order

CLIENTS = 50


def test_fifty_concurrent_retries_make_one_order(new_account: NewAccount,
                                                 served: Served) -> None:
    owner = new_account()
    token = owner.token  # type: ignore[attr-defined]
    body = order(symbol="ETHUSDT", price="2999.99", quantity="0.37")
    barrier = threading.Barrier(CLIENTS)
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def retry() -> None:
        with httpx.Client(base_url=served.url, timeout=30,
                          headers={"Authorization": f"Bearer {token}"}) as client:
            client.get("/health")  # connect before the barrier so the posts really race
            barrier.wait()
            response = client.post("/v1/orders", json=body)
        with lock:
            results.append(response)

    threads = [threading.Thread(target=retry) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    statuses = sorted(r.status_code for r in results)
    assert statuses == [200] * (CLIENTS - 1) + [201]
    assert len({r.json()["order_id"] for r in results}) == 1
    assert len({r.json()["seq"] for r in results}) == 1
    orders = owner.get("/v1/orders").json()["orders"]
    assert len(orders) == 1
    balances = {b["shard"]: b for b in owner.get("/v1/accounts/me").json()["balances"]}
    assert Decimal(balances["shard-1"]["order_margin"]) == Decimal(orders[0]["reserved_margin"])
