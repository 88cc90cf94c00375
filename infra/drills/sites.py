"""Drills of whole sites on three of them (two full regions and a witness, each with its own
PostgreSQL server and ZooKeeper member), on the product's default settings or a tuned profile.

Kinds:
  site-loss       the leader's site lost for good: its node (SIGKILL), its database (immediate
                  stop) and its ZooKeeper member, never restarted
                                   -> the standby takes over from the survivors; RPO 0
  witness-loss    the witness's site lost for good -> nothing changes for clients
  majority-loss   the standby's and the witness's sites lost at once: no majority
                                   -> nothing acknowledged, nothing lost, an alert; when the
                                      witness's site returns, the leader acknowledges again

RTO: for site-loss, from the fault to the first command the new leader acknowledged; for the
others, the longest stretch after the fault without an acknowledgement (majority-loss: until
the site returned and one came).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from infra.drills.checks import check_cancels, check_ledger, read_models_match
from infra.drills.clients import ACKED, RETRY, Ledger, LoadGenerator
from infra.drills.cluster import SHARD, THREE_SITES, Cluster, wait_for
from infra.drills.timeline import Sampler, Timeline, timeline_data

SITE_KINDS = ("site-loss", "witness-loss", "majority-loss")
PROFILES = ("defaults", "tuned")
TRADERS = 4
MAJORITY_OUTAGE_S = 6.0  # how long majority-loss keeps two sites away

# The product's defaults, stated (the drill harness otherwise runs sub-second timings).
DEFAULTS_ENV = {
    "EXDR_SYNC_POLICY": "strict",
    "EXDR_SYNC_TIMEOUT_MS": "1000",
    "EXDR_ZK_SESSION_MS": "2000",
    "EXDR_HEALTH_INTERVAL_MS": "1000",
    "EXDR_FAILOVER_AFTER_MS": "5000",
    "EXDR_MAX_STANDBY_LAG_MS": "2000",
    "EXDR_STORE_LOSS_AFTER_MS": "1000",
}
# Sub-second detection: what a latency-tuned deployment sets. Still strict: RPO 0.
TUNED_ENV = {
    **DEFAULTS_ENV,
    "EXDR_ZK_SESSION_MS": "600",
    "EXDR_HEALTH_INTERVAL_MS": "100",
    "EXDR_FAILOVER_AFTER_MS": "500",
    "EXDR_STORE_LOSS_AFTER_MS": "300",
}


def profile_env(profile: str) -> dict[str, str]:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; one of: {', '.join(PROFILES)}")
    return dict(DEFAULTS_ENV if profile == "defaults" else TUNED_ENV)


def lose_site(cluster: Cluster, region: str) -> None:
    """A site gone: its node, its database and its ZooKeeper member, at once."""
    cluster.stop(region, signal.SIGKILL)
    lose_servers(cluster, region)


def lose_servers(cluster: Cluster, region: str) -> None:
    """The rest of a site whose node is already dead: its database and ZooKeeper member."""
    cluster.pg_servers[region].stop("immediate")
    member = cluster.zk_member_of(region)
    if member is not None:
        cluster.stop_zookeeper(member)


def restore_site(cluster: Cluster, region: str) -> None:
    """The site back: ZooKeeper member, database, then the node (it rejoins as a follower)."""
    member = cluster.zk_member_of(region)
    if member is not None:
        cluster.start_zookeeper(member)
    cluster.pg_servers[region].start()
    cluster.start(region)


def run_site_drill(
    kind: str,
    *,
    profile: str = "defaults",
    rate: float = 100.0,
    seconds: float = 20.0,
    fail_after: float = 4.0,
    workdir: Path | None = None,
    reports_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run one site drill; returns its report (and writes it under `reports_dir` if given)."""
    if kind not in SITE_KINDS:
        raise ValueError(f"unknown site drill {kind!r}; one of: {', '.join(SITE_KINDS)}")
    say = progress or (lambda _: None)
    if kind == "majority-loss":  # the outage, the site's return, then service seen resuming
        seconds = max(seconds, fail_after + MAJORITY_OUTAGE_S + 20.0)
    work = workdir or Path(tempfile.mkdtemp(prefix=f"exdr-drill-{kind}-"))
    cluster = Cluster(
        work,
        env=profile_env(profile),
        sites=THREE_SITES,
        own_postgres=True,
        own_zookeeper=True,
        zk_members=3,
    )
    tl = Timeline()
    failures: list[str] = []
    result: dict[str, Any] = {
        "kind": kind,
        "mode": "sync",
        "profile": profile,
        "settings": profile_env(profile),
        "replicas": [f"{name} ({kind_})" for name, kind_ in THREE_SITES],
        "rate": rate,
        "seconds": seconds,
        "started_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "failover_expected": kind == "site-loss",
        "rpo_guaranteed": True,
    }
    sampler: Sampler | None = None
    ledger: Ledger | None = None
    say("starting three sites (PostgreSQL, ZooKeeper member, node each)")
    try:
        cluster.prepare()
        for region in cluster.names:
            cluster.start(region)
        cluster.create_keys()
        traders = cluster.create_traders(TRADERS)
        before = cluster.shards("primary")[SHARD]
        tl = Timeline()
        tl.step(f"three sites up; primary leads at epoch {before['epoch']}")
        load = LoadGenerator(
            [cluster.url("primary"), cluster.url("standby")],
            traders,
            rate=rate,
            cancel_every=5,
            crossing=True,
            funding_key=cluster.funding_key,
        )
        box: dict[str, Any] = {}

        def drive() -> None:
            try:
                box["ledger"] = asyncio.run(load.run(seconds))
            except Exception as exc:
                box["error"] = exc

        driver = threading.Thread(target=drive, name="drill-load")
        sampler = Sampler(cluster, tl)
        sampler.start()
        load_started = tl.mark("load_start", time.monotonic())
        driver.start()
        say(f"load: {rate:g} requests/s for {seconds:g}s; fault in {fail_after:g}s")
        # the clients deposit first: the fault comes once orders are being acknowledged
        wait_for(
            lambda: any(a.status in ACKED for a in list(load.ledger.attempts)),
            60,
            "the first acknowledged order",
        )
        time.sleep(fail_after)
        # every kind assumes the primary leads when the fault comes; on a starved machine it
        # may have lost its session earlier (the standby then took over before the fault, and
        # an RTO measured from the fault would mean nothing)
        result["primary_led_at_fault"] = leads(cluster, "primary")
        if not result["primary_led_at_fault"]:
            failures.append("the primary no longer led when the fault came: nothing measured")
        healed_at: float | None = None
        if kind == "majority-loss":
            # both nodes first: from then on no follower can confirm anything
            cluster.stop("standby", signal.SIGKILL)
            cluster.stop("witness", signal.SIGKILL)
        failed_at = tl.mark("failure")
        failed_wall = time.time()  # the nodes' log lines carry wall-clock times
        if kind == "site-loss":
            lose_site(cluster, "primary")
            tl.step("primary's site lost for good: node, database and ZooKeeper member")
        elif kind == "witness-loss":
            lose_site(cluster, "witness")
            tl.step("witness's site lost for good: node, database and ZooKeeper member")
        else:
            lose_servers(cluster, "standby")
            lose_servers(cluster, "witness")
            tl.step("standby's and witness's sites lost at once: one replica of three left")
            time.sleep(MAJORITY_OUTAGE_S)
            restore_site(cluster, "witness")
            healed_at = tl.mark("healed")
            tl.step("witness's site back: a majority again")
        driver.join(seconds + 120)
        load_ended = tl.mark("load_end")
        if "ledger" not in box:
            raise RuntimeError(f"the load generator failed: {box.get('error')!r}")
        ledger = box["ledger"]
        say("load done; checking")
        leader = "standby" if kind == "site-loss" else "primary"
        wait_for(lambda: cluster.shards(leader)[SHARD]["leader"], 60, f"{leader} to lead")
        after = cluster.shards(leader)[SHARD]
        survivors = [r for r in cluster.names if r in cluster.procs]
        heads = settle_stores(cluster, leader, survivors)
        result["store_heads"] = heads
        result["quorum_replicas"] = [r for r, seq in heads.items() if seq == heads[leader]]
        checked = check_ledger(cluster, leader, ledger)
        cancels_lost = check_cancels(cluster.url(leader), traders, ledger)
        from infra.drills.audit import audit_shard

        audit = audit_shard(cluster.dsns[leader], SHARD)
        views = read_models_match(cluster, leader)
        result.update(views)
        if not views["read_models_match"]:
            failures.append(f"read models differ: {views.get('read_models_problems', [])[:1]}")
        hashes = {
            r: cluster.shards(r, state_hash=True)[SHARD]["state_hash"]
            for r, kind_ in THREE_SITES
            if kind_ == "full" and r in survivors
        }
        if kind == "site-loss":
            first = ledger.first_ack_at(cluster.url(leader), failed_at)
            rto = None if first is None else round(first - failed_at, 3)
            if first is not None:
                tl.mark("first_ack_new", first)
            result["rto_phases"] = rto_phases(cluster.log(leader), failed_wall, rto)
        else:
            gap_start, gap = ledger.longest_gap(failed_at, load_ended)
            rto = round(gap, 3)
            tl.events["first_ack_new"] = tl.rel(gap_start + gap)
        sampler.stop()
        refused_after = [a for a in ledger.attempts if a.status in RETRY and a.sent_at >= failed_at]
        acked_in_outage = [
            a
            for a in ledger.attempts
            if a.status in ACKED
            and healed_at is not None
            and a.sent_at > failed_at
            and a.sent_at + a.latency_s < healed_at
        ]
        latencies = sorted(a.latency_s for a in ledger.attempts if a.status in ACKED)
        unavailable = [a.sent_at for a in ledger.attempts if a.status in RETRY]
        after_fault = sorted(
            a.latency_s for a in ledger.attempts if a.status in ACKED and a.sent_at >= failed_at
        )
        result.update(
            {
                "rto_seconds": rto,
                **ledger.counts(load_ended - load_started),
                **checked,
                "cancels_lost": cancels_lost,
                "refused": len(unavailable),
                "refused_window_seconds": round(max(unavailable) - min(unavailable), 3)
                if unavailable
                else 0.0,
                "refused_after_fault": len(refused_after),
                "acked_during_outage": len(acked_in_outage) if healed_at is not None else None,
                "ack_p50_ms": _pct_ms(latencies, 0.5),
                "ack_p99_ms": _pct_ms(latencies, 0.99),
                "ack_p99_after_fault_ms": _pct_ms(after_fault, 0.99),
                "epoch_before": int(before["epoch"]),
                "epoch_after": int(after["epoch"]),
                "leader_before": "primary",
                "leader_after": leader,
                "alerts": _alerts(cluster, leader),
                "audit": audit,
                "state_hashes": hashes,
            }
        )
        for name in ("lost", "duplicated", "phantom", "cancels_lost"):
            if result[name]:
                failures.append(f"{result[name]} {name}")
        if audit.get("mismatches"):
            failures.append(f"audit: {audit['mismatches'][0]}")
        if len(set(hashes.values())) > 1:
            failures.append(f"state hashes differ: {hashes}")
        if not ledger.acked:
            failures.append("no command was acknowledged at all")
        if kind == "site-loss":
            if rto is None:
                failures.append("the new leader acknowledged nothing")
            if result["epoch_after"] <= result["epoch_before"]:
                failures.append("epoch did not advance")
        elif kind == "witness-loss":
            if refused_after:
                failures.append(f"{len(refused_after)} command(s) refused after a follower loss")
            if result["epoch_after"] != result["epoch_before"]:
                failures.append("a failover happened")
        else:
            if acked_in_outage:
                failures.append(
                    f"{len(acked_in_outage)} command(s) acknowledged without a majority"
                )
            if ledger.first_ack_at(cluster.url(leader), healed_at or load_ended) is None:
                failures.append("nothing was acknowledged after the witness's site returned")
            if not any(a["name"] == "ReplicationNoMajority" for a in result["alerts"]):
                failures.append("no ReplicationNoMajority alert")
        failures.extend(tl.findings)
    except Exception as exc:
        failures.append(f"drill aborted: {type(exc).__name__}: {exc}")
        result.setdefault("rto_seconds", None)
    finally:
        if sampler is not None:
            sampler.stop()
        cluster.close()
    result.update(
        {
            "passed": not failures,
            "failures": failures,
            "steps": tl.steps,
            "events": tl.events,
            "timeline": timeline_data(tl, ledger, cluster),
            "workdir": str(work),
        }
    )
    if reports_dir is not None:
        from infra.drills.report import write_report

        json_path, html_path = write_report(result, reports_dir)
        result["report"] = {"json": str(json_path), "html": str(html_path)}
    return result


# Where a site-loss RTO goes, from the new leader's log: (phase, the line that ends it).
RTO_PHASES = (
    ("leader_unhealthy", "unhealthy ("),  # its first failed health check of the old leader
    ("leader_node_gone", "leader node gone shard="),  # the old leader's session expired
    ("lock_taken", "failover lock taken shard="),
    ("epoch_appended", "leader shard="),  # the new epoch in the history, the leader node made
    ("promoted", '"FailoverCompleted"'),  # takes commands from here on
)
_LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def rto_phases(log_path: Path, failed_wall: float, rto: float | None) -> dict[str, float | None]:
    """Seconds from the fault to the first log line of each phase after it (None: not seen),
    and to the first acknowledgement (`rto`): detection, promotion, then the clients'
    retries and the first quorum confirmation."""
    found: dict[str, float | None] = {name: None for name, _ in RTO_PHASES}
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        stamp = _LOG_TIME.match(line)
        if stamp is None:
            continue
        at = dt.datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if at < failed_wall - 0.001:
            continue
        for name, marker in RTO_PHASES:
            if found[name] is None and marker in line:
                found[name] = round(at - failed_wall, 3)
    found["first_ack"] = rto
    return found


def leads(cluster: Cluster, region: str) -> bool:
    """Whether `region` leads every shard now (its facade's GET /primary answers 200)."""
    try:
        return httpx.get(cluster.url(region) + "/primary", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def settle_stores(
    cluster: Cluster, leader: str, regions: list[str], timeout: float = 30
) -> dict[str, int]:
    """Wait until every live replica's store holds the leader's head; returns region -> seq."""

    def heads() -> dict[str, int]:
        return {r: cluster.store_heads(r).get(SHARD, (0, 0, 0))[0] for r in regions}

    def same() -> dict[str, int] | None:
        now = heads()
        return now if len(set(now.values())) == 1 else None

    try:
        return dict(wait_for(same, timeout, "the live replicas to hold the same seq", 0.2))
    except AssertionError:
        return heads()


def _alerts(cluster: Cluster, region: str) -> list[dict[str, Any]]:
    """The ALERT lines a node logged (infra/metrics/alerts.py), as {name, severity}."""
    found: list[dict[str, Any]] = []
    try:
        text = cluster.log(region).read_text(errors="replace")
    except OSError:
        return found
    for line in text.splitlines():
        if "ALERT" not in line:
            continue
        for name in ("ReplicationNoMajority", "FailoverCompleted", "FailoverRefused"):
            if name in line:
                found.append({"name": name, "region": region})
    return found


def _pct_ms(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, int(len(sorted_values) * q))
    return round(sorted_values[index] * 1000, 2)
