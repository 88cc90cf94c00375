"""The sync gate holds acknowledgements until the standby confirms, and times out by policy."""

from __future__ import annotations

from application.replication.sync_gate import ReplicationMode, SyncGate, SyncPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_waits_for_the_standby_then_releases_in_order() -> None:
    clock = Clock()
    gate = SyncGate("s", timeout_s=1.0, clock=clock)
    got: list[tuple[int, bool]] = []
    for seq in (3, 1, 2):
        gate.release(seq, lambda ok, seq=seq: got.append((seq, ok)))
    assert got == [] and gate.waiting == 3
    gate.standby_stored(2)
    assert got == [(1, True), (2, True)]
    gate.release(2, lambda ok: got.append((20, ok)))  # already confirmed: at once
    assert got[-1] == (20, True)
    gate.standby_stored(3)
    assert got[-1] == (3, True) and gate.waiting == 0


def test_strict_policy_refuses_after_the_timeout() -> None:
    clock = Clock()
    gate = SyncGate("s", policy=SyncPolicy.STRICT, timeout_s=0.5, clock=clock)
    got: list[bool] = []
    gate.release(1, got.append)
    clock.now = 0.4
    gate.tick()
    assert got == []
    clock.now = 0.6
    gate.tick()
    assert got == [False] and gate.mode is ReplicationMode.SYNC


def test_degrade_policy_alerts_goes_async_and_recovers() -> None:
    clock = Clock()
    alerts: list[str] = []
    gate = SyncGate(
        "s",
        policy=SyncPolicy.DEGRADE,
        timeout_s=0.5,
        clock=clock,
        on_degrade=lambda shard, message: alerts.append(message),
    )
    got: list[bool] = []
    gate.release(1, got.append)
    clock.now = 1.0
    gate.tick()
    assert got == [True] and gate.degraded and gate.mode is ReplicationMode.ASYNC
    assert len(alerts) == 1 and "degraded to ASYNC" in alerts[0]
    gate.release(5, got.append)  # async now: acknowledged at once
    assert got == [True, True]
    gate.standby_stored(5)
    assert not gate.degraded and gate.mode is ReplicationMode.SYNC


def test_async_mode_never_waits() -> None:
    gate = SyncGate("s", mode=ReplicationMode.ASYNC)
    got: list[bool] = []
    gate.release(10, got.append)
    assert got == [True]


def test_degraded_gate_is_restored_only_once_the_standby_holds_every_async_ack() -> None:
    clock = Clock()
    gate = SyncGate("s", policy=SyncPolicy.DEGRADE, timeout_s=0.5, clock=clock)
    got: list[bool] = []
    gate.release(1, got.append)
    clock.now = 1.0
    gate.tick()  # degraded: seq 1 acknowledged without the standby
    for seq in range(2, 101):
        gate.release(seq, got.append)  # acknowledged asynchronously
    assert got == [True] * 100 and gate.waiting == 0
    gate.standby_stored(3)  # nothing waits, but 4-100 exist only on the leader
    assert gate.degraded and gate.mode is ReplicationMode.ASYNC
    gate.standby_stored(99)
    assert gate.degraded
    gate.standby_stored(100)
    assert not gate.degraded and gate.mode is ReplicationMode.SYNC


def test_promoted_gate_is_restored_only_once_the_standby_holds_every_async_ack() -> None:
    gate = SyncGate("s", policy=SyncPolicy.DEGRADE, timeout_s=0.5, clock=Clock())
    gate.reset_for_new_term()
    got: list[bool] = []
    for seq in range(11, 21):
        gate.release(seq, got.append)
    assert got == [True] * 10
    gate.standby_stored(12)
    assert gate.degraded
    gate.standby_stored(20)
    assert not gate.degraded and gate.mode is ReplicationMode.SYNC


def test_fail_all_refuses_every_waiter() -> None:
    gate = SyncGate("s", timeout_s=1.0, clock=Clock())
    got: list[tuple[int, bool]] = []
    for seq in (1, 2):
        gate.release(seq, lambda ok, seq=seq: got.append((seq, ok)))
    gate.fail_all()
    assert got == [(1, False), (2, False)] and gate.waiting == 0
    gate.standby_stored(2)  # a late confirmation cannot acknowledge them any more
    assert got == [(1, False), (2, False)]


def test_strict_policy_expires_only_the_overdue_waiters() -> None:
    clock = Clock()
    gate = SyncGate("s", policy=SyncPolicy.STRICT, timeout_s=0.5, clock=clock)
    got: list[tuple[int, bool]] = []
    gate.release(1, lambda ok: got.append((1, ok)))
    clock.now = 0.4
    gate.release(2, lambda ok: got.append((2, ok)))  # due at 0.9
    clock.now = 0.6
    gate.tick()
    assert got == [(1, False)] and gate.waiting == 1
    gate.standby_stored(2)
    assert got == [(1, False), (2, True)] and gate.waiting == 0


def test_a_confirmation_releases_only_the_waiters_it_covers() -> None:
    gate = SyncGate("s", timeout_s=1.0, clock=Clock())
    got: list[int] = []
    for seq in (5, 6, 7):
        gate.release(seq, lambda ok, seq=seq: got.append(seq))
    gate.standby_stored(3)  # below every waiter
    assert got == [] and gate.waiting == 3
    gate.standby_stored(5)
    assert got == [5] and gate.waiting == 2
    gate.standby_stored(6)
    assert got == [5, 6] and gate.waiting == 1


def test_a_waiter_expires_exactly_at_its_deadline_and_only_once() -> None:
    clock = Clock()
    gate = SyncGate("s", policy=SyncPolicy.STRICT, timeout_s=0.5, clock=clock)
    got: list[bool] = []
    gate.release(1, got.append)
    clock.now = 0.5
    gate.tick()
    assert got == [False] and gate.waiting == 0
    gate.standby_stored(1)  # too late: it stays refused, never answered twice
    assert got == [False]


def test_a_tick_before_any_deadline_changes_nothing() -> None:
    clock = Clock()
    alerts: list[tuple[str, str]] = []
    gate = SyncGate(
        "s",
        policy=SyncPolicy.DEGRADE,
        timeout_s=0.5,
        clock=clock,
        on_degrade=lambda shard, message: alerts.append((shard, message)),
    )
    gate.tick()  # nothing waits: nothing to do
    got: list[bool] = []
    gate.release(1, got.append)
    clock.now = 0.4
    gate.tick()
    assert got == [] and gate.waiting == 1
    assert not gate.degraded and gate.mode is ReplicationMode.SYNC and alerts == []


def test_strict_policy_never_raises_the_degrade_alert() -> None:
    clock = Clock()
    alerts: list[str] = []
    gate = SyncGate(
        "s",
        policy=SyncPolicy.STRICT,
        timeout_s=0.5,
        clock=clock,
        on_degrade=lambda shard, message: alerts.append(message),
    )
    gate.release(1, lambda ok: None)
    clock.now = 1.0
    gate.tick()
    gate.reset_for_new_term()  # a promotion under strict waits for a standby as always
    assert alerts == [] and not gate.degraded and gate.mode is ReplicationMode.SYNC


def test_a_promotion_of_an_async_shard_is_not_a_degradation() -> None:
    gate = SyncGate("s", mode=ReplicationMode.ASYNC, policy=SyncPolicy.DEGRADE)
    gate.reset_for_new_term()
    assert not gate.degraded and gate.mode is ReplicationMode.ASYNC


def test_a_promotion_under_degrade_alerts_for_its_shard() -> None:
    alerts: list[tuple[str, str]] = []
    gate = SyncGate(
        "shard-7",
        policy=SyncPolicy.DEGRADE,
        on_degrade=lambda shard, message: alerts.append((shard, message)),
    )
    gate.reset_for_new_term()
    assert gate.degraded and gate.mode is ReplicationMode.ASYNC
    [(shard, message)] = alerts
    assert shard == "shard-7" and "promoted without a confirmed standby" in message


def test_the_settings_words_name_the_modes_and_policies() -> None:
    # EXDR_REPLICATION and EXDR_SYNC_POLICY are parsed with these
    assert ReplicationMode("sync") is ReplicationMode.SYNC
    assert ReplicationMode("async") is ReplicationMode.ASYNC
    assert SyncPolicy("strict") is SyncPolicy.STRICT
    assert SyncPolicy("degrade") is SyncPolicy.DEGRADE


def test_three_replicas_one_follower_is_a_majority() -> None:
    gate = SyncGate("s", timeout_s=1.0, replicas=3, clock=Clock())
    got: list[tuple[int, bool]] = []
    for seq in (1, 2, 3):
        gate.release(seq, lambda ok, seq=seq: got.append((seq, ok)))
    gate.standby_stored(2, "witness")
    assert got == [(1, True), (2, True)] and gate.standby_seq == 2
    gate.standby_stored(3, "standby")
    assert got[-1] == (3, True) and gate.waiting == 0
    assert gate.confirmed == {"witness": 2, "standby": 3}
    assert gate.stored_on("standby") == 3 and gate.stored_on("elsewhere") == 0


def test_three_replicas_a_slow_follower_changes_nothing() -> None:
    clock = Clock()
    gate = SyncGate("s", policy=SyncPolicy.STRICT, timeout_s=0.5, replicas=3, clock=clock)
    got: list[tuple[int, bool]] = []
    for seq in range(1, 11):
        gate.release(seq, lambda ok, seq=seq: got.append((seq, ok)))
        gate.standby_stored(seq, "standby")  # the fast follower confirms each one
        if seq == 2:
            gate.standby_stored(seq, "witness")  # the slow one stops confirming here
        clock.now += 0.1
        gate.tick()
    assert got == [(seq, True) for seq in range(1, 11)]
    assert gate.standby_seq == 10 and gate.confirmed["witness"] == 2


def test_five_replicas_need_two_followers() -> None:
    gate = SyncGate("s", timeout_s=1.0, replicas=5, clock=Clock())
    got: list[bool] = []
    gate.release(4, got.append)
    gate.standby_stored(9, "a")
    assert got == [] and gate.standby_seq == 0
    gate.standby_stored(4, "b")
    assert got == [True] and gate.standby_seq == 4


def test_three_replicas_no_majority_keeps_the_strict_meaning() -> None:
    clock = Clock()
    gate = SyncGate("s", policy=SyncPolicy.STRICT, timeout_s=0.5, replicas=3, clock=clock)
    got: list[bool] = []
    gate.release(1, got.append)
    clock.now = 0.6
    gate.tick()
    assert got == [False] and gate.mode is ReplicationMode.SYNC


def test_two_replicas_as_before_and_a_new_term_forgets_old_confirmations() -> None:
    gate = SyncGate("s", timeout_s=1.0, replicas=2, clock=Clock())
    got: list[bool] = []
    gate.release(3, got.append)
    gate.standby_stored(3, "standby")
    assert got == [True] and gate.standby_seq == 3
    gate.reset_for_new_term()
    assert gate.confirmed == {} and gate.standby_seq == 3


def test_strict_tells_once_per_outage_that_no_majority_confirmed() -> None:
    clock = Clock()
    told: list[str] = []
    gate = SyncGate(
        "s",
        policy=SyncPolicy.STRICT,
        timeout_s=0.5,
        replicas=3,
        clock=clock,
        on_no_majority=lambda shard, message: told.append(message),
    )
    got: list[bool] = []
    for seq in (1, 2):
        gate.release(seq, got.append)
        clock.now += 0.6
        gate.tick()
    assert got == [False, False] and len(told) == 1 and gate.no_majority
    assert "no majority of its 3 replicas" in told[0]
    gate.release(3, got.append)
    gate.standby_stored(3, "witness")  # one follower back: a majority again
    assert got[-1] is True and not gate.no_majority
    gate.release(4, got.append)
    clock.now += 0.6
    gate.tick()
    assert len(told) == 2


# -- read waiters (a read barrier: answer once a majority holds what the read shows) ----------


def test_a_read_is_confirmed_once_a_majority_holds_its_seq() -> None:
    gate = SyncGate("s", timeout_s=1.0, replicas=3, clock=Clock())
    got: list[tuple[int, bool]] = []
    for seq in (5, 2, 9):
        gate.when_confirmed(seq, lambda ok, seq=seq: got.append((seq, ok)))
    assert got == [] and gate.reading == 3 and gate.waiting == 0  # apart from acks
    gate.standby_stored(6, "b")  # one follower of two: the leader and b are a majority of 3
    assert got == [(2, True), (5, True)] and gate.reading == 1
    gate.when_confirmed(6, lambda ok: got.append((6, ok)))  # held already: at once
    assert got[-1] == (6, True) and gate.confirms(6) and not gate.confirms(7)
    gate.standby_stored(9, "c")
    assert got[-1] == (9, True) and gate.reading == 0


def test_a_cancelled_read_is_never_answered_and_not_kept() -> None:
    gate = SyncGate("s", timeout_s=1.0, clock=Clock())
    got: list[tuple[str, bool]] = []
    cancel = gate.when_confirmed(3, lambda ok: got.append(("gone", ok)))
    other = gate.when_confirmed(3, lambda ok: got.append(("waits", ok)))
    cancel()  # the reader's own deadline passed
    cancel()  # twice is harmless
    assert gate.reading == 1
    gate.standby_stored(3)
    assert got == [("waits", True)]
    other()
    assert gate.reading == 0


def test_tick_never_expires_reads_nor_degrades_or_alerts_for_them() -> None:
    alerts: list[str] = []
    for policy in SyncPolicy:
        clock = Clock()
        gate = SyncGate(
            "s",
            policy=policy,
            timeout_s=0.5,
            clock=clock,
            on_degrade=lambda _s, m: alerts.append(m),
            on_no_majority=lambda _s, m: alerts.append(m),
        )
        got: list[bool] = []
        gate.when_confirmed(4, got.append)
        clock.now = 100.0
        gate.tick()
        assert got == [] and gate.reading == 1, policy
        assert not gate.degraded and not gate.no_majority and alerts == [], policy
        assert gate.mode is ReplicationMode.SYNC
        gate.standby_stored(4)
        assert got == [True]


def test_reads_fail_when_the_writer_stops_or_a_new_term_begins() -> None:
    gate = SyncGate("s", timeout_s=1.0, clock=Clock())
    got: list[tuple[str, bool]] = []
    gate.when_confirmed(3, lambda ok: got.append(("a", ok)))
    gate.release(3, lambda ok: got.append(("ack", ok)))
    gate.fail_all()
    assert sorted(got) == [("a", False), ("ack", False)] and gate.reading == 0
    gate.when_confirmed(4, lambda ok: got.append(("b", ok)))
    gate.reset_for_new_term()
    assert got[-1] == ("b", False) and gate.reading == 0
    gate.standby_stored(10)  # a late confirmation answers nobody twice
    assert len(got) == 3


def test_async_mode_answers_unconfirmed_at_once() -> None:
    configured = SyncGate("s", mode=ReplicationMode.ASYNC, clock=Clock())
    got: list[bool] = []
    configured.when_confirmed(1, got.append)
    assert got == [False] and configured.reading == 0
    configured.standby_stored(1)
    configured.when_confirmed(1, got.append)
    assert got == [False, True]  # what the standby holds is confirmed in async mode too

    clock = Clock()
    degraded = SyncGate("s", policy=SyncPolicy.DEGRADE, timeout_s=0.5, clock=clock)
    degraded.release(2, lambda ok: None)
    clock.now = 1.0
    degraded.tick()
    assert degraded.degraded
    degraded.when_confirmed(2, got.append)
    assert got[-1] is False and degraded.reading == 0


def test_with_no_followers_everything_committed_is_confirmed() -> None:
    gate = SyncGate("s", replicas=1, clock=Clock())
    got: list[bool] = []
    gate.when_confirmed(1_000, got.append)
    assert got == [True] and gate.confirms(1_000)


def test_a_shard_with_one_replica_acknowledges_at_once_in_sync_mode() -> None:
    """One replica: the leader's own durable copy is the majority; nobody will ever confirm,
    so holding the acknowledgement would refuse every command once the timeout passes."""
    clock = Clock()
    gate = SyncGate("s", policy=SyncPolicy.STRICT, timeout_s=0.5, replicas=1, clock=clock)
    got: list[bool] = []
    gate.release(1, got.append)
    assert got == [True] and gate.waiting == 0
    clock.now = 1.0
    gate.tick()
    assert got == [True] and gate.mode is ReplicationMode.SYNC


# -- lines a mutation check found unpinned (docs/mutation-report.md) ---------------------------


def test_two_waiters_of_the_same_seq_are_both_released() -> None:
    """A retried command waits on the seq its first try committed: two waiters may share a
    seq, and ordering them must never compare their callbacks."""
    gate = SyncGate("s", timeout_s=1.0, clock=Clock())
    got: list[str] = []
    gate.release(4, lambda ok: got.append(f"first {ok}"))
    gate.release(4, lambda ok: got.append(f"retry {ok}"))
    assert gate.waiting == 2
    gate.standby_stored(4)
    assert sorted(got) == ["first True", "retry True"] and gate.waiting == 0


def test_cancelling_the_later_of_two_reads_of_one_seq_cancels_that_one() -> None:
    gate = SyncGate("s", timeout_s=1.0, clock=Clock())
    got: list[tuple[str, bool]] = []
    gate.when_confirmed(3, lambda ok: got.append(("waits", ok)))
    cancel = gate.when_confirmed(3, lambda ok: got.append(("gone", ok)))
    cancel()
    assert gate.reading == 1
    gate.standby_stored(3)
    assert got == [("waits", True)]


def test_a_confirmation_that_moves_nothing_does_not_end_a_strict_outage() -> None:
    """A follower repeating the seq it confirmed before brings no majority for the waiting
    commands: the outage goes on, and it is told once, not again at the next timeout."""
    clock = Clock()
    told: list[str] = []
    gate = SyncGate(
        "s",
        policy=SyncPolicy.STRICT,
        timeout_s=0.5,
        clock=clock,
        on_no_majority=lambda shard, message: told.append(message),
    )
    got: list[bool] = []
    gate.standby_stored(1, "b")
    gate.release(2, got.append)
    clock.now += 0.6
    gate.tick()
    assert got == [False] and gate.no_majority and len(told) == 1
    gate.standby_stored(1, "b")  # the same confirmation again
    assert gate.no_majority and gate.standby_seq == 1
    gate.release(3, got.append)
    clock.now += 0.6
    gate.tick()
    assert got == [False, False] and len(told) == 1


def test_standby_seen_at_is_the_time_of_the_last_confirmation_of_this_term() -> None:
    """The archiver measures a follower's silence from it (0.0: none yet, from its own start):
    a new term forgets the old follower's confirmations."""
    clock = Clock()
    gate = SyncGate("s", timeout_s=1.0, clock=clock)
    assert gate.standby_seen_at == 0.0
    clock.now = 7.5
    gate.standby_stored(1, "b")
    assert gate.standby_seen_at == 7.5
    clock.now = 9.0
    gate.standby_stored(1, "b")  # a repeated confirmation is still word from the follower
    assert gate.standby_seen_at == 9.0
    gate.reset_for_new_term()
    assert gate.standby_seen_at == 0.0
