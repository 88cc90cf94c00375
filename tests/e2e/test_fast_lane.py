"""POST /v1/orders takes the fast lane when it can and the framework's route otherwise; a client
sees the same answers either way."""

from __future__ import annotations

import json
import re

import httpx

from tests.e2e.conftest import NewAccount, Served, unique
from tests.e2e.test_orders import order


def _lane_counts(served: Served) -> dict[str, float]:
    text = httpx.get(f"{served.url}/metrics").text
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'exdr_api_fast_lane_total\{path="(\w+)"\} ([0-9.e+]+)', text)
    }


def test_a_good_order_takes_the_fast_lane_and_a_retry_answers_the_same(
    new_account: NewAccount, served: Served
) -> None:
    c = new_account()
    before = _lane_counts(served)
    body = order()
    first = c.post("/v1/orders", json=body)
    again = c.post("/v1/orders", json=body)
    assert first.status_code == 201, first.text
    assert again.status_code == 200 and again.json() == first.json()
    conflict = c.post("/v1/orders", json={**body, "quantity": "0.5"})
    assert conflict.status_code == 409
    assert conflict.json()["code"] == "client_order_id_conflict"
    assert conflict.json()["field"] == "client_order_id"
    after = _lane_counts(served)
    assert after["fast"] - before.get("fast", 0) == 3
    assert after.get("framework", 0) == before.get("framework", 0)


def test_refusals_found_in_the_lane_render_as_in_the_route(new_account: NewAccount) -> None:
    c = new_account()
    off_tick = c.post("/v1/orders", json=order(price="50000.15"))
    assert off_tick.status_code == 400 and off_tick.json()["field"] == "price"
    unknown = c.post("/v1/orders", json=order(symbol="NOPEUSDT"))
    assert unknown.status_code == 400 and unknown.json()["code"] == "unknown_symbol"
    poor = new_account(deposit=None)
    refused = poor.post("/v1/orders", json=order())
    assert refused.status_code == 422, refused.text


def test_everything_else_goes_the_framework_way(new_account: NewAccount, served: Served) -> None:
    c = new_account()
    before = _lane_counts(served)
    malformed = c.post(
        "/v1/orders", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert malformed.status_code == 400 and malformed.json()["code"] == "malformed_json"
    invalid = c.post("/v1/orders", json={**order(), "side": "UP"})
    assert invalid.status_code == 400 and invalid.json()["field"] == "side"
    nobody = httpx.post(
        f"{served.url}/v1/orders",
        json=order(),
        headers={"Authorization": "Bearer ak_0000000000000000.not-a-real-secret-at-all"},
    )
    assert nobody.status_code == 401 and nobody.json()["code"] == "unauthenticated"
    by_header = httpx.post(
        f"{served.url}/v1/orders",
        json=order(client_order_id=unique("h")),
        headers={"X-API-Key": c.token},  # type: ignore[attr-defined]
    )
    assert by_header.status_code == 201, by_header.text
    after = _lane_counts(served)
    assert after["framework"] - before.get("framework", 0) == 3


def test_an_oversize_order_is_refused_with_413(new_account: NewAccount) -> None:
    c = new_account()
    huge = order(client_order_id="x" * (70 * 1024))
    declared = c.post("/v1/orders", json=huge)
    assert declared.status_code == 413 and declared.json()["code"] == "payload_too_large"

    def chunks() -> object:
        body = json.dumps(huge).encode()
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    streamed = c.post("/v1/orders", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413 and streamed.json()["code"] == "payload_too_large"
