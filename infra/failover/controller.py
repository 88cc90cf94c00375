"""One shard in one region: leader or standby, and the safe moves between them.

The source design's FailoverManager: every `health_interval` a standby checks the leader; after
`failover_after` of failures AND with the leader's ZooKeeper node gone (its session expired,
so it has stopped accepting by its lease), it takes the shard's lock, drains what it can,
refuses if it lags more than `max_lag`, then promotes: a new epoch, its relay, commands.
A deposed leader fences itself at once, then rejoins: it quarantines what it wrote after the
fork point and follows the new leader. If no leader comes and no region took the shard after
its own epoch (the standby is down too), it takes the shard back itself (`retake`).

This module is the state machine: it gathers facts and acts. Its rules are pure functions in
infra/failover/rules.py, the leader's database probe is infra/failover/probe.py. It gets what
it uses in a ControllerContext (coordination, region, peers, timings, callbacks, alert sink,
clock), never the node: tests/unit/test_controller_transitions.py drives it against an
in-memory coordination. Nothing here blocks its event loop: coordination calls run in threads,
reads of the hot state on the writer thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import httpx

from application.replication.quorum import ReplicaKind, confirmations_needed
from application.replication.sync_gate import SyncGate
from application.shard.app import ShardApp
from application.wal.writer import ShardWriter
from infra.coordination.base import Coordination, LeaderInfo
from infra.failover import quorum_promotion
from infra.failover.probe import StoreProbe
from infra.failover.rules import failover_reason, last_epoch_is, may_promote, record_is_current
from infra.failover.state import FailoverRecord, PromotionError, Role
from infra.replication.peer_link import RecordPush
from infra.settings import FailoverSettings
from projections.replication.relay import Relay
from projections.replication.replicator import Replicator

log = logging.getLogger("exchange_dr.failover")

T = TypeVar("T")

# a follower's re-read of the epoch history on the writer thread waits at most this long, and
# after a failed one the next waits this long (records judged on the known history meanwhile)
HISTORY_READ_WAIT_S = 0.5
HISTORY_RETRY_S = 2.0

__all__ = ["ControllerContext", "FailoverRecord", "Role", "ShardController"]


class AlertSink(Protocol):
    def send(
        self, severity: str, name: str, message: str, labels: Mapping[str, Any] | None = None
    ) -> None: ...


@dataclass(frozen=True)
class ControllerContext:
    """Everything a controller uses outside its shard's own parts."""

    coordination: Coordination
    region: str
    peers: tuple[str, ...]  # the other regions, preferred first
    failover: FailoverSettings
    alerts: AlertSink
    open_store: Callable[[str], ShardApp]  # a region's view of the shard (gap filling)
    on_promoted: Callable[[ShardController], None] = lambda _: None
    on_demoted: Callable[[ShardController], None] = lambda _: None
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    # every replica of the shard in the configured order (that order breaks promotion ties),
    # with its kind; empty: every region is a full replica
    replicas: tuple[tuple[str, ReplicaKind], ...] = ()

    def kind_of(self, region: str) -> ReplicaKind:
        return dict(self.replicas).get(region, ReplicaKind.FULL)


@dataclass
class ShardController:
    """The role of one shard in this region, and every transition of it."""

    ctx: ControllerContext
    shard_id: str
    writer: ShardWriter
    replicator: Replicator
    gate: SyncGate
    relay: Relay
    role: Role = Role.STARTING
    failing_since: float | None = None
    relay_task: asyncio.Task[None] | None = None
    pushes: list[RecordPush] = field(default_factory=list)  # the peer link to each standby
    history: list[tuple[int, int]] = field(default_factory=list)
    failovers: list[FailoverRecord] = field(default_factory=list)
    leader_views: dict[str, ShardApp] = field(default_factory=dict)
    leader_region: str | None = None
    last_rto_s: float | None = None
    rejoin_task: asyncio.Task[None] | None = None
    store_failing_since: float | None = None
    store_probe: StoreProbe = field(default_factory=lambda: StoreProbe(""))
    failed_promotions: int = 0  # fault injection (drills): fail right after take_leadership
    # a follower's store agrees with the epoch history (its rejoin check is done) and has
    # taken only the leader's records since: what it holds is on two replicas at least
    rejoin_checked: bool = False
    followed_epoch: int = 0  # the epoch of the leader node this region last followed
    _history_read_for: int = 0  # the newest epoch a record made this follower re-read history for
    _history_retry_at: float = 0.0  # monotonic: no re-read before (the last one failed)

    @property
    def app(self) -> ShardApp:
        return self.writer.app

    @property
    def coord(self) -> Coordination:
        return self.ctx.coordination

    @property
    def region(self) -> str:
        return self.ctx.region

    @property
    def promotable_peers(self) -> list[str]:
        """The other regions that may lead this shard (witnesses never do), preferred first."""
        return [p for p in self.ctx.peers if self.ctx.kind_of(p) is ReplicaKind.FULL]

    def accepting(self) -> bool:
        return self.role is Role.LEADER and self.coord.is_leader(self.shard_id)

    def confirmed_seq(self) -> int | None:
        """The highest seq of this shard that no failover can take back, as this node knows
        it: leader: the seq a majority of replicas holds (gate.standby_seq; app.seq when the
        shard has no followers); a follower whose rejoin check is done: its applied seq (what
        it stores is on two replicas at least); otherwise None (promoting, fenced, deposed and
        not rejoined yet: its tail may be set aside)."""
        if self.role.leads:
            if confirmations_needed(self.gate.replicas) == 0:
                return self.app.seq
            return self.gate.standby_seq
        if self.role is Role.STANDBY and self.rejoin_checked:
            return self.app.seq
        return None

    def confirmation_epoch(self) -> int:
        """The term a follower's confirmations are of: once its rejoin check is done, the epoch
        of the leader it follows (its store agrees with that leader's history, and the leader
        still checks each confirmed seq against its own record's checksum); before, the epoch
        of its newest record. A leader writes nothing when it is promoted: signed with the
        newest record's epoch, a follower holding every record would confirm only an older
        term, which the leader never counts, until a command came (a switchover straight back
        was refused after its wait)."""
        if self.role is Role.STANDBY and self.rejoin_checked:
            return max(self.app.epoch, self.followed_epoch)
        return self.app.epoch

    async def _on_writer(self, read: Callable[[ShardApp], T]) -> T:
        """Run `read` on the writer thread, between batches and replicated runs."""
        return await asyncio.wrap_future(self.writer.query(read))

    # -- following ------------------------------------------------------------------------

    async def follow(self, leader: LeaderInfo | None) -> None:
        """Point gap-filling at the leader's store (its region's database)."""
        if leader is None or leader.region == self.region:
            return
        self.leader_region = leader.region
        new_term = leader.epoch != self.followed_epoch
        self.followed_epoch = leader.epoch
        view = self.leader_views.get(leader.region)
        if view is None:
            view = await asyncio.to_thread(self.ctx.open_store, leader.region)
            self.leader_views[leader.region] = view
        self.replicator.primary = view.store
        self.history = await asyncio.to_thread(self.coord.epochs, self.shard_id)
        if self.role is Role.STANDBY and (new_term or not self.rejoin_checked):
            # a new term: what this standby holds beyond its start (the deposed leader's last
            # pushes, applied before the history named the new owner of those seqs) is not the
            # new leader's; checked again, and set aside if it diverges, before it counts
            self.rejoin_checked = False
            await self._check_unrejoined()

    async def _check_unrejoined(self) -> None:
        """A standby that took its role without a rejoin (no leader when the node started)
        counts as rejoined once its store agrees with the epoch history: nothing of it can
        be set aside. A store that disagrees (a term of its own that a later epoch replaced)
        rejoins now, as a deposed leader does: the tail after the fork is quarantined with an
        alert, the state recovered, and replication goes on from the fork. Else the replicator
        would drop the leader's records at seqs it holds, and the store stay forked."""
        history = self.history
        fork = await self._on_writer(
            lambda app: app.store.first_divergent_seq(self.shard_id, history)
        )
        if fork is None:
            self.rejoin_checked = self.role is Role.STANDBY
            return
        log.error(
            "standby shard=%s region=%s diverges from the epoch history at seq=%s without a "
            "rejoin: rejoining now",
            self.shard_id,
            self.region,
            fork,
        )
        self.replicator.frozen = True  # nothing applied on the forked tail meanwhile
        try:
            await asyncio.wrap_future(self.writer.query(lambda _: self.rejoin()))
        finally:
            self.replicator.frozen = False
        if self.role is Role.STANDBY:
            self.replicator.stats.last_seen_seq = self.app.seq
            self.rejoin_checked = True

    def record_is_current(self, seq: int, epoch: int) -> bool:
        """A replicated record counts only if the epoch history says its epoch owns its seq.

        A (verified) record of an epoch newer than any in the history read so far is judged on
        the history read again from ZooKeeper: a new leader pushes its first records at once,
        and they may arrive before this follower's leader watch has re-read the history.
        Dropped as stale, they would reach it (and be confirmed) only by the topic's slower
        path, holding back the new term's first acknowledgements. Read once per such epoch
        (called on the writer thread, where the records are applied), waiting at most
        HISTORY_READ_WAIT_S: a ZooKeeper that does not answer must not stall every commit
        behind it. Unread, the record is judged on what is known (stale: it comes again), and
        the read is tried again HISTORY_RETRY_S later, not for every record meanwhile."""
        known = self.history[-1][0] if self.history else 0
        if (
            epoch > known
            and epoch > self._history_read_for
            and time.monotonic() >= self._history_retry_at
        ):
            self._history_read_for = epoch
            try:
                self.history = self._epochs_within(HISTORY_READ_WAIT_S)
            except Exception as exc:  # ZooKeeper away or slow: judged on what is known
                self._history_read_for = known  # this epoch is tried again, after a pause
                self._history_retry_at = time.monotonic() + HISTORY_RETRY_S
                log.warning(
                    "epoch history of shard=%s not read for epoch=%s seq=%s: %r",
                    self.shard_id,
                    epoch,
                    seq,
                    exc,
                )
        return record_is_current(self.history, seq, epoch)

    def _epochs_within(self, timeout_s: float) -> list[tuple[int, int]]:
        """The epoch history, read on a thread of its own: TimeoutError after `timeout_s`
        (the read goes on and its answer is dropped)."""
        answer: Future[list[tuple[int, int]]] = Future()

        def read() -> None:
            try:
                answer.set_result(list(self.coord.epochs(self.shard_id)))
            except Exception as exc:
                answer.set_exception(exc)

        threading.Thread(target=read, name=f"epochs-{self.shard_id}", daemon=True).start()
        return answer.result(timeout=timeout_s)

    def rejoin(self) -> int:
        """Set aside what this region wrote after the fork point, then rebuild (writer thread).

        Returns how many records were quarantined (0 when the history agrees)."""
        self.history = self.coord.epochs(self.shard_id)
        fork = self.app.store.first_divergent_seq(self.shard_id, self.history)
        if fork is None:
            return 0
        moved = self.app.store.quarantine_from(
            self.shard_id, fork, f"diverged from the epoch history at seq {fork}"
        )
        self.ctx.alerts.send(
            "critical",
            "WALQuarantined",
            f"shard {self.shard_id}: {moved} record(s) from seq {fork} written after the fork "
            "point were set aside in wal_quarantine (never merged); following the new leader",
            {
                "shard": self.shard_id,
                "seq": fork,
                "records": moved,
                "region": self.region,
            },
        )
        self.app.needs_recovery = True
        self.app.recover()
        return moved

    # -- promotion ------------------------------------------------------------------------

    async def try_failover(self, reason: str, *, planned: bool = False) -> bool:
        """Take the shard if its leader is gone and this standby is safe to promote."""
        coord = self.coord
        if self.app.log_only:
            return False  # a witness keeps the WAL, not the state: it never leads
        lock = await asyncio.to_thread(coord.lock, self.shard_id, 1.0)
        if lock is None:
            log.warning("failover of shard=%s already running elsewhere", self.shard_id)
            return False
        log.warning("failover lock taken shard=%s region=%s", self.shard_id, self.region)
        try:
            if self.role is not Role.STANDBY:
                return False  # deposed or promoted meanwhile: not ours to decide now
            current = await asyncio.to_thread(coord.refresh_leader, self.shard_id)
            if current is not None:
                return False  # somebody leads (and holds a live session)
            old_leader = self.leader_region
            self.role = Role.PROMOTING  # the intake stops queueing records
            for push in self.pushes:  # handshakes now, not in the new term's first acknowledgement
                push.warm_up()
            before_catch_up = await self._on_writer(lambda app: app.seq)
            try:
                # drain the old leader's store; the freeze below waits behind it on the writer
                await self._on_writer(lambda _: self.replicator.catch_up())
            except Exception as exc:  # its store is gone too: promote with what is here
                log.warning("catch-up before promotion of shard=%s failed: %s", self.shard_id, exc)
            unhealthy_for_s = (
                0.0 if self.failing_since is None else self.ctx.clock() - self.failing_since
            )
            if not await quorum_promotion.ready_to_promote(
                self, unhealthy_for_s=unhealthy_for_s, planned=planned
            ):
                self.role = Role.STANDBY
                return False  # another replica is the one to promote, or a survivor is unread
            applied = await self._on_writer(self._freeze)
            log.warning(
                "promotion of shard=%s region=%s from seq %s (%s records caught up from %s's "
                "store; lacking %s)",
                self.shard_id,
                self.region,
                applied,
                applied - before_catch_up,
                old_leader,
                self.replicator.lag_records(),
            )
            lag_s = self.replicator.lag_seconds()
            lag_records = self.replicator.lag_records()
            max_lag_s = self.ctx.failover.max_lag_s
            if not may_promote(lag_s, max_lag_s):
                self._thaw(Role.STANDBY)
                self.ctx.alerts.send(
                    "critical",
                    "FailoverRefused",
                    f"cannot fail over shard {self.shard_id}: standby "
                    f"{self.region} lags {lag_s:.3f}s ({lag_records} records), more "
                    f"than {max_lag_s:.3f}s; the shard stays down rather "
                    "than lose data",
                    {"shard": self.shard_id, "lag_seconds": lag_s, "lag_records": lag_records},
                )
                return False
            await self._promote(reason, applied, old_leader=old_leader, planned=planned)
            return True
        except Exception as exc:
            log.error("failover of shard=%s failed: %s", self.shard_id, exc)
            if self.role is Role.PROMOTING:
                self._thaw(Role.STANDBY)
            return False
        finally:
            await asyncio.to_thread(lock.release)

    def _freeze(self, app: ShardApp) -> int:
        """On the writer thread: no more replicated records; the seq the new epoch follows."""
        self.replicator.frozen = True
        return app.seq

    def _thaw(self, role: Role) -> None:
        self.replicator.frozen = False
        self.role = role

    async def _promote(
        self,
        reason: str,
        applied: int,
        *,
        old_leader: str | None,
        planned: bool,
        own_records: bool = False,
    ) -> None:
        """Take a new epoch after `applied`, the seq read on the writer thread with intake and
        replication frozen (the caller holds the shard's lock and saw no leader), then lead.

        Any step after take_leadership that fails gives the shard back (resign, the role it
        had before), so the next round finds it leaderless instead of held by nobody who
        writes. A standby's records came from the topic already; with `own_records` (a
        retake) the relay goes on from its own tracked position instead, so what this region
        wrote before it was fenced is published too."""
        coord = self.coord
        before = self.role if self.role is not Role.PROMOTING else Role.STANDBY
        self.role = Role.PROMOTING
        previous_epoch = self.app.epoch
        epoch = await asyncio.to_thread(
            coord.take_leadership, self.shard_id, applied_seq=applied, min_epoch=previous_epoch
        )
        try:
            if self.failed_promotions > 0:
                self.failed_promotions -= 1
                raise PromotionError("injected failure after take_leadership")
            seq = await self._on_writer(lambda app: self._adopt(app, epoch, applied))
            history = await asyncio.to_thread(coord.epochs, self.shard_id)
            start = dict(history).get(epoch)
            if start != seq + 1:
                raise PromotionError(
                    f"epoch {epoch} starts at seq {start} in the history, but the first seq "
                    f"it writes is {seq + 1}"
                )
            if not own_records:
                self.relay.position = seq
                await asyncio.to_thread(self.app.store.save_relay_position, self.shard_id, seq)
            if self.role is not Role.PROMOTING:
                raise PromotionError(f"deposed while taking epoch {epoch}")
            if not own_records:
                # a standby's records were stored by the old leader too: a majority of two
                # or three holds them
                self.gate.standby_seq = seq
            # a retake's own tail was confirmed by nobody: a retried command of it waits for a
            # follower's confirmation like a new one (else it would be acknowledged on one copy)
            self.gate.reset_for_new_term()
            self.start_relay()
            self.history = history
            self.rejoin_checked = False  # it writes records of its own from here on
            self.role = Role.LEADER
            self.replicator.frozen = False
        except BaseException as exc:
            await self._give_back(epoch, previous_epoch, before, exc)
            raise
        if self.failing_since is not None:
            self.last_rto_s = self.ctx.clock() - self.failing_since
        self.failovers.append(
            FailoverRecord(
                self.shard_id,
                old_leader or "?",
                self.region,
                epoch,
                seq,
                self.ctx.wall_clock(),
                reason,
            )
        )
        self.leader_region = self.region
        self.ctx.alerts.send(
            "critical" if not planned else "warning",
            "FailoverCompleted" if not planned else "SwitchoverCompleted",
            f"shard {self.shard_id}: {self.region} is the new primary at epoch "
            f"{epoch} from seq {seq + 1} ({reason})",
            {
                "shard": self.shard_id,
                "epoch": epoch,
                "seq": seq,
                "from": old_leader,
                "to": self.region,
            },
        )
        self.ctx.on_promoted(self)

    def _adopt(self, app: ShardApp, epoch: int, applied: int) -> int:
        """On the writer thread: the new epoch, if nothing landed since `applied` was read."""
        if app.seq != applied:
            raise PromotionError(
                f"shard {self.shard_id} moved from seq {applied} to {app.seq} during promotion"
            )
        app.epoch = epoch
        return app.seq

    async def _give_back(
        self, epoch: int, previous_epoch: int, role: Role, why: BaseException
    ) -> None:
        """Undo a promotion that took the leader node but could not finish."""
        log.critical(
            "promotion of shard=%s region=%s to epoch %s failed after taking the leader node: "
            "%s; resigning",
            self.shard_id,
            self.region,
            epoch,
            why,
        )
        self.stop_relay()
        self.gate.fail_all()
        try:
            await asyncio.to_thread(self.coord.resign, self.shard_id)
        except Exception as exc:  # the session's expiry removes the node instead
            log.error("resign of shard=%s failed: %s", self.shard_id, exc)

        def restore(app: ShardApp) -> None:
            if app.epoch == epoch:
                app.epoch = previous_epoch

        with contextlib.suppress(Exception):
            await self._on_writer(restore)
        if self.role is Role.PROMOTING:
            self._thaw(role)
        # else deposed meanwhile: its rejoin owns the role (and thaws when it follows)

    def start_relay(self) -> None:
        """Publish from here on: the relay to the topic, the peer link to each standby."""
        self.relay._stopping = False
        self.relay_task = asyncio.ensure_future(self.relay.run())
        for push in self.pushes:
            push.start()

    def stop_relay(self) -> None:
        self.relay.stop()
        for push in self.pushes:
            push.stop()

    # -- losing the shard -----------------------------------------------------------------

    async def deposed(self, why: str) -> None:
        """Stop at once; then rejoin as a standby of whoever leads now."""
        if self.role not in (Role.LEADER, Role.HANDING_OVER, Role.PROMOTING):
            return
        self._fence(why)
        await self.become_standby(may_retake=True)

    def _fence(self, why: str) -> None:
        """Accept nothing more: no relay, every waiting acknowledgement failed."""
        self.role = Role.FENCED
        self.rejoin_checked = False
        self.stop_relay()
        self.gate.fail_all()
        log.critical("fenced shard=%s region=%s: %s", self.shard_id, self.region, why)

    async def become_standby(self, *, may_retake: bool = False) -> None:
        """Wait for a leader elsewhere, set aside divergent records, follow it.

        Retries until it succeeds: ZooKeeper or the stores may be coming back themselves.
        `may_retake` (a deposed leader): if nobody leads for `failover_after` and nobody led
        after this region's own epoch, it takes the shard again (`retake`) instead of waiting
        for a leader that may never come (the other region down as well)."""
        leaderless_since: float | None = None
        while True:
            try:
                leader = await asyncio.to_thread(self.coord.refresh_leader, self.shard_id)
                if leader is None and may_retake:
                    now = self.ctx.clock()
                    if leaderless_since is None:
                        leaderless_since = now
                    elif now - leaderless_since >= self.ctx.failover.failover_after_s:
                        if await self.retake(now - leaderless_since):
                            return
                        leaderless_since = now  # not now: look again a period later
                elif leader is not None:
                    leaderless_since = None
                if leader is None or leader.region == self.region:
                    await asyncio.sleep(0.2)
                    continue
                await self.follow(leader)
                await asyncio.wrap_future(self.writer.query(lambda _: self.rejoin()))
                break
            except Exception as exc:
                log.warning("rejoin of shard=%s not possible yet: %s", self.shard_id, exc)
                await asyncio.sleep(0.2)
        self.replicator.stats.last_seen_seq = self.app.seq
        self.replicator.frozen = False
        self.rejoin_checked = True
        self.role = Role.STANDBY
        self.failing_since = None
        self.ctx.on_demoted(self)
        log.warning(
            "standby shard=%s region=%s following %s from seq %s",
            self.shard_id,
            self.region,
            leader.region,
            self.app.seq,
        )

    async def retake(self, leaderless_s: float) -> bool:
        """A deposed leader takes its shard back when that loses nothing (Patroni lets the
        member with the newest WAL re-acquire the leader key): nobody leads, and the epoch
        history ends with this region's own epoch, so no other region wrote after it and this
        store holds every record ever acknowledged. Batches prepared but not committed before
        the fence are dropped by rebuilding the hot state from the store first."""
        coord = self.coord
        lock = await asyncio.to_thread(coord.lock, self.shard_id, 1.0)
        if lock is None:
            return False
        try:
            if await asyncio.to_thread(coord.refresh_leader, self.shard_id) is not None:
                return False
            history = await asyncio.to_thread(coord.epochs, self.shard_id)
            if not last_epoch_is(history, self.app.epoch):
                log.warning(
                    "shard=%s region=%s will not retake: epoch %s is not the last in %s",
                    self.shard_id,
                    self.region,
                    self.app.epoch,
                    history,
                )
                return False

            def rebuild(app: ShardApp) -> int:
                app.needs_recovery = True
                app.recover()
                return self._freeze(app)

            applied = await self._on_writer(rebuild)
            await self._promote(
                f"deposed leader retook the shard: nobody led for {leaderless_s:.2f}s and no "
                f"region wrote after its epoch {self.app.epoch}",
                applied,
                old_leader=self.region,
                planned=False,
                own_records=True,
            )
            return True
        except Exception as exc:
            log.error("retake of shard=%s failed: %s", self.shard_id, exc)
            if self.role is Role.PROMOTING:
                self._thaw(Role.FENCED)
            return False
        finally:
            await asyncio.to_thread(lock.release)

    # -- the leader's own store (Patroni: no database, no leader key) ------------------------

    async def check_store(self) -> None:
        """On the leader: if its region's database stops answering for `store_loss_after`,
        resign so that the standby promotes, instead of holding a shard it cannot write."""
        if self.role is not Role.LEADER:
            self.store_failing_since = None
            return
        try:
            await self.store_probe.check()
        except Exception as exc:
            now = self.ctx.clock()
            if self.store_failing_since is None:
                self.store_failing_since = now
                log.error(
                    "store of shard=%s region=%s not answering: %s",
                    self.shard_id,
                    self.region,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                )
            if now - self.store_failing_since >= self.ctx.failover.store_loss_after_s:
                await self.resign_store_lost(now - self.store_failing_since)
            return
        self.store_failing_since = None

    async def resign_store_lost(self, for_s: float) -> None:
        """Fence at once, hand the shard to a peer, then wait (as a standby) for the store."""
        if self.role is not Role.LEADER:
            return
        self._fence(f"its database did not answer for {for_s:.2f}s")
        peers = self.promotable_peers
        try:
            if peers:
                await asyncio.to_thread(self.coord.request_handover, self.shard_id, peers[0])
            await asyncio.to_thread(self.coord.resign, self.shard_id)
        except Exception as exc:  # ZooKeeper gone too: the session expiry resigns for us
            log.error("resign of shard=%s failed: %s", self.shard_id, exc)
        self.ctx.alerts.send(
            "critical",
            "LeaderStoreLost",
            f"shard {self.shard_id}: the database of leader {self.region} did not "
            f"answer for {for_s:.2f}s; it resigned so that "
            f"{peers[0] if peers else 'a standby'} takes over",
            {"shard": self.shard_id, "region": self.region},
        )
        self.store_failing_since = None
        self.rejoin_task = asyncio.ensure_future(self.become_standby())

    # -- the health check -------------------------------------------------------------------

    def _observe(self) -> tuple[LeaderInfo | None, bool]:
        """The cluster as this round sees it (a thread: these may wait on the network)."""
        leader = self.coord.leader(self.shard_id)
        planned = self.coord.handover_target(self.shard_id) == self.region
        return leader, planned

    async def check(self, client: httpx.AsyncClient) -> None:
        """One health round of a standby (the design's FailoverManager.checkHealth); a witness
        (log only) never promotes, so it has nothing to check."""
        if self.role is not Role.STANDBY or self.app.log_only:
            return
        settings = self.ctx.failover
        leader, planned = await asyncio.to_thread(self._observe)
        healthy = False
        if leader is not None:
            try:
                response = await client.get(
                    leader.url + "/health", timeout=settings.health_interval_s
                )
                healthy = response.status_code == 200
            except httpx.HTTPError:
                healthy = False
        if healthy and not planned:
            self.failing_since = None
            return
        now = self.ctx.clock()
        if self.failing_since is None:
            self.failing_since = now
            log.warning(
                "leader of shard=%s unhealthy (%s)",
                self.shard_id,
                "no leader node" if leader is None else leader.url,
            )
        reason = failover_reason(
            leader_node_exists=leader is not None,
            planned=planned,
            unhealthy_for_s=now - self.failing_since,
            failover_after_s=settings.failover_after_s,
        )
        if reason is None:
            return
        if await self.try_failover(reason, planned=planned) and planned:
            await asyncio.to_thread(self.coord.clear_handover, self.shard_id)

    # -- planned switchover (on the leader) -------------------------------------------------

    async def hand_over(self, to_region: str, timeout_s: float = 5.0) -> dict[str, Any]:
        """Drain, wait for `to_region` to hold every record, resign; it promotes at once."""
        if self.role is not Role.LEADER:
            raise ValueError(f"this region does not lead shard {self.shard_id}")
        if to_region == self.region:
            raise ValueError(f"{to_region} already leads shard {self.shard_id}")
        if to_region not in self.ctx.peers:
            raise ValueError(
                f"unknown region {to_region!r}; configured: {', '.join(self.ctx.peers)}"
            )
        if to_region not in self.promotable_peers:
            raise ValueError(f"{to_region} is a witness: it keeps the WAL, it never leads")
        started = self.ctx.clock()
        self.role = Role.HANDING_OVER  # new commands: not_leader from here on
        seq = await self._on_writer(lambda app: app.seq)
        deadline = started + timeout_s
        while (
            self.role is Role.HANDING_OVER
            and self.gate.stored_on(to_region) < seq
            and self.ctx.clock() < deadline
        ):
            await asyncio.sleep(0.005)
        if self.role is not Role.HANDING_OVER:
            # deposed meanwhile: its rejoin owns the shard's role now
            raise TimeoutError(f"deposed during the hand-over of shard {self.shard_id}")
        if self.gate.stored_on(to_region) < seq:
            self.role = Role.LEADER
            raise TimeoutError(
                f"{to_region} did not confirm seq {seq} within {timeout_s}s; nothing changed"
            )
        await asyncio.to_thread(self.coord.request_handover, self.shard_id, to_region)
        self.stop_relay()
        await asyncio.to_thread(self.coord.resign, self.shard_id)
        self.role = Role.FENCED
        self.rejoin_task = asyncio.ensure_future(self.become_standby())
        return {
            "shard": self.shard_id,
            "from_region": self.region,
            "to_region": to_region,
            "seq": seq,
            "drained_in_s": round(self.ctx.clock() - started, 3),
        }
