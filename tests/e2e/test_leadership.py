"""A non-leader refuses commands naming the leader; Patroni-style probes and metrics."""

from __future__ import annotations

import httpx

from tests.e2e.conftest import LEADER_URL, NewAccount, Served
from tests.e2e.test_orders import order


def test_non_leader_refuses_commands_and_names_the_leader(
        new_account: NewAccount, standby: Served, served: Served) -> None:
    leader_client = new_account(funding=True)
    placed = leader_client.post("/v1/orders", json=order()).json()
    seqs = {shard: w.app.seq for shard, w in served.writers.items()}
    token = leader_client.token  # type: ignore[attr-defined]
    with httpx.Client(base_url=standby.url, headers={"Authorization": f"Bearer {token}"}) as c:
        for response in (c.post("/v1/orders", json=order()),
                         c.post("/v1/deposits", json={"amount": "1", "shard": "shard-2"}),
                         c.delete(f"/v1/orders/{placed['order_id']}")):
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "not_leader"
            assert response.json()["leader"] == LEADER_URL
            assert response.headers["Retry-After"] == "1"
        bad = c.post("/v1/orders", json=order(price="1.05"))
        assert bad.status_code == 400
    assert {shard: w.app.seq for shard, w in served.writers.items()} == seqs


def test_probes(served: Served, standby: Served) -> None:
    with httpx.Client(base_url=served.url) as primary, httpx.Client(base_url=standby.url) as rep:
        assert primary.get("/health").status_code == rep.get("/health").status_code == 200
        assert primary.get("/primary").status_code == 200
        assert rep.get("/primary").status_code == 503
        assert primary.get("/replica").status_code == 503
        assert rep.get("/replica").status_code == 200
        unknown_lag = rep.get("/replica", params={"lag": 1000})
        assert unknown_lag.status_code == 503 and unknown_lag.json()["lag_ms"] is None
        assert primary.get("/primary").json()["role"] == "primary"
        assert rep.get("/health").json()["role"] == "replica"


def test_replica_lag_from_the_replication_callback(e2e_dsn: str) -> None:
    from infra.api.leadership import StaticLeadership
    from tests.e2e.conftest import serve_in_thread

    running = serve_in_thread(e2e_dsn, StaticLeadership(leads=False))
    try:
        facade = running.server.config.app.state.facade
        facade.replica_lag_ms = lambda shard: 120.0
        with httpx.Client(base_url=running.url) as c:
            assert c.get("/replica", params={"lag": 500}).status_code == 200
            assert c.get("/replica", params={"lag": 100}).status_code == 503
    finally:
        running.stop()


def test_metrics(new_account: NewAccount, served: Served) -> None:
    c = new_account()
    c.post("/v1/orders", json=order())
    text = httpx.get(f"{served.url}/metrics").text
    assert 'exdr_api_requests_total{method="POST",route="/v1/orders",status="201"}' in text
    assert 'exdr_api_request_seconds_bucket{le="0.05",method="POST",route="/v1/orders"}' in text
    assert 'exdr_api_command_ack_seconds_count{command="PlaceOrder",shard="shard-1"}' in text


class _Switchable:
    """Leadership that a test takes away while a command is in flight."""

    def __init__(self) -> None:
        self.leads = True

    def is_leader(self, shard_id: str) -> bool:
        return self.leads

    def leader_url(self, shard_id: str) -> str | None:
        return None if self.leads else LEADER_URL


def test_a_command_in_flight_is_refused_as_soon_as_leadership_goes() -> None:
    import threading
    import time

    from infra.bootstrap import drop_database, migrate
    from tests.e2e.conftest import serve_in_thread
    from tests.integration.conftest import scratch_dsn

    dsn = scratch_dsn("inflight")  # its own store: a second writer would fence the shared one
    migrate(dsn)
    leadership = _Switchable()
    running = serve_in_thread(dsn, leadership)  # type: ignore[arg-type]
    release = threading.Event()
    try:
        running.keys.create_account("inflight")
        token = running.keys.create_key("inflight", funding=True).token
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=running.url, headers=headers, timeout=10) as c:
            assert c.post("/v1/deposits", json={"amount": "1000", "shard": "shard-1"}).is_success
            writer = running.writers["shard-1"]
            writer.query(lambda app: release.wait(10))  # the writer is busy: the order waits
            box: dict[str, httpx.Response] = {}
            sender = threading.Thread(target=lambda: box.update(r=c.post("/v1/orders",
                                                                         json=order())))
            sender.start()
            time.sleep(0.3)
            assert sender.is_alive()  # still waiting on the writer
            taken_at = time.monotonic()
            leadership.leads = False
            sender.join(5)
            answered_in = time.monotonic() - taken_at
        response = box["r"]
        assert response.status_code == 503 and response.json()["code"] == "not_leader"
        assert response.json()["leader"] == LEADER_URL
        assert answered_in < 1.0
    finally:
        release.set()
        running.stop()
        drop_database(dsn)
