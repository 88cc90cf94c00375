"""Regions name their kind: full replicas lead, witnesses only store and confirm the WAL."""

from __future__ import annotations

import pytest

from application.replication.quorum import ReplicaKind
from infra.settings import DEFAULT_ZK_HOSTS, Settings, parse_regions

PG = "postgresql://postgres@127.0.0.1:5432"


def test_the_defaults_are_three_sites_and_a_three_member_ensemble() -> None:
    settings = Settings.from_env({})
    assert [(r.name, r.kind) for r in settings.regions] == [
        ("primary", ReplicaKind.FULL),
        ("standby", ReplicaKind.FULL),
        ("witness", ReplicaKind.WITNESS),
    ]
    assert [r.pg_dsn.rsplit("/", 1)[1] for r in settings.regions] == [
        "exchange_dr",
        "exchange_dr_standby",
        "exchange_dr_witness",
    ]
    assert [r.api_url[-4:] for r in settings.regions] == ["8080", "8081", "8082"]
    assert settings.zk_hosts == DEFAULT_ZK_HOSTS
    assert len(settings.zk_hosts.split(",")) == 3
    assert settings.replicas == 3
    assert settings.replica_set_problem() is None
    assert [r.name for r in settings.promotable_peers("primary")] == ["standby"]


def test_a_witness_is_named_by_a_third_field() -> None:
    regions = parse_regions(
        f"a={PG}/a|http://h:1;b={PG}/b|http://h:2|full;w={PG}/w|http://h:3|witness"
    )
    assert [r.kind for r in regions] == [ReplicaKind.FULL, ReplicaKind.FULL, ReplicaKind.WITNESS]
    assert [r.promotable for r in regions] == [True, True, False]


def test_two_regions_stay_allowed_with_a_warning() -> None:
    settings = Settings.from_env({"EXDR_REGIONS": f"a={PG}/a|http://h:1;b={PG}/b|http://h:2"})
    assert settings.replicas == 2
    assert "configure 3 or more" in (settings.replica_set_problem() or "")


def test_one_promotable_region_of_three_is_a_problem() -> None:
    spec = f"a={PG}/a|http://h:1;w={PG}/w|http://h:2|witness;v={PG}/v|http://h:3|witness"
    assert "at least 2" in (Settings.from_env({"EXDR_REGIONS": spec}).replica_set_problem() or "")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (f"a={PG}/a|http://h:1|arbiter", "kind must be one of full, witness"),
        (f"w={PG}/w|http://h:1|witness", "at least one must be able to lead"),
    ],
)
def test_bad_kinds_are_refused(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_regions(spec)


def test_a_witness_is_never_the_preferred_leader() -> None:
    spec = f"w={PG}/w|http://h:1|witness;a={PG}/a|http://h:2;b={PG}/b|http://h:3"
    assert Settings.from_env({"EXDR_REGIONS": spec}).preferred_leader == "a"
    with pytest.raises(ValueError, match="is a witness"):
        Settings.from_env({"EXDR_REGIONS": spec, "EXDR_LEADER_REGION": "w"})
