"""`exchange-dr drill`, `drills` and `demo`: faults under load on throw-away regions."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from infra.cli.common import CliError, Commands
from infra.settings import Settings

SCHEDULES = {
    # cadence: (drills of every kind, extra unplanned drills)
    "daily": (1, 0),
    "weekly": (1, 19),
    "monthly": (3, 47),
}


def _drill_progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def _seconds(value: object) -> str:
    return "-" if value is None else f"{value}s"


def _public(result: dict[str, Any]) -> dict[str, Any]:
    """A drill's report without its raw timeline (that is in the JSON file)."""
    return {k: v for k, v in result.items() if k != "timeline"}


def cmd_drill(args: argparse.Namespace, settings: Settings) -> int:
    from infra.drills.report import format_summary, format_table, summarize
    from infra.drills.run import run_drill

    if args.repeat < 1 or args.rate <= 0 or args.seconds <= 0:
        raise CliError("--repeat, --rate and --seconds must be positive")
    results = []
    for n in range(args.repeat):
        print(f"drill {args.kind} {n + 1}/{args.repeat}", file=sys.stderr, flush=True)
        result = run_drill(
            args.kind,
            rate=args.rate,
            seconds=args.seconds,
            mode=args.mode,
            reports_dir=Path(args.reports),
            progress=_drill_progress,
            profile=args.profile,
        )
        results.append(result)
        if not args.json:
            print(format_table(result))
            print(f"report: {result['report']['html']}")
    if args.json:
        payload = [_public(r) for r in results]
        print(json.dumps(payload[0] if args.repeat == 1 else {"drills": payload}, default=str))
    elif args.repeat > 1:
        print(format_summary(summarize(results)))
    return 0 if all(r["passed"] for r in results) else 1


def cmd_drills(args: argparse.Namespace, settings: Settings) -> int:
    """Every kind, repeatedly; one summary (`make drills`, the drill schedule)."""
    from infra.drills.report import format_summary, summarize
    from infra.drills.run import KINDS, run_drill
    from infra.drills.sites import SITE_KINDS

    each, extra_unplanned = SCHEDULES[args.schedule]
    if args.each is not None:
        each = args.each
    if args.unplanned is not None:
        extra_unplanned = max(0, args.unplanned - each)
    kinds = [k for k in KINDS if not (args.profile == "tuned-degrade" and k in SITE_KINDS)]
    plan = [k for k in kinds for _ in range(each)] + ["unplanned"] * extra_unplanned
    if not plan:
        raise CliError("nothing to run: --each and --unplanned are both 0")
    if args.dry_run:
        counts = {k: plan.count(k) for k in dict.fromkeys(plan)}
        print(
            f"schedule {args.schedule}: {len(plan)} drills at {args.rate:g} requests/s, "
            f"{args.seconds:g}s of load each"
            + (" (at least 20 s but for replay)" if args.profile == "defaults" else "")
            + f", profile {args.profile}: "
            + ", ".join(f"{kind} x{n}" for kind, n in counts.items())
        )
        return 0
    reports = Path(args.reports)
    results = []
    for n, kind in enumerate(plan, 1):
        print(f"[{n}/{len(plan)}] drill {kind}", file=sys.stderr, flush=True)
        result = run_drill(
            kind,
            rate=args.rate,
            seconds=args.seconds,
            reports_dir=reports,
            progress=_drill_progress,
            profile=args.profile,
        )
        results.append(result)
        verdict = "passed" if result["passed"] else "FAILED: " + "; ".join(result["failures"])
        print(
            f"[{n}/{len(plan)}] {kind}: rto={_seconds(result.get('rto_seconds'))} "
            f"lost={result.get('lost')} duplicated={result.get('duplicated')} "
            f"phantom={result.get('phantom')} {verdict}",
            file=sys.stderr,
            flush=True,
        )
    summary = summarize(results)
    summary["schedule"] = args.schedule
    summary["reports"] = [r["report"]["html"] for r in results if "report" in r]
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    reports.mkdir(parents=True, exist_ok=True)
    path = reports / f"drills-{stamp}.json"
    path.write_text(
        json.dumps(
            {"summary": summary, "drills": [_public(r) for r in results]}, indent=1, default=str
        )
    )
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        print(format_summary(summary))
        print(f"summary: {path}")
    return 0 if summary["passed"] else 1


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """`make demo`: the leader's site lost for good under load, on the product's defaults, with
    the RTO/RPO table, the replicas that held the quorum, and the report."""
    if args.engine:
        from infra.drills.demo import run_demo

        return run_demo(settings, commands=args.commands)
    from infra.drills.report import format_table
    from infra.drills.run import run_drill

    print(
        "demo: three sites on this machine (primary, standby, witness: a node, a PostgreSQL "
        "server and a ZooKeeper member each), clients placing and cancelling orders at "
        f"{args.rate:g}/s; after 4 s the primary's whole site is lost for good",
        file=sys.stderr,
        flush=True,
    )
    result = run_drill(
        "site-loss",
        rate=args.rate,
        seconds=args.seconds,
        reports_dir=Path(args.reports),
        progress=_drill_progress,
        profile="defaults",
    )
    print(format_table(result))
    print(f"report: {result['report']['html']}")
    return 0 if result["passed"] else 1


def register(sub: Commands) -> None:
    from infra.drills.run import DEFAULT_RATE, KINDS, PROFILES

    reports_default = str(Path(__file__).resolve().parents[2] / "reports")
    drill = sub.add_parser("drill", help="one fault under load: RTO, RPO, audit, report")
    drill.add_argument(
        "kind",
        choices=KINDS,
        help="the fault (infra/drills/run.py); coordinator-loss kills every ZooKeeper member at "
        "once, the coordinator lost as a service (one member lost: witness-loss, site-loss)",
    )
    drill.add_argument("--rate", type=float, default=DEFAULT_RATE, help="requests per second")
    drill.add_argument(
        "--seconds",
        type=float,
        default=12.0,
        help="length of the load (at least 20 s on the defaults profile but for replay, and "
        "for the site drills)",
    )
    drill.add_argument("--repeat", type=int, default=1)
    drill.add_argument("--mode", choices=["sync", "async"], default="sync")
    drill.add_argument(
        "--profile",
        choices=list(PROFILES),
        default="defaults",
        help="defaults (the default): three sites (primary, standby, witness; a PostgreSQL "
        "server and a ZooKeeper member each) on the product's settings (health 1 s, failover "
        "5 s, session 2 s, strict), at least 20 s of load; tuned: the same three sites on "
        "sub-second timings (health 100 ms, failover 500 ms, session 600 ms), still strict; "
        "tuned-degrade: two regions, sub-second timings and the degrade policy, so RPO is "
        "not guaranteed while degraded (not for site-loss, witness-loss, majority-loss)",
    )
    drill.add_argument("--reports", default=reports_default, help="where reports are written")
    drill.add_argument("--json", action="store_true")
    drill.set_defaults(handler=cmd_drill)

    drills = sub.add_parser("drills", help="every drill kind, repeatedly, with one summary")
    drills.add_argument(
        "--schedule",
        choices=sorted(SCHEDULES),
        default="weekly",
        help="daily: one of each kind; weekly: and 20 unplanned; monthly: 3 of each, 50 unplanned",
    )
    drills.add_argument("--each", type=int, help="drills of every kind (overrides the schedule)")
    drills.add_argument("--unplanned", type=int, help="unplanned drills in all")
    drills.add_argument("--rate", type=float, default=DEFAULT_RATE)
    drills.add_argument("--seconds", type=float, default=12.0)
    drills.add_argument(
        "--profile",
        choices=list(PROFILES),
        default="defaults",
        help="as for `drill` (tuned-degrade: the site drills are left out)",
    )
    drills.add_argument("--reports", default=reports_default)
    drills.add_argument("--dry-run", action="store_true", help="list the drills, run none")
    drills.add_argument("--json", action="store_true")
    drills.set_defaults(handler=cmd_drills)

    demo = sub.add_parser(
        "demo", help="the site-loss drill under load on the product's defaults (RTO/RPO, quorum)"
    )
    demo.add_argument(
        "--engine", action="store_true", help="instead: the matching engine and recovery demo"
    )
    demo.add_argument("--commands", type=int, default=20_000, help="with --engine")
    demo.add_argument("--rate", type=float, default=DEFAULT_RATE)
    demo.add_argument("--seconds", type=float, default=20.0)
    demo.add_argument("--reports", default=reports_default)
    demo.set_defaults(handler=cmd_demo)
