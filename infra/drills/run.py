"""`exchange-dr drill <kind>`: a fault under load, measured, then checked.

Every drill starts its sites as real processes (its own broker, PostgreSQL servers, ZooKeeper
and topics), puts simulated clients on them (several accounts placing crossing orders and
cancelling some), injects one fault four seconds in, lets the clients run on, heals what can be
healed, then checks:

* the clients' ledger against the new primary: `lost` (acknowledged, missing), `duplicated`,
  `phantom` (present, never sent), and `cancels_lost` (a cancel acknowledged, the order not
  cancelled);
* balances and positions recomputed from the trades against the aggregates (infra/drills/audit);
* exactly one leader, the expected one, at the expected epoch; every replica at the same seq,
  the full regions with the same state hash, and (on three sites) every replica's WAL with the
  same head (seq and checksum) and a whole chain: the witness keeps the WAL only, no state to
  hash (`wal_heads`);
* the new leader's live read models (projected by its node up to the confirmed point) equal a
  projection from scratch of its WAL: every order, trade, position and balance
  (`read_models_match`).

Profiles (`profile`, reported with the `settings` used):
  defaults       the default: three sites (primary, standby, witness: a PostgreSQL server and a
                 ZooKeeper member each) on the product's settings: health every 1 s, failover
                 after 5 s, session 2 s, strict (RPO 0); at least 20 s of load, so that a
                 failover's new leader is seen acknowledging
  tuned          the same three sites on sub-second timings (health 100 ms, failover 500 ms,
                 session 600 ms), strict
  tuned-degrade  the older drill: two regions, sub-second timings and the degrade policy; RPO is
                 not guaranteed while the promoted standby has no standby of its own (the report
                 says so); not for the site drills

Kinds (the fault, and what must follow):
  planned           the runbook's planned-failover script: check, drain, hand over, check, verify
                                                                 -> the standby leads, no loss
  unplanned         SIGKILL the primary's process               -> the standby takes over (on
                                                                   the defaults after the 5 s
                                                                   threshold)
  region-loss       the primary region's PostgreSQL server stopped (immediate)
                                                                 -> the standby takes over (the
                                                                   old leader gives up its lead
                                                                   once its store is lost)
  broker-loss       the broker restarted, every topic gone      -> no failover, no gap
  coordinator-loss  ZooKeeper restarted: on three sites every member of the ensemble at once
                    (the coordinator lost as a service; one member lost is what witness-loss
                    and site-loss drill)                        -> no failover
  partition         the primary cut off from ZooKeeper (a proxy to its site's member drops every
                    packet) while it runs on and its clients reach it, then healed
                                                                 -> it refuses commands; one leader
  replay            no fault: replay from scratch in the full regions and rebuild the projections
                                                                 -> one state hash everywhere
  site-loss, witness-loss, majority-loss
                    whole sites lost: see infra/drills/sites.py

RTO, for a failover: from the fault to the first command acknowledged by the new primary. For
the others: the longest stretch after the fault in which no command was acknowledged.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from infra.drills.checks import (
    check_cancels,
    check_ledger,
    full_regions,
    one_leader,
    read_models_match,
    replay_everywhere,
    settle,
    wal_heads,
)
from infra.drills.clients import ACKED, RETRY, Ledger, LoadGenerator
from infra.drills.cluster import ROOT, SHARD, THREE_SITES, Cluster, wait_for
from infra.drills.faults import MARKERS, heal, inject, order_exists
from infra.drills.sites import SITE_KINDS, leads, profile_env, run_site_drill, settle_stores
from infra.drills.timeline import Sampler, Timeline, timeline_data
from infra.settings import Settings

KINDS = (
    "planned",
    "unplanned",
    "region-loss",
    "broker-loss",
    "coordinator-loss",
    "partition",
    "replay",
    *SITE_KINDS,
)
FAILOVER_KINDS = frozenset({"planned", "unplanned", "region-loss", "partition"})
REPORTS = ROOT / "reports"
TRADERS = 4
# What two regions, their broker, ZooKeeper, PostgreSQL and the clients sustain together on a
# 2-core machine with acknowledgement latency well under the clients' 1.5 s patience.
DEFAULT_RATE = 100.0
# `defaults` and `tuned` (infra/drills/sites.py: the product's settings, or sub-second timings;
# strict) run on three sites; `tuned-degrade` is the older two-region drill with sub-second
# timings and the degrade policy (RPO not guaranteed while degraded)
PROFILES = ("defaults", "tuned", "tuned-degrade")
# the load a drill on the product's defaults needs at least: a failover takes the 5 s threshold
# and more, and the new leader must then acknowledge while the clients still send
DEFAULTS_MIN_SECONDS = 20.0


def three_site_cluster(kind: str, work: Path, mode: str, profile: str) -> Cluster:
    """Three sites (primary, standby, witness), each with its own PostgreSQL server and
    ZooKeeper member, on the profile's settings."""
    return Cluster(
        work,
        env={"EXDR_REPLICATION": mode, **profile_env(profile)},
        sites=THREE_SITES,
        own_postgres=True,
        own_zookeeper=True,
        zk_members=3,
        partitionable=kind == "partition",
    )


def cluster_for(kind: str, work: Path, mode: str) -> Cluster:
    # drills run the way a latency-tuned deployment would: a 600 ms ZooKeeper session (lease
    # 300 ms); degrade, so the new primary acknowledges while its old peer is still down
    env = {
        "EXDR_REPLICATION": mode,
        "EXDR_SYNC_POLICY": "degrade",
        "EXDR_ZK_SESSION_MS": str(Settings.from_env().drill_zk_session_ms or 600),
        "EXDR_STORE_LOSS_AFTER_MS": "300",
    }
    if kind == "coordinator-loss":
        # the outage (a ZooKeeper restart, ~2 s) is shorter than the session: nothing expires
        env.update({"EXDR_ZK_SESSION_MS": "8000", "EXDR_FAILOVER_AFTER_MS": "1000"})
    return Cluster(
        work,
        env=env,
        own_postgres=kind == "region-loss",
        own_zookeeper=kind == "coordinator-loss",
        partitionable=kind == "partition",
    )


def run_drill(
    kind: str,
    *,
    rate: float = DEFAULT_RATE,
    seconds: float = 12.0,
    fail_after: float = 4.0,
    workdir: Path | None = None,
    mode: str = "sync",
    reports_dir: Path | None = REPORTS,
    progress: Callable[[str], None] | None = None,
    profile: str | None = None,
) -> dict[str, Any]:
    """Run one drill; returns its report (also written as JSON + HTML under `reports_dir`).

    `profile`: "defaults" (when None) or "tuned" on three sites; "tuned-degrade" on two
    regions (not for the site drills)."""
    if kind not in KINDS:
        raise ValueError(f"unknown drill kind {kind!r}; one of: {', '.join(KINDS)}")
    profile = profile or "defaults"
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; one of: {', '.join(PROFILES)}")
    if kind in SITE_KINDS:
        if profile == "tuned-degrade":
            raise ValueError(f"drill {kind} runs with the defaults or tuned profile only")
        return run_site_drill(
            kind,
            profile=profile,
            rate=rate,
            seconds=max(seconds, 20.0),
            fail_after=fail_after,
            workdir=workdir,
            reports_dir=reports_dir,
            progress=progress,
        )
    three = profile != "tuned-degrade"
    if profile == "defaults" and kind != "replay":
        seconds = max(seconds, DEFAULTS_MIN_SECONDS)
    say = progress or (lambda _: None)
    work = workdir or Path(tempfile.mkdtemp(prefix=f"exdr-drill-{kind}-"))
    started_at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    cluster = (
        three_site_cluster(kind, work, mode, profile) if three else cluster_for(kind, work, mode)
    )
    tl = Timeline()
    failures: list[str] = []
    result: dict[str, Any] = {
        "kind": kind,
        "mode": mode,
        "profile": profile,
        "rpo_guaranteed": three and mode == "sync",
        "rate": rate,
        "seconds": seconds,
        "started_at": started_at,
        "failover_expected": kind in FAILOVER_KINDS,
    }
    if three:
        result["settings"] = profile_env(profile)
        result["replicas"] = [f"{name} ({kind_})" for name, kind_ in THREE_SITES]
    else:
        result["settings"] = {
            k: v for k, v in cluster.base_env().items() if k in _REPORTED_SETTINGS
        }
    say(
        "starting three sites (PostgreSQL, ZooKeeper member, node each)"
        if three
        else "starting two regions"
    )
    sampler: Sampler | None = None
    try:
        cluster.prepare()
        for region in cluster.names:
            cluster.start(region)
        cluster.create_keys()
        traders = cluster.create_traders(TRADERS)
        before = cluster.shards("primary")[SHARD]
        tl = Timeline()  # times count from the start of the load
        tl.step(
            f"{'three sites' if three else 'both regions'} up; "
            f"primary leads at epoch {before['epoch']}"
        )
        load = LoadGenerator(
            [cluster.url("primary"), cluster.url("standby")],
            traders,
            rate=rate,
            cancel_every=5,
            crossing=True,
            funding_key=cluster.funding_key,
        )
        ledger_box: dict[str, Any] = {}

        def drive() -> None:
            try:
                ledger_box["ledger"] = asyncio.run(load.run(seconds))
            except Exception as exc:  # reported by the drill, not lost in a thread
                ledger_box["error"] = exc

        driver = threading.Thread(target=drive, name="drill-load")
        sampler = Sampler(cluster, tl)
        sampler.start()
        load_started = time.monotonic()
        tl.mark("load_start", load_started)
        driver.start()
        say(f"load: {rate:g} requests/s from {load.clients} clients for {seconds:g}s")
        if three:  # the clients deposit first: the fault comes once orders are acknowledged
            wait_for(
                lambda: any(a.status in ACKED for a in list(load.ledger.attempts)),
                60,
                "the first acknowledged order",
            )
        time.sleep(fail_after)
        if three:
            # on a starved machine the primary may have lost its session before the fault: an
            # RTO measured from the fault would then mean nothing
            result["primary_led_at_fault"] = leads(cluster, "primary")
            if not result["primary_led_at_fault"]:
                failures.append("the primary no longer led when the fault came: nothing measured")
        say(f"fault: {kind}")
        failed_at = inject(kind, cluster, tl)
        driver.join(seconds + 90)
        load_ended = tl.mark("load_end")
        if "ledger" not in ledger_box:
            raise RuntimeError(f"the load generator failed: {ledger_box.get('error')!r}")
        ledger: Ledger = ledger_box["ledger"]
        for cid in MARKERS if kind == "planned" else ():
            ledger.sent.add(cid)  # the procedure's own test orders, each acknowledged
            ledger.owners[cid] = "traders"
            ledger.acked[cid] = {"client_order_id": cid}
        say("load done; healing and checking")

        expected_leader = "standby" if kind in FAILOVER_KINDS else "primary"
        follower = "primary" if expected_leader == "standby" else "standby"
        heal(kind, cluster, tl)
        wait_for(
            lambda: cluster.shards(expected_leader)[SHARD]["leader"],
            30,
            f"{expected_leader} to lead",
        )
        if three:
            # the healed region rejoins as a follower: its node answers again once its store
            # is back (after a database restart, when its connection pool has reconnected)
            for region in full_regions(cluster):
                wait_for(lambda r=region: cluster.shards(r), 60, f"{region} to answer again")
        after = cluster.shards(expected_leader)[SHARD]
        leaders = one_leader(cluster)
        if leaders != [expected_leader]:
            failures.append(f"leaders after the drill: {leaders}, expected [{expected_leader}]")
        if three:
            heads = settle_stores(cluster, expected_leader, list(cluster.names))
            result["store_heads"] = heads
            result["settled_seq"] = heads[expected_leader]
            if len(set(heads.values())) != 1:
                failures.append(f"the replicas' stores did not reach one seq: {heads}")
        else:
            try:
                result["settled_seq"] = settle(cluster, expected_leader, follower)
            except AssertionError as exc:
                failures.append(str(exc))

        checked = check_ledger(cluster, expected_leader, ledger)
        cancels_lost = check_cancels(cluster.url(expected_leader), traders, ledger)
        from infra.drills.audit import audit_shard

        audit = audit_shard(cluster.dsns[expected_leader], SHARD)
        # before the replay below rebuilds them: the views the node projected live
        views = read_models_match(cluster, expected_leader)
        result.update(views)
        if not views["read_models_match"]:
            failures.append(f"read models differ: {views.get('read_models_problems', [])[:1]}")
        hashes = {
            r: cluster.shards(r, state_hash=True)[SHARD]["state_hash"]
            for r in full_regions(cluster)
        }
        if three:
            # the witness keeps the WAL only, no state to hash: every replica's WAL head (seq
            # and checksum) must be one, and each chain whole
            wals = wal_heads(cluster, list(cluster.names))
            result["wal_heads"] = wals
            if len({(w["seq"], w["checksum"]) for w in wals.values()}) != 1:
                failures.append(f"WAL heads differ: {wals}")
            broken = [r for r, w in wals.items() if not w["chain_whole"]]
            if broken:
                failures.append(f"WAL chain not whole in {broken}")
        if kind == "replay":
            replayed = replay_everywhere(cluster)
            result["replay"] = replayed["replay"]
            result["projection_problems"] = replayed["projection_problems"][:20]
            for region, row in replayed["replay"].items():
                hashes[f"{region} (replayed)"] = row["state_hash"]
            if replayed["projection_problems"]:
                failures.append(
                    f"{len(replayed['projection_problems'])} projection difference(s): "
                    f"{replayed['projection_problems'][0]}"
                )

        # RTO
        if kind in FAILOVER_KINDS:
            first = ledger.first_ack_at(cluster.url(expected_leader), failed_at)
            rto = None if first is None else round(first - failed_at, 3)
            if first is not None:
                tl.mark("first_ack_new", first)
            promoted = sampler.first_leader_after(expected_leader, failed_at)
            tl.events["promotion"] = promoted
        elif kind != "replay":
            gap_start, gap = ledger.longest_gap(failed_at, load_ended)
            rto = round(gap, 3)
            tl.events["first_ack_new"] = tl.rel(gap_start + gap)
        else:
            rto = None
        sampler.stop()

        unavailable = [a for a in ledger.attempts if a.status in RETRY]
        refused_window = [a.sent_at for a in unavailable if a.sent_at >= failed_at - 1]
        latencies = sorted(a.latency_s for a in ledger.attempts if a.status in ACKED)
        epoch_before, epoch_after = int(before["epoch"]), int(after["epoch"])
        result.update(
            {
                "rto_seconds": rto,
                **ledger.counts(load_ended - load_started),
                **checked,
                "cancels_lost": cancels_lost,
                "refused": len(unavailable),
                "rejected": sum(1 for a in ledger.attempts if a.status not in (*ACKED, *RETRY)),
                "refused_window_seconds": round(max(refused_window) - min(refused_window), 3)
                if refused_window
                else 0.0,
                "ack_p50_ms": _pct_ms(latencies, 0.5),
                "ack_p99_ms": _pct_ms(latencies, 0.99),
                "epoch_before": epoch_before,
                "epoch_after": epoch_after,
                "leader_before": "primary",
                "leader_after": leaders[0] if len(leaders) == 1 else ",".join(leaders) or None,
                "audit": audit,
                "state_hashes": hashes,
            }
        )

        # verdict
        for name in ("lost", "duplicated", "phantom", "cancels_lost"):
            if result[name] and mode == "sync":
                failures.append(f"{result[name]} {name.replace('_', ' ')}")
        if audit.get("mismatches"):
            failures.append(
                f"audit: {len(audit['mismatches'])} mismatch(es): {audit['mismatches'][0]}"
            )
        if len(set(hashes.values())) != 1:
            failures.append(f"state hashes differ: {hashes}")
        if kind in FAILOVER_KINDS:
            if epoch_after <= epoch_before:
                failures.append(f"epoch did not advance ({epoch_before} -> {epoch_after})")
            if rto is None:
                failures.append("the new primary acknowledged nothing")
        elif epoch_after != epoch_before:
            failures.append(f"a failover happened ({epoch_before} -> {epoch_after})")
        if kind == "planned" and not order_exists(cluster, expected_leader, MARKERS[0]):
            failures.append("the test order placed before the switchover is missing")
        if not ledger.acked:
            failures.append("no command was acknowledged at all")
        failures.extend(tl.findings)
    except Exception as exc:
        failures.append(f"drill aborted: {type(exc).__name__}: {exc}")
        result.setdefault("rto_seconds", None)
    finally:
        if sampler is not None:
            sampler.stop()
        cluster.close()
    ledger_opt = locals().get("ledger")
    result.update(
        {
            "passed": not failures,
            "failures": failures,
            "steps": tl.steps,
            "events": tl.events,
            "timeline": timeline_data(tl, ledger_opt, cluster),
            "workdir": str(work),
        }
    )
    if reports_dir is not None:
        from infra.drills.report import write_report

        json_path, html_path = write_report(result, reports_dir)
        result["report"] = {"json": str(json_path), "html": str(html_path)}
    return result


_REPORTED_SETTINGS = (
    "EXDR_SYNC_POLICY",
    "EXDR_SYNC_TIMEOUT_MS",
    "EXDR_ZK_SESSION_MS",
    "EXDR_HEALTH_INTERVAL_MS",
    "EXDR_FAILOVER_AFTER_MS",
    "EXDR_MAX_STANDBY_LAG_MS",
    "EXDR_STORE_LOSS_AFTER_MS",
)


def _pct_ms(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, int(len(sorted_values) * q))
    return round(sorted_values[index] * 1000, 2)
