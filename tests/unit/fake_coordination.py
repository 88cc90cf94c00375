"""An in-memory ZooKeeper for the failover controller's unit tests (Patroni's mocked DCS).

`FakeEnsemble` is the server side: leader nodes owned by sessions, the append-only epoch
history, the failover lock, the handover request, and a clock the test moves. Each region
talks to it through its own `FakeCoordination`, which offers what the controller uses of
infra/coordination/zookeeper.Coordinator. A test can expire a session (its ephemeral leader
node goes and the region is told it is deposed), hold the lock from elsewhere, make the next
call of any method raise, and see every call that ran on an event loop's thread (a blocking
call on the loop: the controller must make none).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from infra.coordination.base import LeaderInfo


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class NodeExistsError(Exception):
    """The shard has a leader (kazoo's NodeExistsError)."""


@dataclass
class FakeEnsemble:
    clock: FakeClock = field(default_factory=FakeClock)
    # shard -> (its leader node, the session that owns it)
    leaders: dict[str, tuple[LeaderInfo, int]] = field(default_factory=dict)
    epochs: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    locks: dict[str, str] = field(default_factory=dict)  # shard -> holder
    handovers: dict[str, str] = field(default_factory=dict)
    # shard -> region -> its published replica position (the live members)
    positions: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    clients: list[FakeCoordination] = field(default_factory=list)
    _sessions: int = 0
    mutex: threading.Lock = field(default_factory=threading.Lock)

    def new_session(self) -> int:
        self._sessions += 1
        return self._sessions

    def set_leader(self, shard: str, info: LeaderInfo | None, session: int = 0) -> None:
        if info is None:
            self.leaders.pop(shard, None)
        else:
            self.leaders[shard] = (info, session)
        for client in self.clients:
            client._leader_changed(shard, info)


class _Lock:
    def __init__(self, ensemble: FakeEnsemble, shard: str, holder: str) -> None:
        self.ensemble, self.shard, self.holder = ensemble, shard, holder

    def release(self) -> None:
        if self.ensemble.locks.get(self.shard) == self.holder:
            del self.ensemble.locks[self.shard]


# the calls that reach the server (a network round trip with the real client)
BLOCKING = {
    "leader",
    "refresh_leader",
    "epochs",
    "lock",
    "take_leadership",
    "resign",
    "request_handover",
    "handover_target",
    "clear_handover",
}


class FakeCoordination:
    """One region's client of a FakeEnsemble."""

    def __init__(
        self, ensemble: FakeEnsemble, region: str, url: str = "", *, lease_s: float = 1.0
    ) -> None:
        self.ensemble = ensemble
        self.region = region
        self.url = url or f"http://{region}"
        self.lease_s = lease_s
        self.session_timeout_s = lease_s * 2
        self.session = ensemble.new_session()
        self._leading: dict[str, float] = {}  # shard -> lease end
        self._cache: dict[str, LeaderInfo | None] = {}
        self.calls: list[str] = []
        self.on_loop: list[str] = []  # blocking calls made on an event loop's thread
        self.failures: dict[str, Exception] = {}  # method -> raised once on its next call
        self.on_deposed: Callable[[str, str], None] | None = None
        self.on_leader_change: Callable[[str, LeaderInfo | None], None] | None = None
        self.hooks: dict[str, Callable[[], None]] = {}  # method -> run before it (once)
        ensemble.clients.append(self)

    # -- test controls -----------------------------------------------------------------

    def fail_next(self, method: str, error: Exception | None = None) -> None:
        self.failures[method] = error or RuntimeError(f"{method} failed (injected)")

    def expire_session(self) -> None:
        """The server expired our session: our ephemeral nodes go, we are deposed."""
        for shard, (_info, session) in list(self.ensemble.leaders.items()):
            if session == self.session:
                self.ensemble.set_leader(shard, None)
        self.session = self.ensemble.new_session()
        for shard in list(self._leading):
            self._depose(shard, "zookeeper session expired")

    def _depose(self, shard: str, why: str) -> None:
        if self._leading.pop(shard, None) is not None and self.on_deposed is not None:
            self.on_deposed(shard, why)

    def _leader_changed(self, shard: str, info: LeaderInfo | None) -> None:
        self._cache[shard] = info
        if shard in self._leading and (info is None or info.region != self.region):
            self._depose(shard, "leader node changed hands")
        if self.on_leader_change is not None:
            self.on_leader_change(shard, info)

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name in BLOCKING:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                pass  # a worker thread: fine
            else:
                self.on_loop.append(name)
        hook = self.hooks.pop(name, None)
        if hook is not None:
            hook()
        failure = self.failures.pop(name, None)
        if failure is not None:
            raise failure

    # -- what the controller uses ---------------------------------------------------------

    def is_leader(self, shard: str) -> bool:
        return self.ensemble.clock() < self._leading.get(shard, 0.0)

    def leader_url(self, shard: str) -> str | None:
        info = self._cache.get(shard)
        return None if info is None else info.url

    def leader(self, shard: str) -> LeaderInfo | None:
        self._call("leader")
        return self._cache.get(shard)

    def refresh_leader(self, shard: str) -> LeaderInfo | None:
        self._call("refresh_leader")
        entry = self.ensemble.leaders.get(shard)
        self._cache[shard] = None if entry is None else entry[0]
        return self._cache[shard]

    def epochs(self, shard: str) -> list[tuple[int, int]]:
        self._call("epochs")
        return list(self.ensemble.epochs.get(shard, []))

    def lock(self, shard: str, timeout: float = 2.0) -> Any:
        self._call("lock")
        with self.ensemble.mutex:
            if shard in self.ensemble.locks:
                return None
            self.ensemble.locks[shard] = self.region
        return _Lock(self.ensemble, shard, self.region)

    def take_leadership(self, shard: str, *, applied_seq: int, min_epoch: int = 0) -> int:
        self._call("take_leadership")
        if shard in self.ensemble.leaders:
            raise NodeExistsError(f"shard {shard} has a leader")
        history = self.ensemble.epochs.setdefault(shard, [])
        epoch = max([min_epoch, *[e for e, _ in history]]) + 1
        history.append((epoch, applied_seq + 1))
        info = LeaderInfo(self.region, self.url, epoch, applied_seq + 1)
        self._leading[shard] = self.ensemble.clock() + self.lease_s
        self.ensemble.set_leader(shard, info, self.session)
        return epoch

    def resign(self, shard: str) -> None:
        self._call("resign")
        self._leading.pop(shard, None)
        entry = self.ensemble.leaders.get(shard)
        if entry is not None and entry[1] == self.session:
            self.ensemble.set_leader(shard, None)

    def request_handover(self, shard: str, to_region: str) -> None:
        self._call("request_handover")
        self.ensemble.handovers[shard] = to_region

    def handover_target(self, shard: str) -> str | None:
        self._call("handover_target")
        return self.ensemble.handovers.get(shard)

    def clear_handover(self, shard: str) -> None:
        self._call("clear_handover")
        self.ensemble.handovers.pop(shard, None)

    # -- replica positions (not among the recorded calls: every round publishes one) -------

    def publish_position(self, shard: str, *, kind: str, epoch: int, seq: int) -> None:
        self.ensemble.positions.setdefault(shard, {})[self.region] = {
            "region": self.region,
            "kind": kind,
            "epoch": epoch,
            "seq": seq,
        }

    def members(self, shard: str) -> list[dict[str, Any]]:
        return list(self.ensemble.positions.get(shard, {}).values())

    # -- helpers for tests ----------------------------------------------------------------

    def renew(self, shard: str) -> None:
        if shard in self._leading:
            self._leading[shard] = self.ensemble.clock() + self.lease_s

    def leads_in_ensemble(self, shard: str) -> bool:
        entry = self.ensemble.leaders.get(shard)
        return entry is not None and entry[1] == self.session
