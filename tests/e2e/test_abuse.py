"""Callers who try too much: 429 with Retry-After per key and per address; made-up tokens
leave the key cache bounded."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator

import httpx
import pytest

from infra.api.leadership import StaticLeadership
from tests.e2e.conftest import Served, serve_in_thread, unique
from tests.e2e.test_orders import order


@pytest.fixture
def limited(e2e_dsn: str) -> Iterator[Served]:
    running = serve_in_thread(
        e2e_dsn,
        StaticLeadership(leads=False, url="http://leader.invalid"),  # reads only: no writer race
        env={
            "EXDR_RATE_LIMIT_KEY": "5",
            "EXDR_RATE_BURST_KEY": "5",
            "EXDR_RATE_LIMIT_ADDRESS": "1",
            "EXDR_RATE_BURST_ADDRESS": "40",
            "EXDR_KEY_CACHE_UNKNOWN_MAX": "500",
        },
    )
    try:
        yield running
    finally:
        running.stop()


def _key(served: Served) -> str:
    name = unique("limited")
    served.keys.create_account(name)
    return served.keys.create_key(name).token


def test_a_key_over_its_rate_gets_429_with_retry_after(limited: Served) -> None:
    token, other = _key(limited), _key(limited)
    with httpx.Client(base_url=limited.url, timeout=10) as c:
        mine = {"Authorization": f"Bearer {token}"}
        statuses = [c.get("/v1/accounts/me", headers=mine).status_code for _ in range(8)]
        assert statuses[0] == 200
        assert 429 in statuses, statuses
        r = c.get("/v1/accounts/me", headers=mine)
        assert r.status_code == 429
        assert r.json()["code"] == "rate_limited" and "API key" in r.json()["message"]
        assert int(r.headers["Retry-After"]) >= 1
        # the fast lane is behind the limit too
        assert c.post("/v1/orders", json=order(), headers=mine).status_code == 429
        # another key of the same address is not held back by this one's budget
        assert c.get("/v1/accounts/me", headers={"X-API-Key": other}).status_code == 200
        # probes and metrics are not limited
        assert c.get("/health").status_code == 200
    metrics = httpx.get(limited.url + "/metrics").text
    assert 'exdr_api_rate_limited_total{limit="key"}' in metrics


def test_an_address_over_its_rate_gets_429(limited: Served) -> None:
    with httpx.Client(base_url=limited.url, timeout=10) as c:
        statuses = [
            c.get("/v1/accounts/me", headers={"Authorization": "Bearer nope"}).status_code
            for _ in range(60)
        ]
    assert statuses[0] == 401 and statuses[-1] == 429, statuses
    assert statuses.count(401) <= 41  # the burst, and what refilled meanwhile


def test_random_tokens_ten_times_the_cache_leave_it_bounded(e2e_dsn: str) -> None:
    running = serve_in_thread(
        e2e_dsn,
        StaticLeadership(leads=False, url="http://leader.invalid"),
        env={"EXDR_RATE_LIMIT_ADDRESS": "0", "EXDR_KEY_CACHE_UNKNOWN_MAX": "200"},
    )
    try:
        token = _key(running)
        assert (
            httpx.get(running.url + "/v1/accounts/me", headers={"X-API-Key": token}).status_code
            == 200
        )

        async def spray(count: int, workers: int = 16) -> list[int]:
            statuses: list[int] = []
            limits = httpx.Limits(max_connections=workers)
            async with httpx.AsyncClient(base_url=running.url, timeout=30, limits=limits) as c:

                async def worker(n: int) -> None:
                    for _ in range(n):
                        forged = f"ak_{secrets.token_hex(8)}.{secrets.token_urlsafe(32)}"
                        r = await c.get("/v1/accounts/me", headers={"X-API-Key": forged})
                        statuses.append(r.status_code)

                await asyncio.gather(*(worker(count // workers) for _ in range(workers)))
            return statuses

        statuses = asyncio.run(spray(2_000))
        assert statuses.count(401) == 2_000
        assert running.keys.unknown_cached == 200  # not 2,000
        assert len(running.keys._cache) == 1  # the one real key
        assert (
            httpx.get(running.url + "/v1/accounts/me", headers={"X-API-Key": token}).status_code
            == 200
        )
    finally:
        running.stop()
