"""A lean HTTP/1.1 load generator for the benchmarks: keep-alive connections on raw asyncio
transports, order requests built from pre-encoded pieces, responses read only as far as their
status line and Content-Length.

The benchmarks run the load on the same two cores as the system under test, so every cycle the
client spends is taken from the servers it measures (an aiohttp client cost about a third of a
core at 1,000 orders/s). This one does the same work, sending the same JSON orders with the
same headers, at a fraction of the cost; it speaks only what the facade answers (Content-Length
bodies, no chunked encoding), which is all a benchmark needs.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from decimal import Decimal
from typing import Any
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


class _Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time: `exchange()` returns the status."""

    def __init__(self) -> None:
        self.transport: Any = None  # an asyncio or uvloop TCP transport
        self.closed = False
        self._buffer = bytearray()
        self._waiter: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("connection closed"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self._buffer[:end]).lower()
        at = head.find(b"content-length:")
        if at < 0:
            length = 0
        else:
            stop = head.find(b"\r\n", at)
            length = int(head[at + 15 : stop if stop >= 0 else len(head)])
        if len(self._buffer) < end + 4 + length:
            return
        status = int(self._buffer[9:12])
        del self._buffer[: end + 4 + length]
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(status)

    async def exchange(self, request: bytes) -> int:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self._waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class ConnectionPool:
    """Idle keep-alive connections, opened on demand up to `limit`."""

    def __init__(self, host: str, port: int, limit: int) -> None:
        self.host, self.port, self.limit = host, port, limit
        self._idle: deque[_Connection] = deque()
        self._open = 0

    @property
    def exhausted(self) -> bool:
        return not self._idle and self._open >= self.limit

    async def acquire(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
            self._open -= 1
        self._open += 1
        try:
            _, conn = await asyncio.get_running_loop().create_connection(
                _Connection, self.host, self.port
            )
        except BaseException:
            self._open -= 1
            raise
        return conn

    def release(self, conn: _Connection) -> None:
        if conn.closed:
            self._open -= 1
        else:
            self._idle.append(conn)

    def discard(self, conn: _Connection) -> None:
        conn.close()
        self._open -= 1

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

    async def send(self, request: bytes) -> int:
        """One request on a pooled connection: its status, or 0 if the connection failed."""
        try:
            conn = await self.acquire()
        except OSError:
            return 0
        try:
            status = await conn.exchange(request)
        except (ConnectionError, OSError):
            self.discard(conn)
            return 0
        self.release(conn)
        return status
