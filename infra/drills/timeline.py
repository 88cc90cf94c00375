"""What happened when, during a drill: steps, marks, role and lag samples, the clients' acks."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from infra.drills.clients import ACKED, RETRY, Ledger
from infra.drills.cluster import Cluster, metric_total


@dataclass
class Timeline:
    """Everything with a time, relative to the drill's start."""

    t0: float = field(default_factory=time.monotonic)
    steps: list[dict[str, Any]] = field(default_factory=list)
    events: dict[str, float | None] = field(default_factory=dict)
    lag: list[list[Any]] = field(default_factory=list)
    roles: list[list[Any]] = field(default_factory=list)  # [t, region, leader, epoch, seq]
    findings: list[str] = field(default_factory=list)  # what a fault's own checks saw go wrong

    def rel(self, t: float) -> float:
        return round(t - self.t0, 3)

    def step(self, text: str) -> None:
        self.steps.append({"t": self.rel(time.monotonic()), "text": text})

    def mark(self, name: str, t: float | None = None) -> float:
        at = time.monotonic() if t is None else t
        self.events[name] = self.rel(at)
        return at


class Sampler:
    """Polls both regions: roles (every 100 ms) and replication lag (every 500 ms)."""

    def __init__(self, cluster: Cluster, timeline: Timeline) -> None:
        self.cluster = cluster
        self.timeline = timeline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drill-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.cluster.operator_key}"}
        rounds = 0
        with httpx.Client(headers=headers, timeout=0.5) as http:
            while not self._stop.wait(0.1):
                rounds += 1
                for region in ("primary", "standby"):
                    now = time.monotonic()
                    with contextlib.suppress(Exception):
                        row = http.get(self.cluster.url(region) + "/v1/shards").json()["shards"][0]
                        self.timeline.roles.append(
                            [
                                self.timeline.rel(now),
                                region,
                                row["leader"],
                                row["epoch"],
                                row["seq"],
                            ]
                        )
                    if rounds % 5 == 0:
                        with contextlib.suppress(Exception):
                            text = http.get(self.cluster.url(region) + "/metrics").text
                            self.timeline.lag.append(
                                [
                                    self.timeline.rel(now),
                                    region,
                                    metric_total(text, "matching_engine_standby_lag_seconds"),
                                    metric_total(text, "standby_lag_records"),
                                ]
                            )

    def first_leader_after(self, region: str, after: float) -> float | None:
        rel_after = self.timeline.rel(after)
        for t, r, leader, _, _ in list(self.timeline.roles):
            if r == region and leader and t >= rel_after:
                return float(t)
        return None


def timeline_data(tl: Timeline, ledger: Ledger | None, cluster: Cluster) -> dict[str, Any]:
    regions = {cluster.url(r): r for r in ("primary", "standby")}
    acks: list[list[Any]] = []
    refusals: list[list[Any]] = []
    for a in ledger.attempts if ledger is not None else []:
        t = tl.rel(a.sent_at + a.latency_s)
        if a.status in ACKED:
            acks.append([t, round(a.latency_s * 1000, 2), regions.get(a.url, a.url)])
        elif a.status in RETRY:  # unavailable; a definite 4xx answer is service, not outage
            refusals.append([t, a.code or f"http {a.status}"])
    acks.sort()
    refusals.sort()
    return {"acks": acks, "refusals": refusals, "lag": tl.lag, "roles": tl.roles}
