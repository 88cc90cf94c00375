"""Every bad input is a 4xx JSON {code, message, field?}; nothing committed changes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import NewAccount, Served
from tests.e2e.test_orders import order

BAD_ORDERS: list[tuple[str, Any, int, str, str | None]] = [
    ("wrong type quantity", order(quantity=0.5), 400, "invalid_request", "quantity"),
    ("wrong type side", order(side="UP"), 400, "invalid_request", "side"),
    ("wrong type leverage", order(leverage="ten"), 400, "invalid_request", "leverage"),
    ("missing field", {"symbol": "BTCUSDT"}, 400, "invalid_request", "side"),
    ("extra field", order(account="someone-else"), 400, "invalid_request", "account"),
    ("not an object", [1, 2], 400, "invalid_request", None),
    ("negative price", order(price="-1"), 400, "invalid_request", "price"),
    ("unknown symbol", order(symbol="DOGEUSDT"), 400, "unknown_symbol", "symbol"),
    ("price off tick", order(price="50000.05"), 400, "invalid_price", "price"),
    ("zero price", order(price="0"), 400, "invalid_price", "price"),
    ("size off lot", order(quantity="0.0005"), 400, "invalid_quantity", "quantity"),
    ("size above max", order(quantity="1000001"), 400, "invalid_quantity", "quantity"),
    ("limit without price", order(price=None), 400, "invalid_price", "price"),
    ("market with price", order(type="MARKET"), 400, "invalid_price", "price"),
    ("post-only IOC", order(post_only=True, time_in_force="IOC"), 400, "invalid_order",
     "time_in_force"),
    ("leverage above max", order(leverage=101), 400, "invalid_leverage", "leverage"),
    ("insufficient margin", order(quantity="900"), 422, "insufficient_margin", None),
]


@pytest.fixture
def trader(new_account: NewAccount) -> Iterator[httpx.Client]:
    c = new_account()
    resting = c.post("/v1/orders", json=order(price="10000.0", quantity="0.01"))
    assert resting.status_code == 201
    yield c


def snapshot(c: httpx.Client, served: Served) -> Any:
    seqs = {shard: w.app.seq for shard, w in served.writers.items()}
    return c.get("/v1/accounts/me").json(), c.get("/v1/orders").json(), seqs


@pytest.mark.parametrize(("case", "body", "status", "code", "field"), BAD_ORDERS,
                         ids=[c[0] for c in BAD_ORDERS])
def test_bad_orders_change_nothing(trader: httpx.Client, served: Served, case: str, body: Any,
                                   status: int, code: str, field: str | None) -> None:
    before = snapshot(trader, served)
    r = trader.post("/v1/orders", json=body)
    assert r.status_code == status, r.text
    error = r.json()
    assert error["code"] == code and error["message"]
    if field is not None:
        assert error.get("field") == field
    assert snapshot(trader, served) == before


def test_malformed_json_and_wrong_content(trader: httpx.Client, served: Served) -> None:
    before = snapshot(trader, served)
    for content, ctype in ((b'{"symbol": "BTC', "application/json"), (b"", "application/json"),
                           (b"symbol=BTCUSDT", "application/x-www-form-urlencoded"),
                           (b"\xff\xfe", "application/json")):
        r = trader.post("/v1/orders", content=content, headers={"content-type": ctype})
        assert r.status_code == 400, (content, r.text)
        assert r.json()["code"] in ("malformed_json", "invalid_request")
    assert snapshot(trader, served) == before


def test_oversize_body_is_413(trader: httpx.Client, served: Served) -> None:
    before = snapshot(trader, served)
    big = order(client_order_id="x") | {"pad": "y" * 70_000}
    r = trader.post("/v1/orders", json=big)
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:
        yield b'{"symbol": "BTCUSDT", "pad": "'
        for _ in range(80):
            yield b"z" * 1024
        yield b'"}'

    r = trader.post("/v1/orders", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert snapshot(trader, served) == before


def test_unknown_orders_and_bad_ids(trader: httpx.Client, served: Served) -> None:
    before = snapshot(trader, served)
    missing = uuid.uuid4()
    for r in (trader.get(f"/v1/orders/{missing}"), trader.delete(f"/v1/orders/{missing}")):
        assert r.status_code == 404 and r.json()["code"] == "unknown_order"
    r = trader.get("/v1/orders/not-a-uuid")
    assert r.status_code == 400 and r.json()["field"] == "order_id"
    assert trader.get("/v1/orders", params={"cursor": "zz"}).json()["field"] == "cursor"
    assert trader.get("/v1/orders", params={"status": "DONE"}).status_code == 400
    assert trader.get("/v1/book/NOPE").json()["code"] == "unknown_symbol"
    assert trader.get("/v1/book/BTCUSDT", params={"depth": 0}).status_code == 400
    assert trader.get("/v1/nowhere").status_code == 404
    assert trader.put("/v1/orders").status_code == 405
    assert snapshot(trader, served) == before


@pytest.mark.parametrize(("amount", "code"), [("-5", "invalid_request"), ("0", "invalid_amount"),
                                               ("0.000000001", "invalid_amount"),
                                               (5, "invalid_request")])
def test_bad_deposits(new_account: NewAccount, served: Served, amount: Any, code: str) -> None:
    trader = new_account(funding=True)
    before = snapshot(trader, served)
    r = trader.post("/v1/deposits", json={"amount": amount, "shard": "shard-1"})
    assert r.status_code == 400, r.text
    assert r.json()["code"] == code and r.json()["field"] == "amount"
    r = trader.post("/v1/deposits", json={"amount": "5", "shard": "shard-9"})
    assert r.status_code == 400 and r.json()["field"] == "shard"
    assert snapshot(trader, served) == before
