"""Order and trade history over real HTTP, from the read models and the overlay of what they do
not hold yet: a client reads its own writes at once; once the projector has caught up the same
listings come from SQL with the overlay empty; pages cross the seam without duplicates or holes;
a restart answers listings at once and holds only the unprojected tail in memory."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from infra.api.leadership import StaticLeadership
from infra.bootstrap import drop_database, make_projector, migrate
from infra.settings import Settings
from projections.read_models.projector import ReadModelProjector
from tests.e2e.conftest import MARGIN, Served, serve_in_thread, unique
from tests.integration.conftest import scratch_dsn


@pytest.fixture
def history_dsn() -> Iterator[str]:
    """A database of its own: the projector here moves every shard's tracking row."""
    dsn = scratch_dsn("history")
    migrate(dsn)
    try:
        yield dsn
    finally:
        drop_database(dsn)


@pytest.fixture
def running(history_dsn: str) -> Iterator[Served]:
    served = serve_in_thread(history_dsn, StaticLeadership(leads=True))
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture
def projector(history_dsn: str) -> Iterator[ReadModelProjector]:
    made = make_projector(Settings.from_env(os.environ), dsn=history_dsn)
    try:
        yield made
    finally:
        made.sessions.kw["bind"].dispose()


def account(served: Served) -> httpx.Client:
    """A trader with margin on every shard, deposited through a funding key."""
    treasury = unique("treasury")
    served.keys.create_account(treasury)
    funding = served.keys.create_key(treasury, "operator", funding=True).token
    name = unique("acct")
    served.keys.create_account(name)
    token = served.keys.create_key(name, "trader").token
    for shard in served.writers:
        response = httpx.post(
            served.url + "/v1/deposits",
            json={"amount": MARGIN, "shard": shard, "account": name},
            headers={"Authorization": f"Bearer {funding}"},
            timeout=20,
        )
        assert response.status_code == 201, response.text
    return httpx.Client(
        base_url=served.url, timeout=20, headers={"Authorization": f"Bearer {token}"}
    )


def order(**fields: Any) -> dict[str, Any]:
    body = {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "price": "50000.1",
        "quantity": "0.002",
        "client_order_id": unique("c"),
    }
    body.update(fields)
    return body


def place(client: httpx.Client, **fields: Any) -> dict[str, Any]:
    response = client.post("/v1/orders", json=order(**fields))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def project_all(served: Served, projector: ReadModelProjector) -> None:
    """The read models catch up with every shard, and the overlay is trimmed behind them."""
    for shard in served.writers:
        projector.catch_up(shard)
    deadline = time.monotonic() + 10
    while served.facade.overlay_size:
        assert time.monotonic() < deadline, f"overlay still {served.facade.overlay_size}"
        time.sleep(0.02)


def every_page(client: httpx.Client, path: str, key: str, **params: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        body = page.json()
        found.extend(body[key])
        cursor = body["next_cursor"]
        if cursor is None:
            return found


def test_reads_your_writes_then_the_same_from_sql(
    running: Served, projector: ReadModelProjector
) -> None:
    maker, taker = account(running), account(running)
    # an order acknowledged a moment ago is found by id and listed, before any projection
    rest = place(maker, side="SELL", price="50010.5", quantity="0.005")
    assert maker.get(f"/v1/orders/{rest['order_id']}").json() == rest
    assert maker.get("/v1/orders").json()["orders"] == [rest]
    taken = place(taker, price="50010.5", quantity="0.002", time_in_force="IOC")
    assert taken["status"] == "FILLED"
    maker_fills = maker.get("/v1/trades").json()["trades"]
    taker_fills = taker.get("/v1/trades").json()["trades"]
    assert [f["liquidity"] for f in maker_fills + taker_fills] == ["MAKER", "TAKER"]
    before = {
        "rest": maker.get(f"/v1/orders/{rest['order_id']}").json(),
        "maker_orders": maker.get("/v1/orders").json(),
        "taker_orders": taker.get("/v1/orders").json(),
        "maker_fills": maker.get("/v1/trades").json(),
        "taker_fills": taker.get("/v1/trades").json(),
        "partial": maker.get("/v1/orders", params={"status": "PARTIALLY_FILLED"}).json(),
    }
    assert before["rest"]["status"] == "PARTIALLY_FILLED"

    project_all(running, projector)
    assert running.facade.overlay_size == 0  # nothing left in memory: every answer is SQL's
    after = {
        "rest": maker.get(f"/v1/orders/{rest['order_id']}").json(),
        "maker_orders": maker.get("/v1/orders").json(),
        "taker_orders": taker.get("/v1/orders").json(),
        "maker_fills": maker.get("/v1/trades").json(),
        "taker_fills": taker.get("/v1/trades").json(),
        "partial": maker.get("/v1/orders", params={"status": "PARTIALLY_FILLED"}).json(),
    }
    assert after == before  # the same JSON, byte for byte

    # an old order is cancelled through its SQL row (the lookup of its shard included)
    cancelled = maker.delete(f"/v1/orders/{rest['order_id']}")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "CANCELLED"
    assert maker.get(f"/v1/orders/{rest['order_id']}").json() == cancelled.json()
    project_all(running, projector)
    assert maker.get(f"/v1/orders/{rest['order_id']}").json() == cancelled.json()
    other = account(running)
    missing = other.get(f"/v1/orders/{rest['order_id']}")
    assert missing.status_code == 404  # another account's old order stays invisible


def test_pages_cross_the_seam_without_duplicates_or_holes(
    running: Served, projector: ReadModelProjector
) -> None:
    client = account(running)
    placed = [place(client, price=f"4{n:04d}.5")["order_id"] for n in range(7)]
    project_all(running, projector)
    placed += [place(client, price=f"4{n:04d}.5")["order_id"] for n in range(7, 12)]
    placed += [place(client, symbol="SOLUSDT", price="100.25", quantity="1")["order_id"]]
    assert running.facade.overlay_size == 6  # only what came after the tracking row
    for limit in (1, 2, 3, 5, 7, 500):
        listed = every_page(client, "/v1/orders", "orders", limit=limit)
        assert [o["order_id"] for o in listed] == placed, limit

    # trades: fills on both sides of the seam, as maker and as taker
    trader, seller = account(running), account(running)
    eth = {"symbol": "ETHUSDT", "quantity": "0.01"}
    for n in range(3):
        place(seller, side="SELL", price=f"30{n:02d}.25", **eth)
    place(trader, price="3999.5", time_in_force="IOC", **(eth | {"quantity": "0.03"}))
    project_all(running, projector)
    place(trader, side="SELL", price="2888.5", **eth)
    place(seller, price="2888.5", time_in_force="IOC", **eth)
    place(seller, side="SELL", price="2800.5", **eth)
    place(trader, price="2800.5", time_in_force="IOC", **eth)
    client = trader
    whole = every_page(client, "/v1/trades", "trades", limit=500)
    first = whole[0]["trade_id"]
    assert [(f["trade_id"] - first, f["liquidity"]) for f in whole] == [
        (0, "TAKER"),
        (1, "TAKER"),
        (2, "TAKER"),
        (3, "MAKER"),
        (4, "TAKER"),
    ]
    for limit in (1, 2, 4):
        assert every_page(client, "/v1/trades", "trades", limit=limit) == whole
    project_all(running, projector)
    assert every_page(client, "/v1/trades", "trades", limit=2) == whole


def test_a_status_that_changed_after_projection_is_filtered_by_the_new_one(
    running: Served, projector: ReadModelProjector
) -> None:
    maker, taker = account(running), account(running)
    rest = place(maker, side="SELL", price="51111.5", quantity="0.002")
    project_all(running, projector)  # projected as NEW
    place(taker, price="51111.5", quantity="0.002", time_in_force="IOC")  # now FILLED
    assert running.facade.overlay_size > 0
    by_status = {
        status: [
            o["order_id"]
            for o in maker.get("/v1/orders", params={"status": status}).json()["orders"]
        ]
        for status in ("NEW", "FILLED")
    }
    assert by_status == {"NEW": [], "FILLED": [rest["order_id"]]}
    project_all(running, projector)
    assert maker.get("/v1/orders", params={"status": "NEW"}).json()["orders"] == []
    [filled] = maker.get("/v1/orders", params={"status": "FILLED"}).json()["orders"]
    assert filled["order_id"] == rest["order_id"] and filled["filled_quantity"] == "0.002"


def test_a_restart_answers_at_once_and_holds_only_the_tail(
    history_dsn: str, projector: ReadModelProjector
) -> None:
    first = serve_in_thread(history_dsn, StaticLeadership(leads=True))
    try:
        client = account(first)
        token = client.headers["Authorization"]
        for n in range(30):
            place(client, price=f"4{n:04d}.5")
        seller = account(first)
        seller_token = seller.headers["Authorization"]
        place(seller, side="SELL", price="40029.5", quantity="0.004")  # rests 0.002
        project_all(first, projector)
        # the unprojected tail: a new order that fills part of the seller's older one
        place(client, price="40029.5", quantity="0.001", time_in_force="IOC")
        listing = every_page(client, "/v1/orders", "orders", limit=500)
        fills = every_page(client, "/v1/trades", "trades", limit=500)
        seller_orders = every_page(seller, "/v1/orders", "orders", limit=500)
        seller_fills = every_page(seller, "/v1/trades", "trades", limit=500)
        assert seller_orders[0]["filled_quantity"] == "0.003" and len(seller_fills) == 2
    finally:
        first.stop()

    started = time.monotonic()
    second = serve_in_thread(history_dsn, StaticLeadership(leads=True))
    try:
        again = httpx.Client(base_url=second.url, timeout=20, headers={"Authorization": token})
        response = again.get("/v1/orders", params={"limit": 500})
        assert response.status_code == 200, response.text  # no warming_up
        assert time.monotonic() - started < 15
        assert response.json()["orders"] == listing
        assert every_page(again, "/v1/trades", "trades", limit=500) == fills
        # the older order's change in the tail is indexed from the store, not read from SQL
        other = httpx.Client(
            base_url=second.url, timeout=20, headers={"Authorization": seller_token}
        )
        assert every_page(other, "/v1/orders", "orders", limit=500) == seller_orders
        assert every_page(other, "/v1/trades", "trades", limit=500) == seller_fills
        # the tail (two order views, two fills), not the 32 orders of history
        assert second.facade.overlay_size == 4
        metrics = httpx.get(second.url + "/metrics", timeout=10).text
        assert 'exdr_api_history_overlay_entries{shard="shard-1"} 4.0' in metrics
    finally:
        second.stop()


def test_a_long_tail_is_indexed_in_the_background(
    history_dsn: str, projector: ReadModelProjector
) -> None:
    first = serve_in_thread(history_dsn, StaticLeadership(leads=True))
    try:
        client = account(first)
        token = client.headers["Authorization"]
        for n in range(6):
            place(client, price=f"4{n:04d}.5")
        project_all(first, projector)
        for n in range(6, 12):
            place(client, price=f"4{n:04d}.5")
        listing = every_page(client, "/v1/orders", "orders", limit=500)
    finally:
        first.stop()

    # a tail longer than EXDR_OVERLAY_SYNC_RECORDS: commands at once, listings once indexed
    second = serve_in_thread(
        history_dsn, StaticLeadership(leads=True), env={"EXDR_OVERLAY_SYNC_RECORDS": "2"}
    )
    try:
        again = httpx.Client(base_url=second.url, timeout=20, headers={"Authorization": token})
        deadline = time.monotonic() + 15
        while True:
            response = again.get("/v1/orders", params={"limit": 500})
            if response.status_code == 200:
                break
            assert response.status_code == 503 and response.json()["code"] == "warming_up"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert response.json()["orders"] == listing
        assert second.facade.overlay_size == 6
    finally:
        second.stop()
