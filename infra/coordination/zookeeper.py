"""ZooKeeper coordination: one leader per shard, a lease shorter than the session, epochs.

Layout per shard, under the root path of our znodes (`Settings.zk_root`, EXDR_ZK_ROOT, by
default /exdr/<topic prefix>, so deployments and drills that share a ZooKeeper stay apart):
    shards/<shard>/leader     ephemeral: {"region", "url", "epoch", "start_seq"} of the leader
    shards/<shard>/epochs     persistent: [[epoch, start_seq], ...], only ever appended to
    shards/<shard>/lock       kazoo lock: one failover or switchover at a time
    shards/<shard>/handover   persistent: {"to": region} while a planned switchover runs
    shards/<shard>/members/<region>  ephemeral: {"region", "kind", "epoch", "seq"}, that
                              replica's position, refreshed every health round (who may promote)

The leader may accept commands only while its lease holds. The lease is renewed by a sync()
and then a read, both answered by the server; it lasts `lease_s`, counted from before the
sync, and shorter than the session the server negotiated (not the one asked for: the server
clamps it to [minSessionTimeout, maxSessionTimeout]) minus two margins, so a leader cut off
from ZooKeeper stops before the server can expire its session and let another region in.
The sync margin covers a follower cut off from the quorum, which answers reads for up to
syncLimit * tickTime (the sync makes the read go through the quorum leader); the clock margin
covers our clock running slower than the server's.
A disconnection (one ensemble member lost) does not end the lease early: the client reconnects
to another member within it, and clients see nothing. When the lost member led the ensemble,
the others elect a new leader first (about a second on two busy cores): the lease is as long
as the bound allows, so that this fits in it on the default session.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError
from kazoo.protocol.serialization import Connect
from kazoo.retry import KazooRetry

from infra.coordination.base import LeaderInfo

log = logging.getLogger("exchange_dr.coordination")


def shard_path(root: str, shard: str, *parts: str) -> str:
    """A shard's znode (or one below it, e.g. "leader") under `root`."""
    return "/".join([root.rstrip("/"), "shards", shard, *parts])


def _spread_hosts(hosts: str, at_least: int = 4) -> str:
    """Repeat the host list: kazoo waits session_timeout / len(hosts) for a handshake, and a
    connect that meets a server still starting must give up and retry well within the session,
    or the session expires while the client waits (a ZooKeeper restart would depose a leader)."""
    base, slash, chroot = hosts.partition("/")
    entries = [h.strip() for h in base.split(",") if h.strip()]
    spread = list(entries)
    while len(spread) < at_least:
        spread += entries
    return ",".join(spread) + (slash + chroot if slash else "")


class Coordinator:
    """This region's view of ZooKeeper; implements the application's Leadership port."""

    def __init__(
        self,
        hosts: str,
        region: str,
        url: str,
        *,
        root: str,
        session_timeout_s: float = 2.0,
        lease_s: float | None = None,
        sync_margin_s: float | None = None,
        clock_margin_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.region = region
        self.url = url
        self.root = root.rstrip("/")
        self.requested_session_s = session_timeout_s
        # the session the server granted (known once connected; until then what was asked)
        self.session_timeout_s = session_timeout_s
        self._lease_cap_s = lease_s
        self._sync_margin_s = sync_margin_s
        self._clock_margin_s = clock_margin_s
        self._clock = clock
        self._hosts = hosts
        self._shards: list[str] = []
        self.zk = self._new_client()
        self.connected = False
        self._lease_until: dict[str, float] = {}
        self._leading: set[str] = set()
        self._leaders: dict[str, LeaderInfo | None] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self.on_deposed: Callable[[str, str], None] | None = None
        self.on_leader_change: Callable[[str, LeaderInfo | None], None] | None = None

    # -- the lease ------------------------------------------------------------------------

    @property
    def sync_margin_s(self) -> float:
        """How long a cut-off follower may still answer (syncLimit * tickTime, which the
        client cannot read): a quarter of the session unless configured."""
        if self._sync_margin_s is not None:
            return self._sync_margin_s
        return self.session_timeout_s / 4

    @property
    def clock_margin_s(self) -> float:
        """Our clock against the server's: a tenth of the session unless configured."""
        if self._clock_margin_s is not None:
            return self._clock_margin_s
        return self.session_timeout_s / 10

    @property
    def lease_s(self) -> float:
        """How long a renewal lets this region lead: the negotiated session less the sync and
        clock margins (an explicit lease is capped by that too). As long as that bound allows:
        a new ensemble leader's election after a member is lost must fit in it."""
        bound = self.session_timeout_s - (self.sync_margin_s + self.clock_margin_s)
        wanted = self._lease_cap_s if self._lease_cap_s is not None else bound
        return max(0.0, min(wanted, bound))

    def _new_client(self) -> KazooClient:
        # reconnect quickly: the lease can only be renewed over a live connection
        retry = KazooRetry(max_tries=-1, delay=0.05, backoff=1.5, max_delay=0.5)
        zk = KazooClient(
            hosts=_spread_hosts(self._hosts),
            timeout=self.requested_session_s,
            connection_retry=retry,
        )
        self._hook_handshake(zk._connection)

        def on_state(state: str) -> None:
            if zk is self.zk:  # a client given up for a new one says nothing any more
                self._on_state(state)

        zk.add_listener(on_state)
        return zk

    def _hook_handshake(self, connection: Any) -> None:
        """Learn the negotiated session from each connect handshake: kazoo uses it for its own
        timeouts but keeps it to itself."""
        invoke = connection._invoke

        def handshake(timeout: float, request: Any, xid: int | None = None) -> Any:
            result = invoke(timeout, request) if xid is None else invoke(timeout, request, xid)
            if isinstance(request, Connect):
                answer = result[0] if isinstance(result, tuple) else result
                granted_ms = getattr(answer, "time_out", 0)
                if granted_ms > 0:
                    self._negotiated(granted_ms / 1000)
            return result

        connection._invoke = handshake

    def _negotiated(self, session_s: float) -> None:
        if session_s != self.session_timeout_s:
            log.warning(
                "zookeeper session negotiated region=%s requested_s=%.3f granted_s=%.3f",
                self.region,
                self.requested_session_s,
                session_s,
            )
        with self._lock:
            self.session_timeout_s = session_s
            # a lease granted under a longer session must not outlive the new bound
            ceiling = self._clock() + self.lease_s
            for shard, until in self._lease_until.items():
                self._lease_until[shard] = min(until, ceiling)
        if self.lease_s <= 0:
            log.error(
                "zookeeper session of %.3fs leaves no lease after the margins region=%s: "
                "this region cannot lead",
                session_s,
                self.region,
            )

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, shards: list[str], timeout: float = 15.0) -> None:
        self.zk.start(timeout=timeout)
        self._shards = list(shards)
        for shard in shards:
            # an ensemble still settling may drop the first connection: retry, do not crash
            self.zk.retry(self.zk.ensure_path, self._path(shard))
            self._leaders[shard] = None
        self._watch(self.zk)
        self._renewer = threading.Thread(target=self._renew_loop, name="zk-lease", daemon=True)
        self._renewer.start()

    def _watch(self, zk: KazooClient) -> None:
        for shard in self._shards:
            zk.DataWatch(self._path(shard, "leader"), self._watcher(shard, zk))

    def stop(self) -> None:
        self._stop.set()
        try:
            self.zk.stop()
            self.zk.close()
        except Exception as exc:  # already gone: nothing to release
            log.debug("zookeeper stop: %s", exc)

    def _path(self, shard: str, *parts: str) -> str:
        return shard_path(self.root, shard, *parts)

    def _on_state(self, state: str) -> None:
        self.connected = state == KazooState.CONNECTED
        if state == KazooState.SUSPENDED:
            # one member of the ensemble gone (or the link to it): the client moves to another
            # member with the same session. The lease runs on: it began before the last read
            # that reached the server and is shorter than the session, so it ends before the
            # server could expire the session, and nothing renews it until a member answers
            log.warning(
                "zookeeper suspended region=%s: the lease runs out unless a member answers",
                self.region,
            )
        elif state != KazooState.CONNECTED:
            with self._lock:
                self._lease_until.clear()
            log.warning("zookeeper %s region=%s: commands paused", state.lower(), self.region)
        if state == KazooState.LOST:
            for shard in list(self._leading):
                self._deposed(shard, "zookeeper session expired")

    def _watcher(self, shard: str, zk: KazooClient) -> Callable[[bytes | None, Any], bool]:
        def watch(data: bytes | None, stat: Any) -> bool:
            if zk is not self.zk:
                return False  # a client given up for a new one: its watch ends
            info = None
            if data:
                try:
                    raw = json.loads(data)
                    info = LeaderInfo(
                        raw["region"], raw["url"], int(raw["epoch"]), int(raw.get("start_seq", 0))
                    )
                except (ValueError, KeyError, TypeError):
                    info = None
            before = self._leaders.get(shard)
            self._leaders[shard] = info
            if info is None and before is not None:
                # when a failover's detection ends: the old leader's session expired (or it
                # resigned); the drills read this line to split their RTO into its phases
                log.info(
                    "leader node gone shard=%s region=%s was=%s", shard, self.region, before.region
                )
            if shard in self._leading and (info is None or info.region != self.region):
                self._deposed(shard, "leader node changed hands")
            if self.on_leader_change is not None:
                self.on_leader_change(shard, info)
            return not self._stop.is_set() and zk is self.zk

        return watch

    def _deposed(self, shard: str, why: str) -> None:
        with self._lock:
            was = shard in self._leading
            self._leading.discard(shard)
            self._lease_until.pop(shard, None)
        if was:
            log.critical("deposed shard=%s region=%s: %s", shard, self.region, why)
            if self.on_deposed is not None:
                self.on_deposed(shard, why)

    def _connection_died(self) -> bool:
        """kazoo ends its connection loop for good on an error it does not expect (a server's
        'xids do not match', python-zk/kazoo#254): the client then stays closed, reconnecting
        never, although nobody stopped it."""
        connection = getattr(self.zk, "_connection", None)  # kazoo's, not public
        if connection is None:
            return False
        return bool(connection.connection_stopped.is_set()) and not self._stop.is_set()

    def _revive(self) -> None:
        """A new client after the old one's connection loop died: a new session (the old one
        is lost, so is any lease, see _on_state), the leader watches set up again. kazoo's
        own restart() would not do: a stop() of a dead loop leaves its close request queued
        for the next connection, which then closes its session at once."""
        log.error(
            "zookeeper connection loop ended without a stop region=%s: starting a new client",
            self.region,
        )
        old = self.zk
        try:
            old.stop()
            old.close()
        except Exception as exc:  # already gone: nothing to release
            log.debug("zookeeper stop of the dead client: %s", exc)
        self.zk = zk = self._new_client()
        try:
            zk.start(timeout=max(1.0, self.session_timeout_s))
        except Exception as exc:  # the ensemble unreachable now: tried again next round
            log.warning("zookeeper client not started region=%s: %s", self.region, exc)
            return  # kazoo stopped it: its loop is over, and the next round tries again
        self._watch(zk)
        log.warning("zookeeper client started again region=%s", self.region)

    def _renew_loop(self) -> None:
        interval = max(0.02, self.lease_s / 5)
        while not self._stop.wait(interval):
            if self._connection_died():
                self._revive()
                continue
            for shard in list(self._leading):
                started = self._clock()
                path = self._path(shard, "leader")
                try:
                    # through the quorum leader: a follower cut off from it serves stale reads
                    self.zk.sync(path)
                    data, _ = self.zk.get(path)
                    owner = json.loads(data).get("region")
                except NoNodeError:
                    self._deposed(shard, "leader node is gone")
                    continue
                except Exception as exc:  # no answer: the lease simply runs out
                    log.debug("lease renewal failed shard=%s: %s", shard, exc)
                    continue
                if owner != self.region:
                    self._deposed(shard, f"leader node belongs to {owner}")
                    continue
                with self._lock:
                    if shard in self._leading:
                        self._lease_until[shard] = started + self.lease_s

    # -- the Leadership port ----------------------------------------------------------------

    def is_leader(self, shard_id: str) -> bool:
        with self._lock:
            return shard_id in self._leading and self._clock() < self._lease_until.get(
                shard_id, 0.0
            )

    def leader_url(self, shard_id: str) -> str | None:
        info = self._leaders.get(shard_id)
        return None if info is None else info.url

    def leader(self, shard_id: str) -> LeaderInfo | None:
        return self._leaders.get(shard_id)

    def refresh_leader(self, shard_id: str) -> LeaderInfo | None:
        """Read the leader node now (not from the watch cache)."""
        try:
            data, _ = self.zk.get(self._path(shard_id, "leader"))
        except NoNodeError:
            self._leaders[shard_id] = None
            return None
        raw = json.loads(data)
        info = LeaderInfo(
            raw["region"], raw["url"], int(raw["epoch"]), int(raw.get("start_seq", 0))
        )
        self._leaders[shard_id] = info
        return info

    # -- epochs -----------------------------------------------------------------------------

    def epochs(self, shard: str) -> list[tuple[int, int]]:
        """[(epoch, start_seq), ...] oldest first; empty before the first leader."""
        try:
            data, _ = self.zk.get(self._path(shard, "epochs"))
        except NoNodeError:
            return []
        return [(int(e), int(s)) for e, s in json.loads(data)]

    # -- becoming leader --------------------------------------------------------------------

    def lock(self, shard: str, timeout: float = 2.0) -> Any:
        """The shard's failover lock (a context manager once acquired), or None on timeout."""
        lock = self.zk.Lock(self._path(shard, "lock"), self.region)
        if lock.acquire(timeout=timeout):
            return lock
        return None

    def take_leadership(self, shard: str, *, applied_seq: int, min_epoch: int = 0) -> int:
        """Append a new epoch starting after `applied_seq` and create the leader node, in one
        ZooKeeper transaction: both happen or neither.

        Raises NodeExistsError if another leader holds the shard (its session is alive); then
        no epoch was appended. The append is a compare-and-set on the history's version: it
        only grows, even across races (the loser reads again). One round trip for both
        writes, after one read: a promotion is on the RTO's path, and each round trip to a
        loaded ensemble counts.
        """
        path = self._path(shard, "epochs")
        leader_path = self._path(shard, "leader")
        while True:
            try:
                data, stat = self.zk.get(path)
                history = [(int(e), int(s)) for e, s in json.loads(data)]
                version = stat.version
            except NoNodeError:
                history, version = [], -1
            epoch = max([min_epoch, *[e for e, _ in history]]) + 1
            history.append((epoch, applied_seq + 1))
            encoded = json.dumps(history).encode()
            leader = {
                "region": self.region,
                "url": self.url,
                "epoch": epoch,
                "start_seq": applied_seq + 1,
            }
            started = self._clock()  # the lease counts from before the server saw the node
            txn = self.zk.transaction()
            if version < 0:
                txn.create(path, encoded)
            else:
                txn.set_data(path, encoded, version=version)
            txn.create(leader_path, json.dumps(leader).encode(), ephemeral=True)
            epochs_result, leader_result = txn.commit()
            if isinstance(leader_result, NodeExistsError):
                raise NodeExistsError(f"shard {shard} has a leader")
            if isinstance(epochs_result, BadVersionError | NodeExistsError):
                continue  # another writer appended first: read again
            for result in (epochs_result, leader_result):
                if isinstance(result, Exception):
                    raise result
            break
        with self._lock:
            self._leading.add(shard)
            self._lease_until[shard] = started + self.lease_s
        self._leaders[shard] = LeaderInfo(self.region, self.url, epoch, applied_seq + 1)
        log.warning(
            "leader shard=%s region=%s epoch=%s start_seq=%s",
            shard,
            self.region,
            epoch,
            applied_seq + 1,
        )
        return epoch

    def resign(self, shard: str) -> None:
        """Give up leadership now (planned switchover, graceful shutdown, failed promotion).

        Deletes the leader node only if our session owns it, at the version read: never a
        successor's."""
        with self._lock:
            self._leading.discard(shard)
            self._lease_until.pop(shard, None)
        path = self._path(shard, "leader")
        with contextlib.suppress(NoNodeError, BadVersionError):
            _, stat = self.zk.get(path)
            session = self.zk.client_id
            if session is not None and stat.ephemeralOwner == session[0]:
                self.zk.delete(path, version=stat.version)

    # -- planned switchover -------------------------------------------------------------------

    def request_handover(self, shard: str, to_region: str) -> None:
        path = self._path(shard, "handover")
        value = json.dumps({"to": to_region, "from": self.region}).encode()
        try:
            self.zk.create(path, value, makepath=True)
        except NodeExistsError:
            self.zk.set(path, value)

    def handover_target(self, shard: str) -> str | None:
        try:
            data, _ = self.zk.get(self._path(shard, "handover"))
        except NoNodeError:
            return None
        target = json.loads(data).get("to")
        return str(target) if target else None

    def clear_handover(self, shard: str) -> None:
        with contextlib.suppress(NoNodeError):
            self.zk.delete(self._path(shard, "handover"))

    # -- replica positions ----------------------------------------------------------------------

    def publish_position(self, shard: str, *, kind: str, epoch: int, seq: int) -> None:
        """This region's replica position, as an ephemeral node: it disappears with the session,
        so the members listed are the live ones."""
        path = self._path(shard, "members", self.region)
        value = json.dumps(
            {"region": self.region, "kind": kind, "epoch": epoch, "seq": seq}
        ).encode()
        try:
            self.zk.set(path, value)
        except NoNodeError:
            try:
                self.zk.create(path, value, ephemeral=True, makepath=True)
            except NodeExistsError:
                self.zk.set(path, value)

    def members(self, shard: str) -> list[dict[str, Any]]:
        """The live replicas' published positions (each a dict as published)."""
        base = self._path(shard, "members")
        try:
            names = self.zk.get_children(base)
        except NoNodeError:
            return []
        found: list[dict[str, Any]] = []
        # every read sent at once, then the answers taken: one round trip, not one per member
        pending = [self.zk.get_async(f"{base}/{name}") for name in sorted(names)]
        for reply in pending:
            try:
                data, _ = reply.get(timeout=self.session_timeout_s * 2)
                raw = json.loads(data)
            except (NoNodeError, ValueError):
                continue  # gone meanwhile, or not ours to read
            if isinstance(raw, dict):
                found.append(raw)
        return found
