"""A served facade over real HTTP: uvicorn on a free 127.0.0.1 port, a fresh migrated database."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn

from application.wal.writer import ShardWriter
from infra.api.app import create_app
from infra.api.facade import Facade, facade_of
from infra.api.keys import KeyStore
from infra.api.leadership import StaticLeadership
from infra.bootstrap import (
    drop_database,
    make_history_reader,
    make_key_store,
    migrate,
    start_shard_writers,
    stop_writers,
)
from infra.settings import Settings
from tests.integration.conftest import scratch_dsn

MARGIN = "1000000"


@dataclass
class Served:
    url: str
    writers: dict[str, ShardWriter]
    keys: KeyStore
    server: uvicorn.Server
    thread: threading.Thread
    dsn: str = ""

    @property
    def facade(self) -> Facade:
        return facade_of(self.server.config.app.state)  # type: ignore[union-attr]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        stop_writers(self.writers)
        self.facade.close()
        self.keys.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_in_thread(dsn: str, leadership: StaticLeadership, *,
                    env: dict[str, str] | None = None) -> Served:
    """`env`: settings on top of the process's (rate limits, key cache)."""
    settings = Settings.from_env({**os.environ, **(env or {})})
    writers = start_shard_writers(settings, dsn=dsn)
    keys = make_key_store(settings, dsn=dsn)
    history = make_history_reader(settings, dsn=dsn)
    app = create_app(settings, writers, leadership, keys, history=history)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    return Served(f"http://127.0.0.1:{port}", writers, keys, server, thread, dsn)


@pytest.fixture(scope="session")
def e2e_dsn() -> Iterator[str]:
    dsn = scratch_dsn("e2e")
    migrate(dsn)
    try:
        yield dsn
    finally:
        drop_database(dsn)


@pytest.fixture(scope="session")
def served(e2e_dsn: str) -> Iterator[Served]:
    running = serve_in_thread(e2e_dsn, StaticLeadership(leads=True))
    try:
        yield running
    finally:
        running.stop()


LEADER_URL = "https://leader.example:8443"


@pytest.fixture(scope="session")
def standby(e2e_dsn: str, served: Served) -> Iterator[Served]:
    """A second instance on the same store that leads nothing (reads only)."""
    running = serve_in_thread(e2e_dsn, StaticLeadership(leads=False, url=LEADER_URL))
    try:
        yield running
    finally:
        running.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


Client = httpx.Client
NewAccount = Callable[..., Client]


@pytest.fixture
def treasury(served: Served) -> str:
    """A funding key: the only kind that may deposit (it names the account it credits)."""
    name = unique("treasury")
    served.keys.create_account(name)
    return served.keys.create_key(name, "operator", funding=True).token


@pytest.fixture
def new_account(served: Served, treasury: str) -> Iterator[NewAccount]:
    """Make an account with a key (and, unless asked not to, margin on every shard, deposited
    by the treasury's funding key). `funding=True` lets the key deposit for itself."""
    clients: list[Client] = []

    def make(*, operator: bool = False, deposit: str | None = MARGIN,
             base_url: str | None = None, funding: bool = False) -> Client:
        name = unique("acct")
        served.keys.create_account(name)
        issued = served.keys.create_key(name, "operator" if operator else "trader",
                                        funding=funding)
        client = httpx.Client(base_url=base_url or served.url, timeout=20,
                              headers={"Authorization": f"Bearer {issued.token}"})
        client.account = name  # type: ignore[attr-defined]
        client.token = issued.token  # type: ignore[attr-defined]
        clients.append(client)
        if deposit is not None:
            for shard in served.writers:
                response = httpx.post(
                    served.url + "/v1/deposits", timeout=20,
                    json={"amount": deposit, "shard": shard, "account": name},
                    headers={"Authorization": f"Bearer {treasury}"})
                assert response.status_code == 201, response.text
            client.get("/v1/accounts/me")  # its key in the cache, as its own deposit would
        return client

    yield make
    for client in clients:
        client.close()
