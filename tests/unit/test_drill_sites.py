"""The drill cluster on three sites: each region named with its kind, one ZooKeeper member per
site, and profiles that say what they set."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from infra.drills.cluster import THREE_SITES, Cluster
from infra.drills.sites import profile_env, rto_phases
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


def test_rto_phases_read_from_the_new_leaders_log(tmp_path: Path) -> None:
    log = tmp_path / "standby.log"
    log.write_text(
        "[2026-12-02 07:07:40,900] [1] [WARNING] leader of shard=shard-1 unhealthy (old round)\n"
        "[2026-12-02 07:07:41,145] [1] [WARNING] leader of shard=shard-1 unhealthy (http://x)\n"
        "[2026-12-02 07:07:41,700] [1] [INFO] leader node gone shard=shard-1 region=standby\n"
        "\tcontinuation line without a time\n"
        "[2026-12-02 07:07:41,896] [1] [WARNING] failover lock taken shard=shard-1\n"
        "[2026-12-02 07:07:41,963] [1] [WARNING] leader shard=shard-1 region=standby epoch=3\n"
        '[2026-12-02 07:07:42,030] [1] [CRITICAL] ALERT {"alert": "FailoverCompleted"}\n'
    )
    fault = dt.datetime(2026, 12, 2, 7, 7, 41, 0).timestamp()
    assert rto_phases(log, fault, 1.092) == {
        "leader_unhealthy": 0.145,
        "leader_node_gone": 0.7,
        "lock_taken": 0.896,
        "epoch_appended": 0.963,
        "promoted": 1.03,
        "first_ack": 1.092,
    }
    missing = rto_phases(tmp_path / "absent.log", fault, None)
    assert set(missing.values()) == {None}


def test_every_drill_kind_runs_on_three_sites_with_the_profiles_settings(tmp_path: Path) -> None:
    from infra.drills.run import three_site_cluster

    cluster = three_site_cluster("unplanned", tmp_path, "sync", "defaults")
    settings = Settings.from_env(cluster.base_env())
    assert [(r.name, r.kind.value) for r in settings.regions] == [
        ("primary", "full"),
        ("standby", "full"),
        ("witness", "witness"),
    ]
    assert set(cluster.pg_servers) == {"primary", "standby", "witness"}
    assert len(cluster.zk_ports) == 3 and not cluster.partitionable
    assert settings.sync_policy == "strict" and settings.failover.failover_after_s == 5
    tuned = Settings.from_env(three_site_cluster("partition", tmp_path, "sync", "tuned").base_env())
    assert tuned.sync_policy == "strict" and tuned.failover.failover_after_s < 1


def test_a_profile_a_kind_cannot_run_is_refused_before_anything_starts() -> None:
    from infra.drills.run import run_drill

    with pytest.raises(ValueError, match="defaults or tuned profile only"):
        run_drill("site-loss", profile="tuned-degrade", reports_dir=None)
    with pytest.raises(ValueError, match="unknown profile"):
        run_drill("unplanned", profile="fast", reports_dir=None)
