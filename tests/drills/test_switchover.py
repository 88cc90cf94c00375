"""Planned switchover and graceful stop: hand over without waiting for any timeout."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.drills.cluster import ROOT, Cluster, place_orders, wait_for

pytestmark = pytest.mark.drill

SHARD = "shard-1"
SLOW_DETECTION = {"EXDR_ZK_SESSION_MS": "4000", "EXDR_FAILOVER_AFTER_MS": "20000",
                  "EXDR_SYNC_POLICY": "degrade"}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, env=dict(SLOW_DETECTION))
    c.prepare()
    c.start("primary")
    c.start("standby")
    c.create_keys()
    try:
        yield c
    finally:
        c.close()


def test_cli_switchover_hands_over_at_once(cluster: Cluster) -> None:
    asyncio.run(place_orders(
        cluster.url("primary"), cluster.key, [f"s-{i}" for i in range(100)],
        funding_key=cluster.funding_key,
    ))
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "infra.cli.main", "switchover", "--shard", SHARD, "--to", "standby",
         "--force", "--key", cluster.operator_key],
        cwd=ROOT, env=cluster.base_env(), capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "drained and handed over at seq 101" in out.stdout
    wait_for(lambda: cluster.shards("standby")[SHARD]["leader"], 5, "the new leader")
    took = time.monotonic() - started
    print(f"\n{out.stdout}\nswitchover took {took:.2f}s (failure detection would take 24s)")
    assert took < 5
    after = asyncio.run(place_orders(
        cluster.url("standby"), cluster.key, ["t-1", "t-2"],
        funding_key=cluster.funding_key,
    ))
    assert after["statuses"] == {201: 2}
    wait_for(lambda: cluster.shards("primary")[SHARD]["seq"] == 104, 20, "the old leader to follow")
    assert cluster.shards("primary")[SHARD]["leader"] is False


def _switchover(cluster: Cluster, to: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infra.cli.main", "switchover", "--shard", SHARD, "--to", to,
         "--force", "--key", cluster.operator_key],
        cwd=ROOT, env=cluster.base_env(), capture_output=True, text=True, timeout=60,
    )


def test_a_switchover_straight_back_needs_no_command_in_between(cluster: Cluster) -> None:
    """The old leader follows the new one at once: its confirmations count for the new term
    although no record of that term exists yet, so the shard can go straight back."""
    asyncio.run(place_orders(
        cluster.url("primary"), cluster.key, ["b-1", "b-2"], funding_key=cluster.funding_key,
    ))
    there = _switchover(cluster, "standby")
    assert there.returncode == 0, there.stderr
    wait_for(lambda: cluster.shards("standby")[SHARD]["leader"], 5, "the standby to lead")
    started = time.monotonic()
    back = _switchover(cluster, "primary")
    assert back.returncode == 0, back.stderr
    wait_for(lambda: cluster.shards("primary")[SHARD]["leader"], 5, "the primary to lead")
    print(f"\nswitched back in {time.monotonic() - started:.2f}s: {back.stdout.strip()}")


def test_switchover_refuses_bad_requests(cluster: Cluster) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "infra.cli.main", "switchover", *args],
                              cwd=ROOT, env=cluster.base_env(), capture_output=True, text=True,
                              timeout=60)

    same = cli("--shard", SHARD, "--to", "primary", "--force", "--key", cluster.operator_key)
    assert same.returncode == 1 and "already leads" in same.stderr
    unknown = cli("--shard", SHARD, "--to", "mars", "--force", "--key", cluster.operator_key)
    assert unknown.returncode == 1 and "unknown region" in unknown.stderr
    no_confirm = cli("--shard", SHARD, "--to", "standby", "--key", cluster.operator_key)
    assert no_confirm.returncode == 1 and "--force" in no_confirm.stderr
    trader = cli("--shard", SHARD, "--to", "standby", "--force", "--key", cluster.key)
    assert trader.returncode == 1 and "403" in trader.stderr


def test_graceful_stop_of_the_leader_hands_over_without_a_timeout(cluster: Cluster) -> None:
    asyncio.run(place_orders(
        cluster.url("primary"), cluster.key, [f"g-{i}" for i in range(50)],
        funding_key=cluster.funding_key,
    ))
    started = time.monotonic()
    cluster.stop("primary", signal.SIGTERM)
    wait_for(lambda: cluster.shards("standby")[SHARD]["leader"], 10, "the standby to take over")
    took = time.monotonic() - started
    print(f"\ngraceful stop -> new leader in {took:.2f}s")
    assert took < 8  # detection alone would take more than 20 s here
    after = asyncio.run(place_orders(
        cluster.url("standby"), cluster.key, ["h-1"],
        funding_key=cluster.funding_key,
    ))
    assert after["statuses"] == {201: 1}
