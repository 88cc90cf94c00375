"""Simulated clients at a fixed rate through the REST facade, with a ledger of everything.

Each client follows `not_leader` answers (and tries the other regions when its leader does
not answer), retrying the SAME client_order_id until it is acknowledged or the run ends, as a
well-behaved exchange client does. The ledger records every attempt and every acknowledgement.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Attempt:
    client_order_id: str
    url: str
    sent_at: float
    latency_s: float
    status: int  # -1: no answer
    code: str | None = None


@dataclass
class Ledger:
    """What the clients sent and what they were told."""

    sent: set[str] = field(default_factory=set)
    acked: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> first ack body
    ack_times: dict[str, float] = field(default_factory=dict)
    ack_urls: dict[str, str] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def refused(self) -> int:
        return sum(1 for a in self.attempts if a.status not in (200, 201))

    def first_ack_at(self, url: str, after: float) -> float | None:
        times = [
            t for cid, t in self.ack_times.items() if t >= after and self.ack_urls.get(cid) == url
        ]
        return min(times) if times else None


class LoadGenerator:
    """`clients` coroutines sharing `rate` orders per second across them."""

    def __init__(
        self,
        urls: list[str],
        key: str,
        *,
        rate: float,
        clients: int = 16,
        symbol: str = "BTCUSDT",
        prefix: str = "drill",
    ) -> None:
        self.urls = urls
        self.leader_url = urls[0]
        self.key = key
        self.rate = rate
        self.clients = clients
        self.symbol = symbol
        self.prefix = prefix
        self.ledger = Ledger()
        self._stop = asyncio.Event()
        self._counter = 0

    def stop(self) -> None:
        self._stop.set()

    async def run(self, seconds: float) -> Ledger:
        headers = {"Authorization": f"Bearer {self.key}"}
        limits = httpx.Limits(max_connections=self.clients * 2)
        async with httpx.AsyncClient(headers=headers, timeout=3, limits=limits) as http:
            await self._deposit(http)
            tasks = [asyncio.create_task(self._client(http, n)) for n in range(self.clients)]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), seconds)
            self._stop.set()
            await asyncio.gather(*tasks)
        return self.ledger

    async def _deposit(self, http: httpx.AsyncClient) -> None:
        for _ in range(50):
            try:
                r = await http.post(
                    self.leader_url + "/v1/deposits",
                    json={"amount": "100000000", "symbol": self.symbol},
                )
                if r.status_code == 201:
                    return
                self._follow(r)
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError("could not deposit: no leader accepted commands")

    def _follow(self, response: httpx.Response) -> None:
        try:
            leader = response.json().get("leader")
        except ValueError:
            leader = None
        if leader:
            self.leader_url = str(leader).rstrip("/")

    async def _client(self, http: httpx.AsyncClient, n: int) -> None:
        interval = self.clients / self.rate
        next_at = time.monotonic() + (n / self.clients) * interval
        while not self._stop.is_set():
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
            self._counter += 1
            cid = f"{self.prefix}-{self._counter}"
            index = self._counter
            side = "BUY" if index % 2 else "SELL"
            price = 49000 + (index % 40) * 10 if side == "BUY" else 51000 + (index % 40) * 10
            body = {
                "symbol": self.symbol,
                "side": side,
                "type": "LIMIT",
                "price": str(price),
                "quantity": "0.001",
                "client_order_id": cid,
            }
            self.ledger.sent.add(cid)
            await self._until_acked(http, cid, body)

    async def _until_acked(self, http: httpx.AsyncClient, cid: str, body: dict[str, Any]) -> None:
        tried = 0
        while True:
            url = self.leader_url
            started = time.monotonic()
            try:
                r = await http.post(url + "/v1/orders", json=body)
                status, code = r.status_code, None
                if status in (200, 201):
                    data = r.json()
                    self.ledger.attempts.append(
                        Attempt(cid, url, started, time.monotonic() - started, status)
                    )
                    if cid not in self.ledger.acked:
                        self.ledger.acked[cid] = data
                        self.ledger.ack_times[cid] = time.monotonic()
                        self.ledger.ack_urls[cid] = url
                    return
                try:
                    code = r.json().get("code")
                except ValueError:
                    code = None
                if code == "not_leader":
                    self._follow(r)
            except httpx.HTTPError:
                status, code = -1, "no_answer"
                # the leader may be gone: try the next region
                tried += 1
                self.leader_url = self.urls[tried % len(self.urls)]
            self.ledger.attempts.append(
                Attempt(cid, url, started, time.monotonic() - started, status, code)
            )
            if status not in (-1, 503, 504):
                return  # a definite refusal (4xx): the order is not placed, no retry
            if self._stop.is_set() and time.monotonic() - started > 10:
                return
            await asyncio.sleep(0.02)
