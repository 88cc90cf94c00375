"""Two real regions: records and confirmations travel on the TLS peer lane, a trading key may
not deposit, and `exchange-dr keys revoke` locks a key out of both regions within the key
cache's TTL."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from infra.drills.cluster import ROOT, Cluster, place_orders, wait_for

pytestmark = pytest.mark.integration

SHARD = "shard-1"
TTL_S = 1.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, env={"EXDR_KEY_CACHE_TTL_S": str(TTL_S)})
    c.prepare()
    try:
        c.start("primary")
        c.start("standby")
        c.create_keys()
        yield c
    finally:
        c.close()


def _me(cluster: Cluster, region: str, key: str) -> int:
    return httpx.get(
        cluster.url(region) + "/v1/accounts/me",
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    ).status_code


def test_peer_lane_tls_funding_and_revocation_in_both_regions(cluster: Cluster) -> None:
    # records go on the peer lane, over mutual TLS, and come back confirmed
    assert cluster.peer_url("standby").startswith("https://")
    result = asyncio.run(
        place_orders(
            cluster.url("primary"),
            cluster.key,
            [f"tls-{i}" for i in range(50)],
            funding_key=cluster.funding_key,
        )
    )
    assert result["statuses"] == {201: 50}
    metrics = httpx.get(cluster.url("primary") + "/metrics", timeout=5).text
    pushed = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith('replication_confirmations_total{path="push"}')
    ]
    assert pushed and pushed[0] >= 1, "no confirmation came back on the peer link"
    # the public port has no peer lane any more: it lives on its own TLS listener
    r = httpx.post(cluster.url("standby") + "/internal/wal/" + SHARD, content=b"{}", timeout=5)
    assert r.status_code in (401, 404, 405)

    # a trading key may not deposit, in either region
    for region in ("primary", "standby"):
        r = httpx.post(
            cluster.url(region) + "/v1/deposits",
            headers={"Authorization": f"Bearer {cluster.key}"},
            json={"amount": "1000000000000000", "symbol": "BTCUSDT"},
            timeout=10,
        )
        assert r.status_code == 403, r.text
        assert r.json()["code"] == "funding_key_required"

    # revoked everywhere by one command; both regions refuse it within the TTL
    for region in ("primary", "standby"):
        assert _me(cluster, region, cluster.key) == 200  # cached as valid in both
    key_id = cluster.key.split(".")[0]
    env = {**cluster.base_env(), "EXDR_PG_DSN": cluster.dsns["primary"]}
    out = subprocess.run(
        [sys.executable, "-m", "infra.cli.main", "keys", "revoke", key_id, "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True,
    )
    assert json.loads(out.stdout)["regions"] == {"primary": True, "standby": True}
    revoked_at = time.monotonic()
    for region in ("primary", "standby"):
        wait_for(lambda r=region: _me(cluster, r, cluster.key) == 401, TTL_S + 2, "401")
    assert time.monotonic() - revoked_at <= TTL_S + 0.5
    # ... and a later copy of the credentials does not bring it back
    subprocess.run(
        [sys.executable, "-m", "infra.cli.main", "accounts", "create", "late-comer"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True,
    )
    time.sleep(TTL_S + 0.5)
    for region in ("primary", "standby"):
        assert _me(cluster, region, cluster.key) == 401
    again = subprocess.run(
        [sys.executable, "-m", "infra.cli.main", "keys", "revoke", "ak_0000000000000000"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert again.returncode == 1 and "no key" in again.stderr
