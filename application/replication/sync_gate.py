"""Sync replication: hold a command's acknowledgement until a majority of the shard's replicas
(the leader included) has stored its record; with two replicas, that is the one standby."""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from application.replication.quorum import confirmations_needed, majority, quorum_seq

log = logging.getLogger("exchange_dr.replication")


class ReplicationMode(StrEnum):
    SYNC = "sync"
    ASYNC = "async"


class SyncPolicy(StrEnum):
    """What sync mode does when no majority of replicas confirms within the timeout."""

    STRICT = "strict"  # fail the commands (retryable): nothing is acknowledged without a majority
    DEGRADE = "degrade"  # switch to async, logged as critical: availability over RPO = 0


class ReplicationTimeoutError(Exception):
    """The standby did not confirm in time: stored on the primary, NOT acknowledged."""


@dataclass(order=True)
class _Waiter:
    seq: int
    deadline: float = field(compare=False)
    resolve: Callable[[bool], None] = field(compare=False)


@dataclass(order=True)
class _Reader:
    """A read waiting until the state it shows (up to `seq`) is on a majority."""

    seq: int
    ticket: int
    resolve: Callable[[bool], None] = field(compare=False)


class SyncGate:
    """Acknowledgement gate of one shard (PostgreSQL's synchronous_commit = remote_apply, with
    Patroni's quorum commit: ANY k of the followers).

    The writer calls `release(seq, resolve)` after a batch ending at `seq` committed locally;
    `resolve(True)` runs once a majority of the shard's `replicas` holds seq (the leader's own
    copy and `majority(replicas) - 1` follower confirmations; at once in async mode),
    `resolve(False)` when the timeout passes under the strict policy. `standby_seq` is the seq
    safe on a majority; `confirmed` is what each follower confirmed. Under the degrade policy a
    timeout switches the shard to async, logs it as critical, passes the message to
    `on_degrade` if one is set, and lets every waiter through.

    Reads wait apart from acknowledgements (`when_confirmed`, Raft's ReadIndex): a read of the
    state up to `seq` is answered once a majority holds `seq`. Their bound is the reader's own;
    they never expire in `tick`, never degrade the gate nor raise the no-majority alert: a read
    refused or labelled unconfirmed loses nothing, an acknowledgement does.
    """

    def __init__(
        self,
        shard_id: str,
        *,
        mode: ReplicationMode = ReplicationMode.SYNC,
        policy: SyncPolicy = SyncPolicy.STRICT,
        timeout_s: float = 1.0,
        replicas: int = 2,
        on_degrade: Callable[[str, str], None] | None = None,
        on_no_majority: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.shard_id = shard_id
        self.configured_mode = mode
        self.mode = mode
        self.policy = policy
        self.timeout_s = timeout_s
        majority(replicas)  # refuses a replica count below one
        self.replicas = replicas
        self.confirmed: dict[str, int] = {}  # follower region -> highest seq it confirmed
        self.standby_seq = 0  # the highest seq a majority of the replicas holds
        self.standby_seen_at = 0.0
        self.degraded = False
        # highest seq acknowledged without the standby since the gate degraded: the gate is
        # restored only once the standby confirmed it, not as soon as nothing waits
        self.degraded_acked_seq = 0
        self._on_degrade = on_degrade
        # strict: told once per outage that commands are refused for want of a majority
        self._on_no_majority = on_no_majority
        self.no_majority = False
        self._clock = clock
        self._waiters: list[_Waiter] = []
        self._readers: list[_Reader] = []
        self._tickets = 0
        self._lock = threading.Lock()

    def release(self, seq: int, resolve: Callable[[bool], None]) -> None:
        with self._lock:
            if self.confirms(seq):  # a majority holds it (one replica: the leader's own copy)
                ready = True
            elif self.mode is ReplicationMode.ASYNC:
                ready = True
                if self.degraded:
                    self.degraded_acked_seq = max(self.degraded_acked_seq, seq)
            else:
                bisect.insort(self._waiters, _Waiter(seq, self._clock() + self.timeout_s, resolve))
                ready = False
        if ready:
            resolve(True)

    def confirms(self, seq: int) -> bool:
        """Whether a majority of the replicas holds `seq` now (no followers: the leader's
        copy is all there is)."""
        return seq <= self.standby_seq or confirmations_needed(self.replicas) == 0

    def when_confirmed(self, seq: int, resolve: Callable[[bool], None]) -> Callable[[], None]:
        """Call `resolve(True)` once a majority of the replicas holds `seq` (at once if it
        does already, or if the shard has no followers: what the leader committed is all there
        is), `resolve(False)` if it cannot be confirmed: at once in async mode (configured or
        degraded: nobody waits for the followers), and on `fail_all` or a new term. Returns
        the cancel of the wait (the reader's deadline passed); `resolve` runs once at most."""
        with self._lock:
            if self.confirms(seq):
                answer: bool | None = True
            elif self.mode is ReplicationMode.ASYNC:
                answer = False
            else:
                self._tickets += 1
                reader = _Reader(seq, self._tickets, resolve)
                bisect.insort(self._readers, reader)
                answer = None
        if answer is not None:
            resolve(answer)
            return _nothing
        return lambda: self._forget(reader)

    def _forget(self, reader: _Reader) -> None:
        with self._lock:
            at = bisect.bisect_left(self._readers, reader)
            if at < len(self._readers) and self._readers[at] is reader:
                del self._readers[at]

    def _confirm_readers(self, upto: int) -> list[_Reader]:
        """(lock held) The readers `upto` confirms, taken off the list."""
        cut = bisect.bisect_right(self._readers, upto, key=lambda r: r.seq)
        ready, self._readers = self._readers[:cut], self._readers[cut:]
        return ready

    def _drop_readers(self) -> list[_Reader]:
        """(lock held) Every waiting reader, taken off the list: none can be confirmed."""
        dropped, self._readers = self._readers, []
        return dropped

    def standby_stored(self, seq: int, region: str = "") -> None:
        """Follower `region` confirmed every record up to `seq` durably stored; waiters are
        released as far as a majority of the replicas now holds."""
        with self._lock:
            self.standby_seen_at = self._clock()
            if seq > self.confirmed.get(region, 0):
                self.confirmed[region] = seq
            # a follower only ever holds records the leader committed: no cap by the leader
            safe = quorum_seq(self.confirmed, self.replicas, max(self.confirmed.values()))
            if safe <= self.standby_seq:
                return
            seq = self.standby_seq = safe
            if self.no_majority:
                self.no_majority = False
                log.warning(
                    "majority restored shard=%s seq=%s replicas=%s",
                    self.shard_id,
                    seq,
                    self.replicas,
                )
            cut = 0
            while cut < len(self._waiters) and self._waiters[cut].seq <= seq:
                cut += 1
            ready, self._waiters = self._waiters[:cut], self._waiters[cut:]
            readers = self._confirm_readers(seq)
            if self.degraded and not self._waiters and seq >= self.degraded_acked_seq:
                # the standby holds everything acknowledged without it: sync guarantees hold again
                self.degraded = False
                self.mode = self.configured_mode
                log.warning(
                    "replication restored shard=%s seq=%s mode=%s", self.shard_id, seq, self.mode
                )
        for waiter in ready:
            waiter.resolve(True)
        for reader in readers:
            reader.resolve(True)

    def tick(self) -> None:
        """Expire waiters past their deadline (call this every few milliseconds)."""
        now = self._clock()
        expired: list[_Waiter] = []
        degraded_now = refused_now = False
        with self._lock:
            if not self._waiters or min(w.deadline for w in self._waiters) > now:
                return
            if self.policy is SyncPolicy.DEGRADE:
                expired, self._waiters = self._waiters, []
                # acknowledged below without the standby
                self.degraded_acked_seq = max(self.degraded_acked_seq, expired[-1].seq)
                if not self.degraded:
                    self.degraded = degraded_now = True
                    self.mode = ReplicationMode.ASYNC
            else:
                expired = [w for w in self._waiters if w.deadline <= now]
                self._waiters = [w for w in self._waiters if w.deadline > now]
                if not self.no_majority:
                    self.no_majority = refused_now = True
        if degraded_now:
            message = (
                f"shard {self.shard_id}: no confirmation from a majority of {self.replicas} "
                f"replicas within {self.timeout_s:.3f}s; replication degraded to ASYNC "
                "(RPO > 0 until the standby catches up)"
            )
            log.critical(message)
            if self._on_degrade is not None:
                self._on_degrade(self.shard_id, message)
        if refused_now:
            message = (
                f"shard {self.shard_id}: no majority of its {self.replicas} replicas confirmed "
                f"within {self.timeout_s:.3f}s; commands are refused (strict) until one does"
            )
            log.critical(message)
            if self._on_no_majority is not None:
                self._on_no_majority(self.shard_id, message)
        ok = self.policy is SyncPolicy.DEGRADE
        for waiter in expired:
            waiter.resolve(ok)

    def reset_for_new_term(self) -> None:
        """A promotion: the old peer is gone. Under degrade, run async until a standby confirms
        (logged as critical, and passed to `on_degrade`); under strict, wait for one as always."""
        with self._lock:
            self.standby_seen_at = 0.0
            self.degraded_acked_seq = 0  # a new window: what this term acknowledges counts
            self.confirmed = {}  # confirmations of the old term say nothing about the new one
            readers = self._drop_readers()
            if self.policy is SyncPolicy.DEGRADE and self.configured_mode is ReplicationMode.SYNC:
                self.degraded = True
                self.mode = ReplicationMode.ASYNC
        for reader in readers:
            reader.resolve(False)
        if self.degraded:
            message = (
                f"shard {self.shard_id}: promoted without a confirmed standby; acknowledging "
                "asynchronously until one catches up"
            )
            log.critical(message)
            if self._on_degrade is not None:
                self._on_degrade(self.shard_id, message)

    def fail_all(self) -> None:
        """Resolve every waiter as not acknowledged, and every read as not confirmed (the
        writer is stopping or deposed)."""
        with self._lock:
            expired, self._waiters = self._waiters, []
            readers = self._drop_readers()
        for waiter in expired:
            waiter.resolve(False)
        for reader in readers:
            reader.resolve(False)

    def stored_on(self, region: str) -> int:
        """The highest seq follower `region` confirmed (0: none yet in this term)."""
        with self._lock:
            return self.confirmed.get(region, 0)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def reading(self) -> int:
        """Reads waiting for a majority to hold what they show."""
        return len(self._readers)


def _nothing() -> None:
    """The cancel of a wait that is over already."""
