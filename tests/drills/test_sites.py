"""Three sites (two full regions and a witness, each with its own PostgreSQL server and ZooKeeper
member), strict sync replication, whole sites lost under load; the clients' ledger and the
trades audit checked after each (infra/drills/sites.py), on the product's default settings (the
tuned profile's 300 ms lease does not outlast a ZooKeeper leader election: losing the member
that led the ensemble refuses commands for about a second there)."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.drills.sites import run_site_drill

pytestmark = pytest.mark.drill  # about 40 s each


def _run(kind: str, tmp_path: Path) -> dict[str, object]:
    result = run_site_drill(
        kind, profile="defaults", seconds=15, fail_after=3, workdir=tmp_path / "work"
    )
    print({k: v for k, v in result.items() if k not in ("timeline", "steps", "events")})
    return result


def _ledger_clean(result: dict[str, object]) -> None:
    assert result["lost"] == result["duplicated"] == result["phantom"] == 0
    audit = result["audit"]
    assert isinstance(audit, dict) and not audit["mismatches"]


def test_a_follower_lost_under_load_refuses_nothing(tmp_path: Path) -> None:
    result = _run("witness-loss", tmp_path)
    assert result["passed"], result["failures"]
    assert result["read_models_match"], result["read_models_problems"]
    _ledger_clean(result)
    assert result["refused_after_fault"] == 0
    assert result["epoch_after"] == result["epoch_before"]


def test_the_leaders_site_lost_for_good_loses_nothing(tmp_path: Path) -> None:
    result = _run("site-loss", tmp_path)
    assert result["passed"], result["failures"]
    assert result["read_models_match"], result["read_models_problems"]
    _ledger_clean(result)
    assert result["leader_after"] == "standby"
    assert result["rto_seconds"] is not None
    assert result["quorum_replicas"] == ["standby", "witness"]


def test_two_followers_lost_acknowledge_nothing_and_lose_nothing(tmp_path: Path) -> None:
    result = _run("majority-loss", tmp_path)
    assert result["passed"], result["failures"]
    assert result["read_models_match"], result["read_models_problems"]
    _ledger_clean(result)
    assert result["acked_during_outage"] == 0
    assert any(a["name"] == "ReplicationNoMajority" for a in result["alerts"])  # type: ignore[attr-defined, index]
