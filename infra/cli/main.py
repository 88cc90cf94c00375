"""`exchange-dr`: one command for operators, drills and benchmarks.

Exit codes: 0 done, 1 failed, 2 usage. Errors print one readable line on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from infra.settings import Settings

Handler = Callable[[argparse.Namespace, Settings], int]


class CliError(Exception):
    """A failure worth one line to the operator (exit 1)."""


def _emit(data: dict[str, Any], as_json: bool, title: str = "") -> None:
    if as_json:
        print(json.dumps(data, sort_keys=False, default=str))
        return
    if title:
        print(title)
    width = max((len(k) for k in data), default=0)
    for key, value in data.items():
        if isinstance(value, float):
            value = f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
        print(f"  {key:<{width}}  {value}")


# -- database --------------------------------------------------------------------------------


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    from alembic import command as alembic_command
    from infra.bootstrap import alembic_config, ensure_database

    dsn = args.dsn or settings.pg_dsn
    revision = args.revision or ("head" if args.action == "upgrade" else "base")
    if args.action == "upgrade":
        ensure_database(dsn)
        alembic_command.upgrade(alembic_config(dsn), revision)
    else:
        alembic_command.downgrade(alembic_config(dsn), revision)
    print(f"database {args.action}d to {revision}")
    return 0


# -- replay and checkpoints ------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from infra.bootstrap import make_shard_app
    from infra.cli.progress import Progress

    app = make_shard_app(settings, args.shard)
    try:
        with Progress("replay", 0) as bar:
            report = app.recover(from_scratch=args.from_scratch, progress=bar.update)
        other = app.recover(from_scratch=not args.from_scratch, upto_seq=report.seq)
    finally:
        app.close()
    matches = other.state_hash == report.state_hash and report.checkpoint_hash_matches is not False
    data = {
        "shard": args.shard,
        "from_scratch": args.from_scratch,
        "from_checkpoint_seq": report.from_checkpoint_seq,
        "seq": report.seq,
        "records": report.records,
        "events": report.events,
        "seconds": round(report.seconds, 4),
        "events_per_second": round(report.events / report.seconds, 1) if report.seconds else 0.0,
        "state_hash": report.state_hash,
        "matches_live": matches,
    }
    _emit(data, args.json, f"replay of {args.shard}")
    return 0 if matches else 1


def cmd_checkpoint(args: argparse.Namespace, settings: Settings) -> int:
    from infra.bootstrap import make_shard_app

    app = make_shard_app(settings, args.shard)
    try:
        app.recover()
        checkpoint = app.checkpoint()
    finally:
        app.close()
    _emit(
        {"shard": args.shard, "seq": checkpoint.seq, "state_hash": checkpoint.state_hash},
        args.json,
        "checkpoint written",
    )
    return 0


def cmd_archive(args: argparse.Namespace, settings: Settings) -> int:
    from infra.wal.archive_cli import archive_shard

    _emit(archive_shard(settings, args.shard), args.json, f"archive of {args.shard}")
    return 0


# -- benchmarks ------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    if args.kind == "matching":
        from infra.bench.matching import run as run_matching

        result: dict[str, Any] = dict(run_matching(args.orders, seed=args.seed))
    elif args.kind == "store":
        from infra.bench.store import run_store

        result = run_store(settings, commands=args.commands, seed=args.seed)
    elif args.kind == "api":
        from infra.bench.api import run_api

        result = run_api(
            settings, seconds=args.seconds, concurrency=args.concurrency, clients=args.clients
        )
    elif args.kind == "replication":
        from infra.bench.replication import run_replication

        result = run_replication(rate=args.rate, seconds=args.seconds, mode=args.mode)
    elif args.kind == "replay":
        from infra.bench.store import run_replay

        result = run_replay(settings, events=args.events, seed=args.seed, keep_db=args.keep_db)
    elif args.kind == "history":
        from infra.bench.history import run_history

        result = run_history(settings, records=args.records, seed=args.seed, keep_db=args.keep_db)
    else:  # pragma: no cover - argparse restricts choices
        raise CliError(f"unknown benchmark {args.kind}")
    _emit(result, args.json, f"bench {args.kind}")
    return 0


# -- REST facade ----------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from infra.api.server import serve

    serve(settings, host=args.host, port=args.port, access_log=args.access_log)
    return 0


def _copy_credentials(settings: Settings) -> None:
    """Accounts and keys must work in every region after a failover: copy them to the others."""
    from infra.bootstrap import copy_credentials

    for region, problem in copy_credentials(settings).items():
        if problem:
            print(
                f"exchange-dr: warning: region {region}: keys not copied ({problem})",
                file=sys.stderr,
            )


def cmd_accounts(args: argparse.Namespace, settings: Settings) -> int:
    from infra.api.keys import KeyStoreError
    from infra.bootstrap import make_key_store

    store = make_key_store(settings)
    try:
        created = store.create_account(args.name)
    except KeyStoreError as exc:
        raise CliError(str(exc)) from None
    finally:
        store.close()
    _copy_credentials(settings)
    _emit(
        {"account": args.name, "created": created},
        args.json,
        "account created" if created else "account already exists",
    )
    return 0


def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    from infra.api.keys import KeyStoreError
    from infra.bootstrap import make_key_store

    store = make_key_store(settings)
    try:
        issued = store.create_key(args.account, "operator" if args.operator else "trader")
    except KeyStoreError as exc:
        raise CliError(str(exc)) from None
    finally:
        store.close()
    _copy_credentials(settings)
    data = {
        "key_id": issued.key_id,
        "account": issued.account,
        "role": issued.role,
        "key": issued.token,
    }
    _emit(data, args.json, "API key created; the key is shown only now, store it safely")
    return 0


# -- projections -----------------------------------------------------------------------------


def cmd_projections_run(args: argparse.Namespace, settings: Settings) -> int:
    from infra.bootstrap import run_projections

    run_projections(settings, region=args.region, shards=args.shard or None)
    return 0


def cmd_projections_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from infra.bootstrap import make_projector
    from infra.cli.progress import Progress

    shards = list(settings.shards())
    if args.shard:
        unknown = [s for s in args.shard if s not in shards]
        if unknown:
            raise CliError(
                f"unknown shard(s) {', '.join(unknown)}; configured: {', '.join(shards)}"
            )
        shards = args.shard
    projector = make_projector(settings)
    with Progress("rebuild", 0) as bar:
        report = projector.rebuild(shards, everything=not args.shard, progress=bar.update)
    data = {
        "shards": ",".join(report.shards),
        "records": report.records,
        "orders": report.orders,
        "trades": report.trades,
        "seconds": round(report.seconds, 3),
        "records_per_second": round(report.records / report.seconds, 1) if report.seconds else 0.0,
    }
    _emit(data, args.json, "read models rebuilt from the WAL store")
    return 0


# -- demo ------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """`make demo`: an unplanned failover under load, with the RTO/RPO table and the report."""
    if args.engine:
        from infra.drills.demo import run_demo

        return run_demo(settings, commands=args.commands)
    from pathlib import Path

    from infra.drills.report import format_table
    from infra.drills.run import run_drill

    print(
        "demo: two regions on this machine, clients placing and cancelling orders at "
        f"{args.rate:g}/s; the primary is killed with SIGKILL after 4 s",
        file=sys.stderr,
        flush=True,
    )
    result = run_drill(
        "unplanned",
        rate=args.rate,
        seconds=args.seconds,
        reports_dir=Path(args.reports),
        progress=_drill_progress,
    )
    print(format_table(result))
    print(f"report: {result['report']['html']}")
    return 0 if result["passed"] else 1


# -- regions -------------------------------------------------------------------------------


def cmd_node(args: argparse.Namespace, settings: Settings) -> int:
    from infra.node.node import run_node

    return run_node(settings, args.region, loglevel=args.loglevel)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from infra.cli.status import collect_status, render_status

    rows = collect_status(settings)
    if args.json:
        print(json.dumps({"shards": rows}, default=str))
    else:
        print(render_status(rows))
    return 0 if all(r["state"] != "unreachable" for r in rows) else 1


def cmd_switchover(args: argparse.Namespace, settings: Settings) -> int:
    import os

    import httpx

    from infra.cli.status import current_leaders

    key = args.key or os.environ.get("EXDR_OPERATOR_KEY", "")
    if not key:
        raise CliError("an operator key is needed: --key or EXDR_OPERATOR_KEY")
    settings.region_named(args.to)
    if args.shard not in settings.shards():
        raise CliError(f"unknown shard {args.shard!r}; configured: {', '.join(settings.shards())}")
    leader = current_leaders(settings).get(args.shard)
    if leader is None:
        raise CliError(f"shard {args.shard} has no leader right now; nothing to switch over")
    if leader["region"] == args.to:
        raise CliError(f"{args.to} already leads shard {args.shard}")
    print(f"Switchover of shard {args.shard}: {leader['region']} ({leader['url']}) -> {args.to}")
    if not args.force:
        if not sys.stdin.isatty():
            raise CliError("refusing without confirmation; pass --force to proceed")
        if input("Proceed? [y/N] ").strip().lower() not in ("y", "yes"):
            print("aborted")
            return 1
    response = httpx.post(
        leader["url"] + "/v1/admin/switchover",
        json={"shard": args.shard, "to": args.to},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    if response.status_code != 200:
        try:
            message = response.json().get("message", response.text)
        except ValueError:
            message = response.text
        raise CliError(f"switchover refused ({response.status_code}): {message}")
    result = response.json()
    print(f"drained and handed over at seq {result['seq']} in {result['drained_in_s']}s")
    import time

    from infra.cli.status import collect_status, render_status

    time.sleep(0.5)
    print(render_status(collect_status(settings)))
    return 0


def _drill_progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def _seconds(value: object) -> str:
    return "-" if value is None else f"{value}s"


def _public(result: dict[str, Any]) -> dict[str, Any]:
    """A drill's report without its raw timeline (that is in the JSON file)."""
    return {k: v for k, v in result.items() if k != "timeline"}


def cmd_drill(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

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


SCHEDULES = {
    # cadence: (drills of every kind, extra unplanned drills)
    "daily": (1, 0),
    "weekly": (1, 19),
    "monthly": (3, 47),
}


def cmd_drills(args: argparse.Namespace, settings: Settings) -> int:
    """Every kind, repeatedly; one summary (`make drills`, the drill schedule)."""
    import datetime as dt
    from pathlib import Path

    from infra.drills.report import format_summary, summarize
    from infra.drills.run import KINDS, run_drill

    each, extra_unplanned = SCHEDULES[args.schedule]
    if args.each is not None:
        each = args.each
    if args.unplanned is not None:
        extra_unplanned = max(0, args.unplanned - each)
    plan = [k for k in KINDS for _ in range(each)] + ["unplanned"] * extra_unplanned
    if not plan:
        raise CliError("nothing to run: --each and --unplanned are both 0")
    if args.dry_run:
        counts = {k: plan.count(k) for k in dict.fromkeys(plan)}
        print(
            f"schedule {args.schedule}: {len(plan)} drills at {args.rate:g} requests/s, "
            f"{args.seconds:g}s of load each: "
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


# -- parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exchange-dr", description="Disaster-recovery core of a crypto futures exchange."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO on stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="schema migrations (Alembic)")
    db.add_argument("action", choices=["upgrade", "downgrade"])
    db.add_argument("revision", nargs="?")
    db.add_argument("--dsn", help="PostgreSQL URL (default: EXDR_PG_DSN)")
    db.set_defaults(handler=cmd_db)

    replay = sub.add_parser("replay", help="rebuild a shard's state from its WAL and compare")
    replay.add_argument("--shard", required=True)
    replay.add_argument("--from-scratch", action="store_true", help="ignore checkpoints")
    replay.add_argument("--json", action="store_true")
    replay.set_defaults(handler=cmd_replay)

    checkpoint = sub.add_parser("checkpoint", help="write a shard checkpoint now")
    checkpoint.add_argument("--shard", required=True)
    checkpoint.add_argument("--json", action="store_true")
    checkpoint.set_defaults(handler=cmd_checkpoint)

    archive = sub.add_parser(
        "archive", help="move a shard's records past the retention window to the archive now"
    )
    archive.add_argument("--shard", required=True)
    archive.add_argument("--json", action="store_true")
    archive.set_defaults(handler=cmd_archive)

    bench = sub.add_parser("bench", help="benchmarks; each prints one JSON object with --json")
    bench.add_argument(
        "kind", choices=["matching", "store", "replay", "replication", "api", "history"]
    )
    bench.add_argument("--records", type=int, default=200_000, help="history: WAL records")
    bench.add_argument("--orders", type=int, default=200_000, help="matching: orders")
    bench.add_argument("--commands", type=int, default=20_000, help="store: commands")
    bench.add_argument("--events", type=int, default=100_000, help="replay: events")
    bench.add_argument("--seconds", type=float, default=10.0, help="api: measured seconds")
    bench.add_argument("--concurrency", type=int, default=64, help="api: requests in flight")
    bench.add_argument("--clients", type=int, default=2, help="api: client processes")
    bench.add_argument("--rate", type=float, default=1000.0, help="replication: commands/s")
    bench.add_argument(
        "--mode",
        choices=["sync", "async"],
        default="sync",
        help="replication: acknowledgement mode",
    )
    bench.add_argument("--seed", type=int, default=1)
    bench.add_argument(
        "--keep-db",
        metavar="NAME",
        help="replay, history: keep the generated database exdr_bench_NAME and reuse it",
    )
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(handler=cmd_bench)

    serve = sub.add_parser("serve", help="serve the REST facade for every configured shard")
    serve.add_argument("--host", help="default: EXDR_API_HOST")
    serve.add_argument("--port", type=int, help="default: EXDR_API_PORT")
    serve.add_argument("--access-log", action="store_true")
    serve.set_defaults(handler=cmd_serve)

    accounts = sub.add_parser("accounts", help="accounts of the REST facade")
    accounts_sub = accounts.add_subparsers(dest="action", required=True)
    accounts_create = accounts_sub.add_parser("create", help="register an account name")
    accounts_create.add_argument("name")
    accounts_create.add_argument("--json", action="store_true")
    accounts_create.set_defaults(handler=cmd_accounts)

    keys = sub.add_parser("keys", help="API keys (stored hashed; the key is shown once)")
    keys_sub = keys.add_subparsers(dest="action", required=True)
    keys_create = keys_sub.add_parser("create", help="issue an API key for an account")
    keys_create.add_argument("--account", required=True)
    keys_create.add_argument("--operator", action="store_true", help="operator role")
    keys_create.add_argument("--json", action="store_true")
    keys_create.set_defaults(handler=cmd_keys)

    node = sub.add_parser("node", help="run one region: shards, REST facade, relay/replicator")
    node.add_argument("--region", required=True)
    node.add_argument("--loglevel", default="warn", choices=["crit", "error", "warn", "info"])
    node.set_defaults(handler=cmd_node)

    status = sub.add_parser("status", help="one row per shard and region: role, epoch, seq, lag")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=cmd_status)

    projections = sub.add_parser(
        "projections", help="read models (orders, trades, positions, balances) fed from the WAL"
    )
    projections_sub = projections.add_subparsers(dest="action", required=True)
    projections_run = projections_sub.add_parser(
        "run", help="run the projector worker (Faust) for the configured shards"
    )
    projections_run.add_argument(
        "--region",
        help="region whose views these are: its database (EXDR_REGIONS) and consumer "
        "group; default: EXDR_PG_DSN, EXDR_REGION",
    )
    projections_run.add_argument("--shard", action="append", help="only this shard (repeatable)")
    projections_run.set_defaults(handler=cmd_projections_run)
    projections_rebuild = projections_sub.add_parser(
        "rebuild", help="empty the views and rebuild them from the WAL store"
    )
    projections_rebuild.add_argument(
        "--shard", action="append", help="only this shard's rows (repeatable)"
    )
    projections_rebuild.add_argument("--json", action="store_true")
    projections_rebuild.set_defaults(handler=cmd_projections_rebuild)

    switch = sub.add_parser("switchover", help="planned hand-over of a shard to another region")
    switch.add_argument("--shard", required=True)
    switch.add_argument("--to", required=True, help="region that takes the shard")
    switch.add_argument("--force", action="store_true", help="do not ask for confirmation")
    switch.add_argument("--key", help="operator API key (default: EXDR_OPERATOR_KEY)")
    switch.set_defaults(handler=cmd_switchover)

    from infra.drills.run import DEFAULT_RATE, KINDS

    reports_default = str(Path(__file__).resolve().parents[2] / "reports")
    drill = sub.add_parser("drill", help="one fault under load: RTO, RPO, audit, report")
    drill.add_argument("kind", choices=KINDS)
    drill.add_argument("--rate", type=float, default=DEFAULT_RATE, help="requests per second")
    drill.add_argument("--seconds", type=float, default=12.0, help="length of the load")
    drill.add_argument("--repeat", type=int, default=1)
    drill.add_argument("--mode", choices=["sync", "async"], default="sync")
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
    drills.add_argument("--reports", default=reports_default)
    drills.add_argument("--dry-run", action="store_true", help="list the drills, run none")
    drills.add_argument("--json", action="store_true")
    drills.set_defaults(handler=cmd_drills)

    demo = sub.add_parser(
        "demo", help="an unplanned failover drill under load on the local servers (RTO/RPO)"
    )
    demo.add_argument(
        "--engine", action="store_true", help="instead: the matching engine and recovery demo"
    )
    demo.add_argument("--commands", type=int, default=20_000, help="with --engine")
    demo.add_argument("--rate", type=float, default=DEFAULT_RATE)
    demo.add_argument("--seconds", type=float, default=12.0)
    demo.add_argument("--reports", default=reports_default)
    demo.set_defaults(handler=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        settings = Settings.from_env()
        handler: Handler = args.handler
        return handler(args, settings)
    except KeyboardInterrupt:
        print("exchange-dr: interrupted", file=sys.stderr)
        return 1
    except (CliError, ValueError, OSError) as exc:
        print(f"exchange-dr: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"exchange-dr: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
