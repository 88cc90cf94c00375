"""`exchange-dr db upgrade|downgrade`: schema migrations (Alembic)."""

from __future__ import annotations

import argparse

from infra.cli.common import Commands
from infra.settings import Settings


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


def register(sub: Commands) -> None:
    db = sub.add_parser("db", help="schema migrations (Alembic)")
    db.add_argument("action", choices=["upgrade", "downgrade"])
    db.add_argument("revision", nargs="?")
    db.add_argument("--dsn", help="PostgreSQL URL (default: EXDR_PG_DSN)")
    db.set_defaults(handler=cmd_db)
