"""`exchange-dr serve`: the REST facade alone, for every configured shard."""

from __future__ import annotations

import argparse

from infra.cli.common import Commands
from infra.settings import Settings


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from infra.api.server import serve

    serve(settings, host=args.host, port=args.port, access_log=args.access_log)
    return 0


def register(sub: Commands) -> None:
    serve = sub.add_parser("serve", help="serve the REST facade for every configured shard")
    serve.add_argument("--host", help="default: EXDR_API_HOST")
    serve.add_argument("--port", type=int, help="default: EXDR_API_PORT")
    serve.add_argument("--access-log", action="store_true")
    serve.set_defaults(handler=cmd_serve)
