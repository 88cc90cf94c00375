"""A batch whose commit fails, over real HTTP: what it did in memory is gone before the next read
(engine and history overlay alike), and the overlay takes it back from its journal, not by
reading the store again; a commit that landed although it reported a failure stays."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from infra.api.facade import Facade
from infra.api.leadership import StaticLeadership
from infra.bootstrap import drop_database, migrate
from tests.e2e.conftest import NewAccount, Served, serve_in_thread, unique
from tests.integration.conftest import scratch_dsn

SHARD = "shard-1"


def order(price: str, **fields: Any) -> dict[str, Any]:
    """Each test trades at its own price; the module's book is its own (other tests' resting
    orders would take the trades), and each test cancels its maker's rest at the end."""
    body = {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "price": price,
        "quantity": "0.004",
        "client_order_id": unique("c"),
        "time_in_force": "IOC",
    }
    body.update(fields)
    return body


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """This module's own facade and database (conftest's `new_account` uses it here)."""
    dsn = scratch_dsn("failed_commit")
    migrate(dsn)
    running = serve_in_thread(dsn, StaticLeadership(leads=True))
    try:
        yield running
    finally:
        running.stop()
        drop_database(dsn)


@pytest.fixture
def rebuilds(served: Served, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    facade: Facade = served.server.config.app.state.facade  # type: ignore[union-attr]
    calls: list[int] = []
    real = facade._fill

    def counted(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        real(*args, **kwargs)

    monkeypatch.setattr(facade, "_fill", counted)
    yield calls


def fail_next_commit(served: Served, monkeypatch: pytest.MonkeyPatch, *, lands: bool) -> None:
    """The next commit raises; with `lands` it is stored first (the answer was lost)."""
    store = served.writers[SHARD].app.store
    real = store.append

    def append(*args: Any, **kwargs: Any) -> None:
        monkeypatch.setattr(store, "append", real)
        if lands:
            real(*args, **kwargs)
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(store, "append", append)


def trade_whose_commit_fails(
    served: Served,
    maker: httpx.Client,
    taker: httpx.Client,
    price: str,
    monkeypatch: pytest.MonkeyPatch,
    *,
    lands: bool,
) -> tuple[str, dict[str, Any]]:
    """The maker rests a sell; the taker's buy against it answers 503 (its commit failed).
    Returns the sell's order id and the buy's body (for a retry)."""
    sell = maker.post(
        "/v1/orders", json=order(price, side="SELL", quantity="0.010", time_in_force="GTC")
    )
    assert sell.status_code == 201, sell.text
    fail_next_commit(served, monkeypatch, lands=lands)
    body = order(price)
    failed = taker.post("/v1/orders", json=body)
    assert failed.status_code == 503 and failed.json()["code"] == "unavailable"
    return sell.json()["order_id"], body


def test_a_batch_that_did_not_land_is_not_read(
    served: Served,
    new_account: NewAccount,
    rebuilds: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    price = "61234.5"
    maker, taker = new_account(), new_account()
    margin = taker.get("/v1/accounts/me").json()["balances"]
    sell_id, _ = trade_whose_commit_fails(served, maker, taker, price, monkeypatch, lands=False)

    # no command since: the reads themselves see the shard without the failed batch
    assert maker.get(f"/v1/orders/{sell_id}").json()["status"] == "NEW"
    assert taker.get("/v1/orders").json()["orders"] == []
    assert taker.get("/v1/trades").json()["trades"] == []
    assert maker.get("/v1/trades").json()["trades"] == []
    assert taker.get("/v1/positions").json()["positions"] == []
    assert taker.get("/v1/accounts/me").json()["balances"] == margin
    assert rebuilds == []

    # the shard goes on: the same trade now lands, with the fill on both sides
    again = taker.post("/v1/orders", json=order(price))
    assert again.status_code == 201, again.text
    assert again.json()["status"] == "FILLED"
    assert maker.get(f"/v1/orders/{sell_id}").json()["status"] == "PARTIALLY_FILLED"
    assert len(taker.get("/v1/trades").json()["trades"]) == 1
    assert len(maker.get("/v1/trades").json()["trades"]) == 1
    assert rebuilds == []
    assert maker.delete(f"/v1/orders/{sell_id}").status_code == 200


def test_a_commit_that_landed_but_reported_a_failure_stays(
    served: Served,
    new_account: NewAccount,
    rebuilds: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    price = "61200.3"
    maker, taker = new_account(), new_account()
    sell_id, body = trade_whose_commit_fails(served, maker, taker, price, monkeypatch, lands=True)

    listed = taker.get("/v1/orders").json()["orders"]
    assert [o["status"] for o in listed] == ["FILLED"]
    assert maker.get(f"/v1/orders/{sell_id}").json()["status"] == "PARTIALLY_FILLED"
    assert len(taker.get("/v1/trades").json()["trades"]) == 1
    retry = taker.post("/v1/orders", json=body)
    assert retry.status_code == 200, retry.text
    assert retry.json()["order_id"] == listed[0]["order_id"]
    assert rebuilds == []
    assert maker.delete(f"/v1/orders/{sell_id}").status_code == 200
