"""`exchange-dr`: one command for operators, drills and benchmarks.

Exit codes: 0 done, 1 failed, 2 usage. Errors print one readable line on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
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
    from infra.progress import Progress

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


# -- benchmarks ------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    if args.kind == "matching":
        from infra.bench_matching import run as run_matching

        result: dict[str, Any] = dict(run_matching(args.orders, seed=args.seed))
    elif args.kind == "store":
        from infra.bench_store import run_store

        result = run_store(settings, commands=args.commands, seed=args.seed)
    elif args.kind == "replay":
        from infra.bench_store import run_replay

        result = run_replay(settings, events=args.events, seed=args.seed)
    else:  # pragma: no cover - argparse restricts choices
        raise CliError(f"unknown benchmark {args.kind}")
    _emit(result, args.json, f"bench {args.kind}")
    return 0


# -- demo ------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from infra.demo import run_demo

    return run_demo(settings, commands=args.commands)


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

    bench = sub.add_parser("bench", help="benchmarks; each prints one JSON object with --json")
    bench.add_argument("kind", choices=["matching", "store", "replay"])
    bench.add_argument("--orders", type=int, default=200_000, help="matching: orders")
    bench.add_argument("--commands", type=int, default=20_000, help="store: commands")
    bench.add_argument("--events", type=int, default=100_000, help="replay: events")
    bench.add_argument("--seed", type=int, default=1)
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(handler=cmd_bench)

    demo = sub.add_parser("demo", help="run the main demonstration on the local servers")
    demo.add_argument("--commands", type=int, default=20_000)
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
