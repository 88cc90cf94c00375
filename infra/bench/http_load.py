"""A lean load generator for the benchmarks: order requests built from pre-encoded pieces,
sent on the keep-alive connections of infra/replication/rawhttp.py.

The benchmarks run the load on the same two cores as the system under test, so every cycle the
client spends is taken from the servers it measures (an aiohttp client cost about a third of a
core at 1,000 orders/s). The same JSON orders with the same headers cost a fraction of that.
"""

from __future__ import annotations

import random
from decimal import Decimal
from urllib.parse import urlsplit

MIDS = {
    "BTCUSDT": ("50000.0", "0.1", "0.001"),
    "ETHUSDT": ("3000.00", "0.01", "0.01"),
    "SOLUSDT": ("150.000", "0.001", "0.1"),
}
_TICKS = range(-20, 21)
_LOTS = range(1, 11)


class OrderRequests:
    """Builds POST /v1/orders requests: limit orders around each symbol's mid price, a fresh
    client_order_id per order, tokens taken in turn."""

    def __init__(self, url: str, tokens: list[str], symbols: list[str], tag: str, seed: int):
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self._rng = random.Random(seed)
        self._tag = tag
        self._heads = [
            (
                f"POST /v1/orders HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                "Content-Length: "
            ).encode()
            for token in tokens
        ]
        self._books = []
        for symbol in symbols:
            mid, tick, lot = (Decimal(x) for x in MIDS[symbol])
            prices = [str(mid + tick * t) for t in _TICKS]
            quantities = [str(lot * n) for n in _LOTS]
            self._books.append((symbol, prices, quantities))

    def build(self, n: int) -> bytes:
        rng = self._rng
        symbol, prices, quantities = rng.choice(self._books)
        side = "BUY" if rng.random() < 0.5 else "SELL"
        body = (
            f'{{"symbol":"{symbol}","side":"{side}","price":"{rng.choice(prices)}",'
            f'"quantity":"{rng.choice(quantities)}","client_order_id":"{self._tag}-{n}"}}'
        ).encode()
        head = self._heads[n % len(self._heads)]
        return head + str(len(body)).encode() + b"\r\n\r\n" + body
