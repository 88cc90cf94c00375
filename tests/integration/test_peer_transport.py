"""The peer lane's transport: mutual TLS with the development certificates, and a request
without the peer token refused from its head, before its body is read."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from infra.api.peer import PATH, PeerAckLane
from infra.drills.certs import dev_certs
from infra.drills.cluster import free_port
from infra.replication.peer_link import WAL_PATH, RecordPush
from infra.replication.peer_server import client_context, serve_peer_lane
from infra.security_settings import PeerTls
from infra.settings import Settings
from projections.replication.relay import encode_run
from tests.unit.wal_records import sealed_records

TOKEN = "s3cret-peer-token"
BIG = 64 << 20


class _Lane:
    def __init__(self) -> None:
        self.acks: list[dict[str, Any]] = []
        self.runs: list[bytes] = []

    def lane(self) -> PeerAckLane:
        async def take(shard: str, body: bytes) -> dict[str, Any]:
            self.runs.append(body)
            return {"shard": shard, "region": "standby", "seq": 2, "epoch": 1}

        return PeerAckLane(TOKEN, self.acks.append, take)


@pytest.fixture(scope="module")
def certs() -> Path:
    return dev_certs()


def _tls(certs: Path, region: str) -> PeerTls:
    return PeerTls(certs / f"{region}.pem", certs / f"{region}.key", certs / "ca.pem")


@pytest.fixture
def plain_lane() -> Iterator[tuple[int, _Lane]]:
    state = _Lane()
    port = free_port()
    server = serve_peer_lane(state.lane(), f"http://127.0.0.1:{port}", None)
    try:
        yield port, state
    finally:
        _stop(server)


@pytest.fixture
def tls_lane(certs: Path) -> Iterator[tuple[int, _Lane]]:
    state = _Lane()
    port = free_port()
    server = serve_peer_lane(state.lane(), f"https://127.0.0.1:{port}", _tls(certs, "standby"))
    try:
        yield port, state
    finally:
        _stop(server)


def _stop(server: uvicorn.Server) -> None:
    server.should_exit = True
    time.sleep(0.2)


def _head(path: str, length: int, token: str | None) -> bytes:
    token_line = f"X-Exdr-Peer-Token: {token}\r\n" if token is not None else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{token_line}"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def _answer_then_eof(sock: socket.socket, timeout_s: float = 5.0) -> bytes:
    """Everything the server sends until it closes the connection (fails on a timeout)."""
    sock.settimeout(timeout_s)
    received = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return received
        received += chunk


@pytest.mark.parametrize("token", [None, "wrong", TOKEN[:-1]])
def test_an_unauthenticated_64_mib_body_is_refused_unread(
    plain_lane: tuple[int, _Lane], token: str | None
) -> None:
    port, state = plain_lane
    with socket.create_connection(("127.0.0.1", port), 5) as sock:
        sock.sendall(_head(WAL_PATH + "shard-1", BIG, token))  # the head only: no body sent
        answer = _answer_then_eof(sock)
        assert answer.startswith(b"HTTP/1.1 401 "), answer
        assert b"connection: close" in answer.lower()
        # the server has closed: what the client would send now is never read
        with pytest.raises(OSError):
            for _ in range(64):
                sock.sendall(b"\0" * (1 << 20))
    assert state.runs == [] and state.acks == []


def test_a_declared_body_above_the_limit_is_refused_unread(plain_lane: tuple[int, _Lane]) -> None:
    port, state = plain_lane
    with socket.create_connection(("127.0.0.1", port), 5) as sock:
        sock.sendall(_head(WAL_PATH + "shard-1", BIG + 1, TOKEN))
        assert _answer_then_eof(sock).startswith(b"HTTP/1.1 413 ")
        sock.close()
    with socket.create_connection(("127.0.0.1", port), 5) as sock:
        sock.sendall(_head(PATH, 5000, TOKEN))  # a confirmation is at most 4 KiB
        assert _answer_then_eof(sock).startswith(b"HTTP/1.1 413 ")
    assert state.runs == []


def test_the_peer_link_speaks_mutual_tls(certs: Path, tls_lane: tuple[int, _Lane]) -> None:
    port, state = tls_lane
    settings = Settings.from_env(
        {
            "EXDR_TLS_CERT": str(certs / "primary.pem"),
            "EXDR_TLS_KEY": str(certs / "primary.key"),
            "EXDR_TLS_CA": str(certs / "ca.pem"),
        }
    )
    confirmed: list[int] = []
    done = threading.Event()

    def on_ack(ack: dict[str, Any]) -> None:
        confirmed.append(int(ack["seq"]))
        done.set()

    push = RecordPush(
        "shard-1",
        "standby",
        f"https://127.0.0.1:{port}",
        TOKEN,
        lambda records: encode_run(records, set()),
        on_ack,
        ssl_context=client_context(settings),
    )
    push.start()
    try:
        push.offer(sealed_records(2))
        assert done.wait(10), "no confirmation over TLS"
    finally:
        push.stop()
    assert confirmed == [2] and len(state.runs) == 1 and push.up


def test_plain_http_and_strangers_are_refused_by_the_tls_lane(
    certs: Path, tls_lane: tuple[int, _Lane]
) -> None:
    port, state = tls_lane
    # plain HTTP to the TLS port: no answer worth the name, nothing taken
    with socket.create_connection(("127.0.0.1", port), 5) as sock:
        sock.sendall(_head(PATH, 2, TOKEN) + b"{}")
        try:
            answer = _answer_then_eof(sock)
        except OSError:
            answer = b""
        assert not answer.startswith(b"HTTP/1.1 2")
    # TLS without a client certificate of our CA: the handshake fails
    anonymous = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    with (
        socket.create_connection(("127.0.0.1", port), 5) as raw,
        pytest.raises((ssl.SSLError, OSError)),
        anonymous.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
    ):
        sock.sendall(_head(PATH, 2, TOKEN) + b"{}")
        if not _answer_then_eof(sock):
            raise ConnectionError("closed without an answer")
    # a server certificate not of our CA is not trusted by the link
    stranger = ssl.create_default_context()  # the system's CAs only
    with (
        socket.create_connection(("127.0.0.1", port), 5) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        stranger.wrap_socket(raw, server_hostname="127.0.0.1")
    assert state.acks == [] and state.runs == []
