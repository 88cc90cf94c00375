"""`exchange-dr status`: a row per replica of every shard, and whether it counts toward quorum."""

from __future__ import annotations

from infra.cli.status import render_status, status_rows
from infra.settings import Settings

NOW_US = 1_000_000_000


def test_every_replica_with_its_role_lag_and_quorum() -> None:
    settings = Settings.from_env({"EXDR_SHARDS": "s1=BTCUSDT"})
    leaders = {"s1": {"region": "standby", "epoch": 2}}
    heads = {
        "primary": None,  # its site is gone
        "standby": {"s1": (120, 2, NOW_US)},
        "witness": {"s1": (118, 2, NOW_US - 300_000)},
    }
    rows = status_rows(settings, leaders, {"s1": {"standby", "witness"}}, heads, NOW_US)
    assert [(r["region"], r["role"], r["quorum"]) for r in rows] == [
        ("primary", "standby", False),
        ("standby", "leader", True),
        ("witness", "witness", True),
    ]
    assert rows[0]["state"] == "unreachable"
    assert (rows[2]["lag_records"], rows[2]["lag_seconds"], rows[2]["kind"]) == (2, 0.3, "witness")
    text = render_status(rows)
    lines = text.splitlines()
    assert lines[1].split("|")[1:-1] == [
        f" {h.ljust(w)} "
        for h, w in zip(
            [
                "shard",
                "region",
                "kind",
                "role",
                "state",
                "epoch",
                "seq",
                "lag_records",
                "lag_seconds",
                "quorum",
            ],
            [5, 7, 7, 7, 11, 5, 3, 11, 11, 6],
            strict=True,
        )
    ]
    assert (
        "| s1    | witness | witness | witness | streaming   | 2     | 118 | 2           | 0.3 "
        in text
    )
    assert lines[-1] == "s1: quorum 2/3 (needs 2: standby, witness) acknowledging"


def test_two_lost_replicas_leave_no_majority() -> None:
    settings = Settings.from_env({"EXDR_SHARDS": "s1=BTCUSDT"})
    heads = {
        "primary": {"s1": (50, 1, NOW_US)},
        "standby": None,
        "witness": {"s1": (40, 1, NOW_US - 9_000_000)},
    }
    rows = status_rows(settings, {"s1": {"region": "primary"}}, {"s1": set()}, heads, NOW_US)
    assert [r["quorum"] for r in rows] == [True, False, False]
    assert rows[2]["state"] == "stopped"
    assert render_status(rows).splitlines()[-1] == (
        "s1: quorum 1/3 (needs 2: primary) NO MAJORITY: nothing acknowledged"
    )
