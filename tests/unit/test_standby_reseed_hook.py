"""The re-seed hook of a standby whose gap is archived out of its reach: one alert, not one
per catch-up; the leader's archive listed again every RECHECK_S, not every half second."""

from __future__ import annotations

from typing import Any

from application.wal.reseed import ReseedAction
from infra.wal.archive import Segment
from infra.wal.reseed import RECHECK_S, REFUSED_ALERT_EVERY_S, StandbyReseed


class _Archive:
    url = "/elsewhere"

    def __init__(self) -> None:
        self.asked = 0

    def exists(self, segment: Segment) -> bool:
        self.asked += 1
        return False


class _Leader:
    def __init__(self) -> None:
        self.archive = _Archive()

    def archived_seq(self, shard: str) -> int:
        return 1000

    def archived_segments(self, shard: str) -> list[Segment]:
        return [Segment(shard, 1, 1000, "shard-1/1-1000.seg", 10, "c", "f", "l")]

    def checkpoint_seqs(self, shard: str) -> list[int]:
        return [1000, 1200]


class _App:
    shard_id = "shard-1"
    seq = 40
    store = object()


class _Follower:
    def __init__(self) -> None:
        self.app: Any = _App()
        self.primary: Any = _Leader()
        self.keys = None


def test_a_blocked_standby_is_alerted_once_and_rechecked_now_and_then() -> None:
    now = [0.0]
    sent: list[tuple[str, str, dict[str, Any]]] = []
    hook = StandbyReseed(
        "standby",
        lambda sev, name, msg, labels: sent.append((sev, name, dict(labels))),
        clock=lambda: now[0],
    )
    follower = _Follower()
    plans = []
    for _ in range(5):
        plans.append(hook(follower))
        now[0] += 0.5
    assert all(p.action is ReseedAction.REFUSE for p in plans)
    assert follower.primary.archive.asked == 1  # listed once within RECHECK_S
    assert sent == [
        (
            "critical",
            "StandbyReseedBlocked",
            {
                "shard": "shard-1",
                "region": "standby",
                "from_seq": 41,
                "to_seq": 1000,
                "checkpoint_seq": "",
            },
        )
    ]
    now[0] += RECHECK_S
    hook(follower)
    assert follower.primary.archive.asked == 2 and len(sent) == 1  # same reason: no new alert
    now[0] += REFUSED_ALERT_EVERY_S
    hook(follower)
    assert len(sent) == 2  # still blocked: said again


def test_a_standby_past_the_leaders_archived_seq_costs_one_query() -> None:
    follower = _Follower()
    follower.app.seq = 1000
    plan = StandbyReseed("standby")(follower)
    assert plan.action is ReseedAction.NONE
    assert follower.primary.archive.asked == 0
