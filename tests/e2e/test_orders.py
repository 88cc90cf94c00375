"""Orders, deposits, positions, trades and the book over real HTTP."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from domain.values import DEFAULT_INSTRUMENTS, money
from tests.e2e.conftest import NewAccount, unique

BTC = {i.symbol: i for i in DEFAULT_INSTRUMENTS}["BTCUSDT"]


def order(**fields: Any) -> dict[str, Any]:
    body = {"symbol": "BTCUSDT", "side": "BUY", "price": "50000.1", "quantity": "0.123",
            "client_order_id": unique("c")}
    body.update(fields)
    return body


def test_place_get_list_cancel(new_account: NewAccount) -> None:
    c = new_account()
    placed = c.post("/v1/orders", json=order())
    assert placed.status_code == 201, placed.text
    view = placed.json()
    assert view["status"] == "NEW" and view["shard"] == "shard-1" and view["seq"] > 0
    assert c.get(f"/v1/orders/{view['order_id']}").json() == view

    listed = c.get("/v1/orders", params={"symbol": "BTCUSDT", "status": "NEW"}).json()
    assert [o["order_id"] for o in listed["orders"]] == [view["order_id"]]

    cancelled = c.delete(f"/v1/orders/{view['order_id']}")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "CANCELLED"
    assert cancelled.json()["seq"] > view["seq"]
    again = c.delete(f"/v1/orders/{view['order_id']}")
    assert again.status_code == 409 and again.json()["code"] == "order_not_open"
    closed = c.get("/v1/orders", params={"status": "CANCELLED"}).json()["orders"]
    assert [o["order_id"] for o in closed] == [view["order_id"]]
    me = c.get("/v1/accounts/me").json()["balances"][0]
    assert Decimal(me["order_margin"]) == 0


def test_decimals_stay_exact(new_account: NewAccount) -> None:
    c = new_account(deposit=None, funding=True)
    r = c.post("/v1/deposits", json={"amount": "1234.56789012", "symbol": "BTCUSDT"})
    assert r.status_code == 201, r.text
    assert r.json()["balance"]["balance"] == "1234.56789012"
    r = c.post("/v1/deposits", json={"amount": "0.00000001", "shard": "shard-1"})
    assert r.json()["balance"]["balance"] == "1234.56789013"

    placed = c.post("/v1/orders", json=order(price="1234.5", quantity="0.007", leverage=7))
    assert placed.status_code == 201, placed.text
    view = placed.json()
    assert (view["price"], view["quantity"]) == ("1234.5", "0.007")
    reserve = money(BTC.reserve_per_lot_e8(BTC.price_to_ticks(Decimal("1234.5")), 7) * 7)
    assert Decimal(view["reserved_margin"]) == reserve
    me = c.get("/v1/accounts/me").json()["balances"][0]
    assert Decimal(me["available"]) == Decimal("1234.56789013") - reserve
    assert Decimal(me["reserved_margin"]) == reserve


def test_trade_shows_in_trades_positions_and_book(new_account: NewAccount) -> None:
    maker, taker = new_account(), new_account()
    price = "61000.3"
    sell = maker.post("/v1/orders", json=order(side="SELL", price=price, quantity="0.010"))
    assert sell.status_code == 201
    book = taker.get("/v1/book/BTCUSDT", params={"depth": 500}).json()
    assert {"price": price, "quantity": "0.010", "orders": 1} in book["asks"]

    buy = taker.post("/v1/orders", json=order(price=price, quantity="0.004",
                                              time_in_force="IOC"))
    assert buy.status_code == 201, buy.text
    assert buy.json()["status"] == "FILLED"
    assert maker.get(f"/v1/orders/{sell.json()['order_id']}").json()["status"] == (
        "PARTIALLY_FILLED")

    taker_fills = taker.get("/v1/trades", params={"symbol": "BTCUSDT"}).json()["trades"]
    maker_fills = maker.get("/v1/trades").json()["trades"]
    assert len(taker_fills) == len(maker_fills) == 1
    assert taker_fills[0]["trade_id"] == maker_fills[0]["trade_id"]
    assert (taker_fills[0]["liquidity"], maker_fills[0]["liquidity"]) == ("TAKER", "MAKER")
    assert (taker_fills[0]["price"], taker_fills[0]["quantity"]) == (price, "0.004")
    ticklots = BTC.price_to_ticks(Decimal(price)) * 4
    assert Decimal(taker_fills[0]["fee"]) == money(BTC.fee_e8(ticklots, BTC.taker_fee_bps))

    positions = taker.get("/v1/positions").json()["positions"]
    assert [(p["symbol"], p["size"]) for p in positions] == [("BTCUSDT", "0.004")]
    short = maker.get("/v1/positions", params={"symbol": "BTCUSDT"}).json()["positions"]
    assert short[0]["size"] == "-0.004"


def test_market_order_and_rejection_are_committed(new_account: NewAccount) -> None:
    c = new_account()
    r = c.post("/v1/orders", json=order(symbol="SOLUSDT", type="MARKET", price=None,
                                        quantity="1.0", time_in_force="IOC"))
    assert r.status_code == 201, r.text
    assert r.json()["shard"] == "shard-2"
    assert r.json()["status"] in ("EXPIRED", "REJECTED", "FILLED", "PARTIALLY_FILLED")


def test_pagination_walks_every_order_once(new_account: NewAccount) -> None:
    c = new_account()
    placed = []
    for i in range(3):
        placed.append(c.post("/v1/orders", json=order(price=f"{40000 + i}.5")).json()["order_id"])
    for i in range(2):
        body = order(symbol="SOLUSDT", price=f"{100 + i}.25", quantity="1.5")
        placed.append(c.post("/v1/orders", json=body).json()["order_id"])
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = c.get("/v1/orders", params=params).json()
        seen.extend(o["order_id"] for o in page["orders"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == placed
    sol = c.get("/v1/orders", params={"symbol": "SOLUSDT"}).json()["orders"]
    assert [o["order_id"] for o in sol] == placed[3:]


def test_deposit_retry_with_its_id_credits_once(new_account: NewAccount) -> None:
    c = new_account(deposit=None, funding=True)
    body = {"amount": "700.5", "shard": "shard-1", "deposit_id": unique("tx")}
    first = c.post("/v1/deposits", json=body)
    assert first.status_code == 201, first.text
    retry = c.post("/v1/deposits", json=body)
    assert retry.status_code == 200, retry.text
    assert retry.json()["seq"] == first.json()["seq"]
    assert retry.json()["balance"]["balance"] == "700.5"
    changed = c.post("/v1/deposits", json=body | {"amount": "700.6"})
    assert changed.status_code == 409
    assert changed.json()["code"] == "deposit_id_conflict"
    assert changed.json()["field"] == "deposit_id"
    plain = c.post("/v1/deposits", json={"amount": "1", "shard": "shard-1"})
    assert plain.status_code == 201 and plain.json()["seq"] > first.json()["seq"]
    me = c.get("/v1/accounts/me").json()["balances"][0]
    assert me["balance"] == "701.5"


def test_retry_returns_the_first_order_and_a_changed_body_conflicts(
        new_account: NewAccount) -> None:
    c = new_account()
    body = order()
    first = c.post("/v1/orders", json=body)
    assert first.status_code == 201
    before = c.get("/v1/accounts/me").json()
    retry = c.post("/v1/orders", json=body)
    assert retry.status_code == 200, retry.text
    assert retry.json()["order_id"] == first.json()["order_id"]
    assert retry.json()["seq"] == first.json()["seq"]

    changed = c.post("/v1/orders", json=body | {"quantity": "0.124"})
    assert changed.status_code == 409
    assert changed.json()["code"] == "client_order_id_conflict"
    assert changed.json()["field"] == "client_order_id"
    assert c.get("/v1/accounts/me").json() == before
    assert len(c.get("/v1/orders").json()["orders"]) == 1


def test_retry_of_a_closed_order_still_returns_it(new_account: NewAccount) -> None:
    c = new_account()
    body = order(symbol="ETHUSDT", price="3000.01", quantity="0.05")
    first = c.post("/v1/orders", json=body).json()
    assert c.delete(f"/v1/orders/{first['order_id']}").status_code == 200
    retry = c.post("/v1/orders", json=body)
    assert retry.status_code == 200
    assert retry.json()["status"] == "CANCELLED" and retry.json()["seq"] == first["seq"]
