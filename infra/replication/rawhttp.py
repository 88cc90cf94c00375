"""A small HTTP/1.1 client on raw sockets and asyncio transports: keep-alive connections,
requests the caller encodes, responses read only as far as their status line and
Content-Length. It speaks only what our facade answers: Content-Length bodies, no chunked
encoding.

Kept, next to httpx for everything else, where a benchmark shows the client's cost matters:
- the regions' peer link (infra/replication/peer_link.py, the blocking `SocketConnection` on a
  thread of its own; infra/node/confirmations.py, the standby's confirmations on a
  `ConnectionPool`):
  a leader's records to its standbys and their confirmations sit on the sync acknowledgement's
  critical path, on the cores the regions share;
- the benchmarks' load generator (infra/bench/http_load.py), which shares the machine with the
  system it measures.

`exchange-dr bench http` (infra/bench/http_clients.py): keep-alive POSTs, one in flight, to a
local uvicorn server in another process; client CPU time per request, median of 3 rounds of
3,000, on the 2-core development machine (shared: load average 12 to 17 at the time):

    record push, 4 KB body, blocking     rawhttp  13.0 us   httpx.Client       439 us
    confirmation, asyncio                rawhttp  14.3 us   httpx.AsyncClient  844 us

At 1,000 requests/s that is about 1.4 % of a core against 44 to 84 % with httpx.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from typing import Any


def parse_response(buffer: bytearray) -> tuple[int, bytes, int] | None:
    """(status, body, bytes consumed) of the response at the start of `buffer`, or None while
    it is incomplete. Only Content-Length bodies (or none)."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end]).lower()
    at = head.find(b"content-length:")
    if at < 0:
        length = 0
    else:
        stop = head.find(b"\r\n", at)
        length = int(head[at + 15 : stop if stop >= 0 else len(head)])
    if len(buffer) < end + 4 + length:
        return None
    return int(buffer[9:12]), bytes(buffer[end + 4 : end + 4 + length]), end + 4 + length


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
        parsed = parse_response(self._buffer)
        if parsed is None:
            return
        status, _, consumed = parsed
        del self._buffer[:consumed]
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

    def __init__(
        self, host: str, port: int, limit: int, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.host, self.port, self.limit = host, port, limit
        self.ssl_context = ssl_context
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
                _Connection, self.host, self.port, ssl=self.ssl_context
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
        except asyncio.CancelledError:  # a caller's timeout: the answer may never come
            self.discard(conn)
            raise
        self.release(conn)
        return status


class SocketConnection:
    """One keep-alive connection with blocking I/O, for a thread that sends one request at a
    time: `exchange()` returns status and body. Reconnects on the next request after a
    failure; raises OSError (timeouts included) when a request fails. With `ssl_context` it
    speaks TLS, checking the server's certificate for `host`."""

    def __init__(
        self, host: str, port: int, timeout_s: float, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.ssl_context = ssl_context
        self._sock: socket.socket | None = None
        self._buffer = bytearray()

    def connect(self) -> None:
        """Open the connection now if it is not open (TCP, then TLS): the next exchange then
        pays neither handshake. Raises OSError like `exchange`."""
        if self._sock is not None:
            return
        sock = socket.create_connection((self.host, self.port), self.timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context is not None:
            try:
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
            except OSError:
                sock.close()
                raise
        self._sock = sock
        self._buffer.clear()

    def exchange(self, request: bytes) -> tuple[int, bytes]:
        self.connect()
        assert self._sock is not None
        try:
            self._sock.sendall(request)
            while True:
                parsed = parse_response(self._buffer)
                if parsed is not None:
                    status, body, consumed = parsed
                    del self._buffer[:consumed]
                    return status, body
                chunk = self._sock.recv(65536)
                if not chunk:
                    raise ConnectionError("connection closed by the peer")
                self._buffer += chunk
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
