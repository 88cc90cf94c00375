"""Keys: 401 without a valid one, 403 for operator endpoints, other accounts' orders are 404."""

from __future__ import annotations

import logging
import uuid

import httpx
import pytest

from tests.e2e.conftest import NewAccount, Served
from tests.e2e.test_orders import order


def test_missing_and_invalid_keys_are_401_json(served: Served) -> None:
    with httpx.Client(base_url=served.url) as anonymous:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"X-API-Key": "ak_0.x"},
                        {"Authorization": "Bearer ak_0123456789abcdef.wrongwrongwrongwrongwrong"},
                        {"Authorization": "Basic dXNlcjpwYXNz"}):
            r = anonymous.get("/v1/accounts/me", headers=headers)
            assert r.status_code == 401, headers
            assert r.json()["code"] == "unauthenticated"
            r = anonymous.post("/v1/orders", json=order(), headers=headers)
            assert r.status_code == 401


def test_x_api_key_header_and_wrong_secret(new_account: NewAccount, served: Served) -> None:
    c = new_account(deposit=None)
    token: str = c.token  # type: ignore[attr-defined]
    with httpx.Client(base_url=served.url) as other:
        assert other.get("/v1/accounts/me", headers={"X-API-Key": token}).status_code == 200
        forged = token[:-4] + ("aaaa" if not token.endswith("aaaa") else "bbbb")
        assert other.get("/v1/accounts/me", headers={"X-API-Key": forged}).status_code == 401


def test_revoked_key_is_refused(new_account: NewAccount, served: Served) -> None:
    c = new_account(deposit=None)
    assert c.get("/v1/accounts/me").status_code == 200
    served.keys.revoke_key(c.token.split(".")[0])  # type: ignore[attr-defined]
    assert c.get("/v1/accounts/me").status_code == 401


def test_accounts_see_only_their_own_orders(new_account: NewAccount) -> None:
    alice, mallory = new_account(), new_account()
    placed = alice.post("/v1/orders", json=order()).json()
    for response in (mallory.get(f"/v1/orders/{placed['order_id']}"),
                     mallory.delete(f"/v1/orders/{placed['order_id']}"),
                     mallory.get(f"/v1/orders/{uuid.uuid4()}")):
        assert response.status_code == 404
        assert response.json()["code"] == "unknown_order"
    assert mallory.get("/v1/orders").json()["orders"] == []
    assert alice.get(f"/v1/orders/{placed['order_id']}").json()["status"] == "NEW"


def test_operator_endpoint_needs_an_operator_key(new_account: NewAccount) -> None:
    trader, operator = new_account(deposit=None), new_account(operator=True, deposit=None)
    r = trader.get("/v1/shards")
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    r = operator.get("/v1/shards")
    assert r.status_code == 200
    assert [s["shard"] for s in r.json()["shards"]] == ["shard-1", "shard-2"]


def test_no_secret_in_logs(new_account: NewAccount, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    c = new_account()
    token: str = c.token  # type: ignore[attr-defined]
    c.post("/v1/orders", json=order())
    c.get("/v1/orders/not-a-uuid")
    c.post("/v1/orders", content=b"{", headers={"content-type": "application/json"})
    secret = token.split(".", 1)[1]
    assert secret not in caplog.text


def test_a_trading_key_may_not_deposit(new_account: NewAccount, served: Served) -> None:
    trader = new_account(deposit=None)
    before = {shard: w.app.seq for shard, w in served.writers.items()}
    for key_kind in ("trader", "operator"):
        c = trader if key_kind == "trader" else new_account(operator=True, deposit=None)
        r = c.post("/v1/deposits", json={"amount": "1000000000000000", "shard": "shard-1"})
        assert r.status_code == 403, r.text
        assert r.json()["code"] == "funding_key_required"
        assert "funding key" in r.json()["message"]
    assert {shard: w.app.seq for shard, w in served.writers.items()} == before
    assert all(b["balance"] == "0" for b in trader.get("/v1/accounts/me").json()["balances"])


def test_a_funding_key_credits_the_account_it_names(
    new_account: NewAccount, served: Served, treasury: str
) -> None:
    trader = new_account(deposit=None)
    name = trader.account  # type: ignore[attr-defined]
    with httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {treasury}"}) as t:
        r = t.post("/v1/deposits", json={"amount": "12.5", "shard": "shard-1", "account": name})
        assert r.status_code == 201, r.text
        assert r.json()["account"] == name
        r = t.post("/v1/deposits", json={"amount": "1", "shard": "shard-1", "account": "nobody-x"})
        assert r.status_code == 422 and r.json()["code"] == "unknown_account"
    assert trader.get("/v1/accounts/me").json()["balances"][0]["balance"] == "12.5"
