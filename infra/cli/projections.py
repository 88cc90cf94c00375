"""`exchange-dr projections run|rebuild`: the read models fed from the WAL."""

from __future__ import annotations

import argparse

from infra.cli.common import CliError, Commands, emit
from infra.settings import Settings


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
    upto: dict[str, int] | None = None
    if args.to == "confirmed":
        from projections.read_models.confirmed import read_confirmed

        # what the node's projection would show: records a failover can take back stay out
        points = {shard: read_confirmed(projector.sessions, shard) for shard in shards}
        upto = {shard: 0 if point is None else point.seq for shard, point in points.items()}
    with Progress("rebuild", 0) as bar:
        report = projector.rebuild(
            shards, everything=not args.shard, progress=bar.update_to, upto=upto
        )
    data = {
        "to": args.to,
        "upto": ",".join(f"{shard}:{seq}" for shard, seq in sorted((upto or {}).items())),
        "shards": ",".join(report.shards),
        "records": report.records,
        "orders": report.orders,
        "trades": report.trades,
        "seconds": round(report.seconds, 3),
        "records_per_second": round(report.records / report.seconds, 1) if report.seconds else 0.0,
    }
    emit(data, args.json, "read models rebuilt from the WAL store")
    return 0


def register(sub: Commands) -> None:
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
    projections_rebuild.add_argument(
        "--to",
        choices=("confirmed", "head"),
        default="confirmed",
        help="confirmed (default): up to each shard's confirmed point in this database, as "
        "the node projects (a shard with none recorded is emptied and refills as its node "
        "confirms records); head: every record in the store, confirmed or not",
    )
    projections_rebuild.add_argument("--json", action="store_true")
    projections_rebuild.set_defaults(handler=cmd_projections_rebuild)
