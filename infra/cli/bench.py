"""`exchange-dr bench <kind>`: benchmarks, one JSON object each with --json."""

from __future__ import annotations

import argparse
from typing import Any

from infra.cli.common import CliError, Commands, emit
from infra.settings import Settings


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
    elif args.kind == "quorum":
        from infra.bench.quorum import run_quorum

        result = run_quorum(rate=args.rate, seconds=args.seconds)
    elif args.kind == "replay":
        from infra.bench.store import run_replay

        result = run_replay(settings, events=args.events, seed=args.seed, keep_db=args.keep_db)
    elif args.kind == "history":
        from infra.bench.history import run_history

        result = run_history(
            settings,
            records=args.records,
            seed=args.seed,
            keep_db=args.keep_db,
            retain_records=args.retain_records,
        )
    elif args.kind == "http":
        from infra.bench.http_clients import run_http_clients

        result = run_http_clients(requests=args.requests)
    else:  # pragma: no cover - argparse restricts choices
        raise CliError(f"unknown benchmark {args.kind}")
    emit(result, args.json, f"bench {args.kind}")
    return 0


def register(sub: Commands) -> None:
    bench = sub.add_parser("bench", help="benchmarks; each prints one JSON object with --json")
    bench.add_argument(
        "kind",
        choices=["matching", "store", "replay", "replication", "quorum", "api", "http", "history"],
    )
    bench.add_argument("--records", type=int, default=200_000, help="history: WAL records")
    bench.add_argument(
        "--retain-records",
        type=int,
        default=100_000,
        help="history: records that stay live; the older ones are archived before the start",
    )
    bench.add_argument("--orders", type=int, default=200_000, help="matching: orders")
    bench.add_argument("--commands", type=int, default=20_000, help="store: commands")
    bench.add_argument("--events", type=int, default=100_000, help="replay: events")
    bench.add_argument("--seconds", type=float, default=10.0, help="api: measured seconds")
    bench.add_argument("--concurrency", type=int, default=64, help="api: requests in flight")
    bench.add_argument("--clients", type=int, default=2, help="api: client processes")
    bench.add_argument("--rate", type=float, default=1000.0, help="replication, quorum: commands/s")
    bench.add_argument(
        "--mode",
        choices=["sync", "async"],
        default="sync",
        help="replication: acknowledgement mode",
    )
    bench.add_argument(
        "--requests", type=int, default=3000, help="http: requests per client and round"
    )
    bench.add_argument("--seed", type=int, default=1)
    bench.add_argument(
        "--keep-db",
        metavar="NAME",
        help="replay, history: keep the generated database exdr_bench_NAME and reuse it",
    )
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(handler=cmd_bench)
