"""Simulated clients at a fixed rate through the REST facade, with a ledger of everything.

Each client trades for one of several accounts: it places limit orders around one price (so
orders cross and accounts trade with each other) and now and then cancels one of its own
resting orders. It follows `not_leader` answers (and tries the other regions when its leader
does not answer), retrying the SAME request (same client_order_id, same order id) until it
gets a definite answer or the run ends, as a well-behaved exchange client does. The ledger
records every attempt and every acknowledgement.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

ACKED = (200, 201)
RETRY = (-1, 503, 504)  # no definite answer: the same request again, possibly elsewhere


@dataclass
class Attempt:
    client_order_id: str  # for a cancel: the order id
    url: str
    sent_at: float
    latency_s: float
    status: int  # -1: no answer
    code: str | None = None
    kind: str = "order"  # order | cancel


@dataclass
class Ledger:
    """What the clients sent and what they were told."""

    sent: set[str] = field(default_factory=set)
    owners: dict[str, str] = field(default_factory=dict)  # client_order_id -> account owner
    acked: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> first ack body
    ack_times: dict[str, float] = field(default_factory=dict)
    ack_urls: dict[str, str] = field(default_factory=dict)
    cancels_sent: dict[str, str] = field(default_factory=dict)  # order id -> owner
    cancels_acked: dict[str, dict[str, Any]] = field(default_factory=dict)
    cancel_ack_times: dict[str, float] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def refused(self) -> int:
        return sum(1 for a in self.attempts if a.status not in ACKED)

    def counts(self, load_seconds: float) -> dict[str, Any]:
        """What every drill report says of the load: sent, acknowledged, cancels, answered/s."""
        answered = sum(1 for a in self.attempts if a.status not in RETRY)
        return {
            "sent": len(self.sent),
            "acked": len(self.acked),
            "cancels_sent": len(self.cancels_sent),
            "cancels_acked": len(self.cancels_acked),
            "answered_per_second": round(answered / max(load_seconds, 1e-9), 1),
        }

    def first_ack_at(self, url: str, after: float) -> float | None:
        times = [
            a.sent_at + a.latency_s
            for a in self.attempts
            if a.status in ACKED and a.url == url and a.sent_at + a.latency_s >= after
        ]
        return min(times) if times else None

    def longest_gap(self, after: float, until: float) -> tuple[float, float]:
        """(start, length) of the longest stretch in [after, until] with no acknowledgement."""
        times = sorted(
            a.sent_at + a.latency_s
            for a in self.attempts
            if a.status in ACKED and after <= a.sent_at + a.latency_s <= until
        )
        best = (after, 0.0)
        previous = after
        for t in [*times, until]:
            if t - previous > best[1]:
                best = (previous, t - previous)
            previous = t
        return best


@dataclass
class Trader:
    owner: str
    key: str


class LoadGenerator:
    """`clients` coroutines sharing `rate` requests per second across them.

    `traders`: the accounts the clients act for (client n acts for traders[n % len]); a bare
    API key means one account named `traders`. Every `cancel_every`-th request of a client
    cancels one of its resting orders (0: never). Their collateral is deposited with
    `funding_key` (trading keys may not deposit); without one each trader's key must hold
    the funding right."""

    def __init__(
        self,
        urls: list[str],
        traders: list[Trader] | str,
        *,
        rate: float,
        clients: int = 16,
        symbol: str = "BTCUSDT",
        prefix: str = "drill",
        cancel_every: int = 0,
        crossing: bool = False,
        funding_key: str = "",
    ) -> None:
        self.urls = urls
        self.funding_key = funding_key
        self.leader_url = urls[0]
        self.traders = [Trader("traders", traders)] if isinstance(traders, str) else traders
        self.rate = rate
        self.clients = clients
        self.symbol = symbol
        self.prefix = prefix
        self.cancel_every = cancel_every
        self.crossing = crossing
        self.ledger = Ledger()
        self._stop = asyncio.Event()
        self._counter = 0

    def stop(self) -> None:
        self._stop.set()

    async def run(self, seconds: float) -> Ledger:
        limits = httpx.Limits(max_connections=self.clients * 2)
        # a client gives up on an answer after 1.5 s (ack p99 under load is well below) and
        # tries the other region: a frozen leader must not hold it for longer
        async with httpx.AsyncClient(timeout=1.5, limits=limits) as http:
            for trader in self.traders:
                await self._deposit(http, trader)
            tasks = [asyncio.create_task(self._client(http, n)) for n in range(self.clients)]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), seconds)
            self._stop.set()
            await asyncio.gather(*tasks)
        return self.ledger

    async def _deposit(self, http: httpx.AsyncClient, trader: Trader) -> None:
        for _ in range(100):
            try:
                body = {"amount": "100000000", "symbol": self.symbol}
                if self.funding_key:
                    body["account"] = trader.owner
                r = await http.post(
                    self.leader_url + "/v1/deposits",
                    json=body,
                    headers=_auth(Trader(trader.owner, self.funding_key or trader.key)),
                )
                if r.status_code == 201:
                    return
                self._follow(r, self.leader_url)
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError("could not deposit: no leader accepted commands")

    def _follow(self, response: httpx.Response, asked: str) -> bool:
        """Go where a not_leader answer from `asked` points; False if it points nowhere new."""
        try:
            leader = str(response.json().get("leader") or "").rstrip("/")
        except ValueError:
            leader = ""
        if not leader or leader == asked:
            return False
        self.leader_url = leader
        return True

    async def _client(self, http: httpx.AsyncClient, n: int) -> None:
        trader = self.traders[n % len(self.traders)]
        interval = self.clients / self.rate
        next_at = time.monotonic() + (n / self.clients) * interval
        resting: list[str] = []  # this client's acknowledged, possibly open orders
        done = 0
        while not self._stop.is_set():
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
            done += 1
            if self.cancel_every and done % self.cancel_every == 0 and resting:
                await self._cancel(http, trader, resting.pop(0))
                continue
            self._counter += 1
            index = self._counter
            cid = f"{self.prefix}-{index}"
            side = "BUY" if index % 2 else "SELL"
            if self.crossing:  # around 50,000 on both sides: about half the orders trade
                price = 50000 + ((index * 7) % 11 - 5) * 10
            else:
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
            self.ledger.owners[cid] = trader.owner
            data = await self._until_answered(
                http, trader, "order", cid, "POST", "/v1/orders", body
            )
            if data is not None and data.get("status") in ("NEW", "PARTIALLY_FILLED"):
                resting.append(str(data["order_id"]))

    async def _cancel(self, http: httpx.AsyncClient, trader: Trader, order_id: str) -> None:
        self.ledger.cancels_sent[order_id] = trader.owner
        await self._until_answered(
            http, trader, "cancel", order_id, "DELETE", f"/v1/orders/{order_id}", None
        )

    async def _until_answered(
        self,
        http: httpx.AsyncClient,
        trader: Trader,
        kind: str,
        ident: str,
        method: str,
        path: str,
        body: dict[str, Any] | None,
    ) -> dict[str, Any] | None:
        """Send until a definite answer; the acknowledgement's body, or None if refused."""
        tried = 0
        first_sent = time.monotonic()
        while True:
            url = self.leader_url
            started = time.monotonic()
            try:
                r = await http.request(method, url + path, json=body, headers=_auth(trader))
                status, code = r.status_code, None
                if status in ACKED:
                    data: dict[str, Any] = r.json()
                    now = time.monotonic()
                    self.ledger.attempts.append(
                        Attempt(ident, url, started, now - started, status, None, kind)
                    )
                    if kind == "order" and ident not in self.ledger.acked:
                        self.ledger.acked[ident] = data
                        self.ledger.ack_times[ident] = now
                        self.ledger.ack_urls[ident] = url
                    elif kind == "cancel" and ident not in self.ledger.cancels_acked:
                        self.ledger.cancels_acked[ident] = data
                        self.ledger.cancel_ack_times[ident] = now
                    return data
                try:
                    code = r.json().get("code")
                except ValueError:
                    code = None
                if code == "not_leader" and not self._follow(r, url):
                    # it does not lead and does not know who does: ask the next region
                    tried += 1
                    self.leader_url = self.urls[tried % len(self.urls)]
            except httpx.HTTPError:
                status, code = -1, "no_answer"
                # the leader may be gone: try the next region
                tried += 1
                self.leader_url = self.urls[tried % len(self.urls)]
            self.ledger.attempts.append(
                Attempt(ident, url, started, time.monotonic() - started, status, code, kind)
            )
            if status not in RETRY:
                return None  # a definite refusal (4xx): nothing placed or cancelled, no retry
            if self._stop.is_set() and time.monotonic() - first_sent > 15:
                return None
            await asyncio.sleep(0.02)


def _auth(trader: Trader) -> dict[str, str]:
    return {"Authorization": f"Bearer {trader.key}"}
