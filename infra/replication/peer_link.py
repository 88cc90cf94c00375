"""The peer link: a leader sends each run of committed records straight to its standbys.

The shard's Kafka topic is the replication log every region can replay from; the peer link is
the short way for the same records (PostgreSQL's walsender beside its archive). A run of
records goes as one HTTP request to the standby region's peer lane (over mutual TLS on a port of
its own when EXDR_PEER_URLS is set: infra/replication/peer_server.py), in the wire form the topic
carries (`projections.replication.relay.encode_run`);
the standby answers once it has stored the run, and
that answer is its confirmation for the sync gate. So a record's path to the standby's store
is: commit, one request, the standby's apply; no broker produce and fetch in between.

Nothing depends on this link for correctness: the standby takes records from both paths,
drops what it already has, and fills any gap from the leader's store. So the sender keeps
no backlog: a failed request drops its records (the topic and the store still have them) and
the link waits a little before it tries again.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson

from application.wal.records import WalRecord
from infra.replication.rawhttp import SocketConnection

log = logging.getLogger("exchange_dr.peer_link")

WAL_PATH = "/internal/wal/"  # + shard id
TOKEN_HEADER = "X-Exdr-Peer-Token"


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


class RecordPush:
    """One shard's records to one standby region, sent by a thread of its own over one
    keep-alive connection: at most one request in flight, and what commits meanwhile goes in
    the next (so runs grow with the load, as a group commit does). The thread blocks in the
    socket, not in an event loop, so a run leaves as soon as it is committed and its answer is
    taken as soon as it comes, whatever the node's loops are busy with.

    `offer()` is called from the writer's commit thread; each answer ({"shard", "region",
    "seq", "epoch"}) goes to `confirmed` on the link's thread.
    """

    def __init__(
        self,
        shard_id: str,
        region: str,
        url: str,
        token: str,
        encode: Callable[[Sequence[WalRecord]], bytes],
        confirmed: Callable[[dict[str, Any]], None],
        *,
        max_records: int = 1000,
        timeout_s: float = 2.0,
        retry_s: float = 0.5,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not token:
            raise ValueError("the peer link needs the regions' shared token")
        self.shard_id = shard_id
        self.region = region
        self.url = url
        self.max_records = max_records
        self.retry_s = retry_s
        self._encode = encode
        self._confirmed = confirmed
        host, port = host_port(url)
        self._head = (
            f"POST {WAL_PATH}{shard_id} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"{TOKEN_HEADER}: {token}\r\nContent-Type: application/json\r\nContent-Length: "
        ).encode()
        self._conn = SocketConnection(host, port, timeout_s, ssl_context)
        self._offered: deque[WalRecord] = deque()
        self._ready = threading.Condition()
        self._running = False
        self._warm_until = 0.0  # warm_up(): the thread keeps the connection open until then
        self._thread: threading.Thread | None = None
        self.up: bool | None = None  # None: not tried yet
        self.sent = 0
        self.dropped = 0

    def offer(self, records: Sequence[WalRecord]) -> None:
        """Hand over just-committed records (any thread). Ignored while the link is stopped."""
        if not self._running:
            return
        with self._ready:
            self._offered.extend(records)
            self._ready.notify()

    def start(self) -> None:
        """Send from now on (one thread, however often called)."""
        with self._ready:
            self._running = True
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(
                target=self._run, name=f"peer-link-{self.shard_id}-{self.region}", daemon=True
            )
            self._thread.start()

    def warm_up(self, for_s: float = 5.0) -> None:
        """Open the connection ahead of the first run, without sending anything yet: a standby
        about to be promoted does this before it takes its epoch, so that the TCP and TLS
        handshakes are not in the path of the first acknowledgement of the new term. The
        connection closes again if `start()` does not follow within `for_s` (a promotion that
        was refused). Best effort: a failure here is met again, and reported, by the first run."""
        with self._ready:
            self._warm_until = time.monotonic() + for_s
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(
                target=self._run,
                args=(True,),
                name=f"peer-link-{self.shard_id}-{self.region}",
                daemon=True,
            )
            self._thread.start()

    def stop(self) -> None:
        with self._ready:
            self._running = False
            self._warm_until = 0.0
            self._offered.clear()
            self._ready.notify()

    def _run(self, connect_first: bool = False) -> None:
        if connect_first:
            try:
                self._conn.connect()
            except OSError as exc:
                log.debug("peer link warm-up shard=%s peer=%s: %s", self.shard_id, self.region, exc)
        try:
            while True:
                with self._ready:
                    while not self._offered:
                        if self._running:
                            self._ready.wait()
                            continue
                        left = self._warm_until - time.monotonic()
                        if left <= 0:
                            break
                        self._ready.wait(left)
                    if not self._running:
                        # decided under the lock: a start() from now on starts a new thread,
                        # so this one's connection is closed before that one can use it
                        self._thread = None
                        self._conn.close()
                        return
                    count = min(self.max_records, len(self._offered))
                    records = [self._offered.popleft() for _ in range(count)]
                if not self._send(records):
                    with self._ready:
                        self.dropped += len(self._offered)
                        self._offered.clear()  # the topic and the store still have them
                    time.sleep(self.retry_s)
        except BaseException:
            self._conn.close()
            raise

    def _send(self, records: list[WalRecord]) -> bool:
        body = self._encode(records)
        request = self._head + str(len(body)).encode() + b"\r\n\r\n" + body
        try:
            status, answer = self._conn.exchange(request)
            error = ""
        except OSError as exc:
            status, answer, error = 0, b"", str(exc) or type(exc).__name__
        if status == 200:
            try:
                ack = orjson.loads(answer)
            except ValueError:
                ack = None
            if isinstance(ack, dict):
                self._confirmed(ack)
            self.sent += len(records)
            if not self.up:
                self.up = True
                log.warning(
                    "peer link up shard=%s peer=%s seq=%s",
                    self.shard_id,
                    self.region,
                    records[-1].seq,
                )
            return True
        self.dropped += len(records)
        if self.up is not False:  # reported once per outage
            log.warning(
                "peer link down shard=%s peer=%s seq=%s status=%s %s; the topic carries them",
                self.shard_id,
                self.region,
                records[0].seq,
                status or "-",
                error or _reason(status),
            )
        self.up = False
        return False


def _reason(status: int) -> str:
    return {
        0: "connection failed",
        401: "peer token refused",
        413: "run above the peer lane's body limit",
        404: "peer link not enabled there",
        409: "peer is not a standby of the shard",
    }.get(status, "refused")
