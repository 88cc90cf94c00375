"""The drill cluster on three sites: each region named with its kind, one ZooKeeper member per
site, and profiles that say what they set."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.drills.cluster import THREE_SITES, Cluster
from infra.drills.sites import profile_env
from infra.settings import Settings


def test_three_sites_configure_a_witness_and_an_ensemble(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, sites=THREE_SITES, own_zookeeper=True, zk_members=3)
    env = cluster.base_env()
    settings = Settings.from_env(env)
    assert [(r.name, r.kind.value) for r in settings.regions] == [
        ("primary", "full"),
        ("standby", "full"),
        ("witness", "witness"),
    ]
    assert settings.zk_hosts == ",".join(f"127.0.0.1:{p}" for p in cluster.zk_ports)
    assert len(set(cluster.zk_ports)) == 3
    assert [cluster.zk_member_of(r) for r in cluster.names] == [0, 1, 2]
    assert settings.replica_set_problem() is None


def test_profiles_state_their_settings() -> None:
    defaults = Settings.from_env(profile_env("defaults"))
    assert defaults == Settings.from_env({})  # the product's defaults, nothing else
    tuned = Settings.from_env(profile_env("tuned"))
    assert tuned.sync_policy == "strict" and tuned.failover.failover_after_s < 1
    with pytest.raises(ValueError, match="unknown profile"):
        profile_env("fast")
