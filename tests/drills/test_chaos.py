"""The bounded chaos suite: one drill of every kind, under load, on real processes.

Each drill starts its own two regions, broker and databases, injects its fault, heals, and
checks the clients' ledger, the trades audit, the leaders and the state hashes (see
infra/drills/run.py). `make drills` runs the same drills many times; this is one round.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.drills.report import format_table
from infra.drills.run import FAILOVER_KINDS, KINDS, run_drill
from infra.drills.sites import SITE_KINDS

pytestmark = pytest.mark.drill


# `make test` keeps one round of the unplanned failover and of the replay; the other kinds run in
# `make drills` (marked long), which keeps `make test` within its time on two cores. The planned
# switchover is also in test_switchover.py and the loss of the leader's site in test_sites.py.
SLOWER_ROUND = {"planned", "region-loss", "broker-loss", "coordinator-loss", "partition"}


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param(k, marks=pytest.mark.long) if k in SLOWER_ROUND else k
        for k in KINDS
        if k not in SITE_KINDS  # test_sites.py
    ],
)
def test_drill(kind: str, tmp_path: Path) -> None:
    result = run_drill(
        kind,
        seconds=8,
        fail_after=3,
        workdir=tmp_path / "work",
        reports_dir=tmp_path / "reports",
    )
    print("\n" + format_table(result))
    assert result["passed"], result["failures"]
    assert result["lost"] == result["duplicated"] == result["phantom"] == 0
    assert result["cancels_lost"] == 0 and not result["audit"]["mismatches"]
    assert result["audit"]["trades"] > 0, "the load is meant to trade"
    assert len(set(result["state_hashes"].values())) == 1
    # the new leader's live read models equal a projection from scratch of its WAL
    assert result["read_models_match"], result["read_models_problems"]
    assert result["read_models"]["trades"] == result["audit"]["trades"]
    if kind in FAILOVER_KINDS:
        assert result["leader_after"] == "standby"
        assert result["epoch_after"] > result["epoch_before"]
        assert result["rto_seconds"] is not None and result["rto_seconds"] < 5
    else:
        assert result["leader_after"] == "primary"
        assert result["epoch_after"] == result["epoch_before"]

    # the report a person reads: JSON with the timeline, and a self-contained page
    report = json.loads(Path(result["report"]["json"]).read_text())
    assert report["kind"] == kind and report["timeline"]["acks"]
    page = Path(result["report"]["html"]).read_text()
    assert "<svg" in page and kind in page and "PASSED" in page
