"""Reads show only what a failover cannot take back (DESIGN.md invariant 11), over real HTTP.

A leader in sync mode whose one follower stops confirming: a taker's order crosses a resting
maker order, is committed on the leader alone and is not acknowledged (503). Until a majority
holds that record, the maker must not see the fill as final: under the strict policy its reads
answer 503 `unconfirmed`; under the degrade policy they answer, labelled
`X-Exdr-State: unconfirmed`. Once the follower confirms, the same reads show the fill, labelled
`confirmed` with the seq they reflect.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest
import uvicorn

from application.replication.sync_gate import SyncGate, SyncPolicy
from application.wal.writer import ShardWriter
from infra.api.app import create_app
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
from tests.e2e.conftest import free_port, unique
from tests.integration.conftest import scratch_dsn

SYMBOL = "BTCUSDT"
PRICE = "61000.3"
GATE_TIMEOUT_S = 0.4


class Follower:
    """The one follower of every shard, as its confirmations reach the leader's gate: it
    confirms each committed run while up, nothing while stalled, and can catch up at once."""

    def __init__(self, writers: dict[str, ShardWriter], gates: dict[str, SyncGate]) -> None:
        self.up = True
        self.writers = writers
        self.gates = gates
        for shard, writer in writers.items():
            writer.on_committed = lambda records, s=shard: self._committed(s, records)

    def _committed(self, shard: str, records: Sequence[Any]) -> None:
        if self.up and records:
            self.gates[shard].standby_stored(records[-1].seq, "follower")

    def catch_up(self) -> None:
        self.up = True
        for shard, writer in self.writers.items():
            seq = writer.query(lambda app: app.seq).result(10)
            self.gates[shard].standby_stored(seq, "follower")


class Leader:
    def __init__(self, policy: SyncPolicy) -> None:
        self.dsn = scratch_dsn("reads")
        migrate(self.dsn)
        settings = Settings.from_env(dict(os.environ))
        self.writers = start_shard_writers(settings, dsn=self.dsn)
        self.gates = {
            shard: SyncGate(shard, policy=policy, timeout_s=GATE_TIMEOUT_S, replicas=2)
            for shard in self.writers
        }
        for shard, writer in self.writers.items():
            writer.gate = self.gates[shard]
        self.follower = Follower(self.writers, self.gates)
        self.keys: KeyStore = make_key_store(settings, dsn=self.dsn)
        self.history = make_history_reader(settings, dsn=self.dsn)
        app = create_app(
            settings, self.writers, StaticLeadership(leads=True), self.keys, history=self.history
        )
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        self._ticking = True
        self.ticker = threading.Thread(target=self._tick, daemon=True)  # the node's expiry
        self.ticker.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "no server"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.server.config.port}"
        self.treasury = self._key(funding=True)[1]
        self.sell: dict[str, Any] = {}  # the maker's order, as sent

    def _tick(self) -> None:
        while self._ticking:
            for gate in self.gates.values():
                gate.tick()
            time.sleep(0.01)

    def _key(self, *, funding: bool = False) -> tuple[str, str]:
        name = unique("acct")
        self.keys.create_account(name)
        return name, self.keys.create_key(name, "trader", funding=funding).token

    def client(self) -> httpx.Client:
        account, token = self._key()
        client = httpx.Client(
            base_url=self.url, timeout=20, headers={"Authorization": f"Bearer {token}"}
        )
        for shard in self.writers:
            deposited = httpx.post(
                self.url + "/v1/deposits",
                json={"amount": "1000000", "shard": shard, "account": account},
                headers={"Authorization": f"Bearer {self.treasury}"},
                timeout=20,
            )
            assert deposited.status_code == 201, deposited.text
        return client

    def stop(self) -> None:
        self._ticking = False
        self.server.should_exit = True
        self.thread.join(15)
        self.ticker.join(5)
        stop_writers(self.writers)
        self.history.close()
        self.keys.close()
        drop_database(self.dsn)


@pytest.fixture
def leader(request: pytest.FixtureRequest) -> Iterator[Leader]:
    running = Leader(request.param)
    try:
        yield running
    finally:
        running.stop()


def order(**fields: Any) -> dict[str, Any]:
    body = {
        "symbol": SYMBOL,
        "side": "BUY",
        "price": PRICE,
        "quantity": "0.010",
        "client_order_id": unique("c"),
    }
    body.update(fields)
    return body


def _unacknowledged_fill(leader: Leader) -> tuple[httpx.Client, str, httpx.Response]:
    """A maker's resting sell (acknowledged), then a taker's crossing buy that the follower
    never confirms: the leader committed the fill, the taker was not told it happened."""
    maker, taker = leader.client(), leader.client()
    leader.sell = order(side="SELL")
    sell = maker.post("/v1/orders", json=leader.sell)
    assert sell.status_code == 201, sell.text
    leader.follower.up = False
    buy = taker.post("/v1/orders", json=order(time_in_force="IOC", quantity="0.004"))
    return maker, sell.json()["order_id"], buy


MAKER_READS = (
    "/v1/trades",
    "/v1/orders/{id}",
    "/v1/orders",
    "/v1/accounts/me",
    "/v1/positions",
    f"/v1/book/{SYMBOL}",
)


@pytest.mark.parametrize("leader", [SyncPolicy.STRICT], indirect=True)
def test_strict_reads_refuse_a_fill_no_majority_holds(leader: Leader) -> None:
    maker, sell_id, buy = _unacknowledged_fill(leader)
    assert buy.status_code == 503, buy.text  # the taker was NOT acknowledged

    for path in MAKER_READS:
        response = maker.get(path.format(id=sell_id))
        assert response.status_code == 503, f"{path} shows unconfirmed state: {response.text}"
        assert response.json()["code"] == "unconfirmed"
        assert response.headers["Retry-After"]

    # the maker's retry of its own order answers with the order as it is now: the same rule
    retried = maker.post("/v1/orders", json=leader.sell)
    assert retried.status_code == 503, f"a retry shows unconfirmed state: {retried.text}"

    # a read waits for the confirmation (up to the sync timeout) rather than refusing at once:
    # the follower confirms while the read waits, and the read answers
    waited: list[httpx.Response] = []
    reader = threading.Thread(target=lambda: waited.append(maker.get(f"/v1/book/{SYMBOL}")))
    reader.start()
    time.sleep(GATE_TIMEOUT_S / 4)
    leader.follower.catch_up()  # the follower confirms: the fill cannot be taken back now
    reader.join(10)
    assert waited[0].status_code == 200, waited[0].text
    assert waited[0].headers["X-Exdr-State"] == "confirmed"

    trades = maker.get("/v1/trades")
    assert trades.status_code == 200, trades.text
    assert trades.headers["X-Exdr-State"] == "confirmed"
    # every shard was read: one seq each, the fill's shard at the fill's seq or later
    seqs = dict(p.split("=") for p in trades.headers["X-Exdr-Seq"].split(", "))
    assert set(seqs) == set(leader.writers)
    assert int(seqs["shard-1"]) >= trades.json()["trades"][0]["seq"]
    assert [t["quantity"] for t in trades.json()["trades"]] == ["0.004"]
    retried = maker.post("/v1/orders", json=leader.sell)
    assert retried.status_code == 200 and retried.json()["status"] == "PARTIALLY_FILLED"
    mine = maker.get(f"/v1/orders/{sell_id}")
    assert mine.json()["status"] == "PARTIALLY_FILLED"
    assert mine.headers["X-Exdr-State"] == "confirmed"
    book = maker.get(f"/v1/book/{SYMBOL}")
    assert {"price": PRICE, "quantity": "0.006", "orders": 1} in book.json()["asks"]
    assert int(book.headers["X-Exdr-Seq"]) == book.json()["seq"]


@pytest.mark.parametrize("leader", [SyncPolicy.DEGRADE], indirect=True)
def test_degraded_reads_say_they_show_unconfirmed_state(leader: Leader) -> None:
    maker, sell_id, buy = _unacknowledged_fill(leader)
    # degrade: the gate gives up on the follower and acknowledges asynchronously
    assert buy.status_code == 201, buy.text

    for path in MAKER_READS:
        response = maker.get(path.format(id=sell_id))
        assert response.status_code == 200, response.text
        assert response.headers["X-Exdr-State"] == "unconfirmed", path
    trades = maker.get("/v1/trades").json()["trades"]
    assert [t["quantity"] for t in trades] == ["0.004"]

    leader.follower.catch_up()
    again = maker.get("/v1/trades")
    assert again.headers["X-Exdr-State"] == "confirmed"
