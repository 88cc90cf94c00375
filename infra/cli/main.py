"""`exchange-dr`: one command for operators, drills and benchmarks.

The parser and the dispatch; each command group lives in a module of its own next to this one.
Exit codes: 0 done, 1 failed, 2 usage. Errors print one readable line on stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from infra.cli import bench, db, drills, keys, node, projections, replay, serve, status, switchover
from infra.cli.common import CliError, Handler
from infra.settings import Settings

# in the order `exchange-dr --help` lists them
GROUPS = (db, replay, bench, serve, keys, node, status, projections, switchover, drills)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exchange-dr", description="Disaster-recovery core of a crypto futures exchange."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO on stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
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
