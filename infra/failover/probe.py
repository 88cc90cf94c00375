"""The leader's probe of its own region's database (Patroni: no database, no leader key)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import psycopg


class StoreProbe:
    """`SELECT 1` on one kept connection to a region's database (reconnects after a failure)."""

    def __init__(self, dsn: str, timeout_s: float = 2.0) -> None:
        self.dsn = dsn
        self.timeout_s = timeout_s
        self._conn: psycopg.Connection[Any] | None = None
        self._pending: asyncio.Future[None] | None = None

    def ping(self) -> None:
        try:
            if self._conn is None or self._conn.closed:
                # a server that hangs rather than refuses must fail the probe too: bound the
                # query and the socket (unacknowledged data, idle keepalives)
                self._conn = psycopg.connect(
                    self.dsn,
                    connect_timeout=max(2, int(self.timeout_s)),
                    autocommit=True,
                    options=f"-c statement_timeout={int(self.timeout_s * 1000)}",
                    keepalives=1,
                    keepalives_idle=1,
                    keepalives_interval=1,
                    keepalives_count=2,
                    tcp_user_timeout=int(self.timeout_s * 1000),
                )
            self._conn.execute("SELECT 1")
        except Exception:
            self.close()
            raise

    async def check(self) -> None:
        """One probe, bounded on this side: a server that hangs (a stopped process, a silent
        network) fails the check after the probe's timeout; the stuck call is not repeated
        while it hangs, so hung probes never pile up in the thread pool."""
        if self._pending is None or self._pending.done():
            self._pending = asyncio.ensure_future(asyncio.to_thread(self.ping))
        done, _ = await asyncio.wait({self._pending}, timeout=self.timeout_s)
        if not done:
            raise TimeoutError(f"no answer within {self.timeout_s:g}s")
        self._pending.result()

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
