"""`exchange-dr node --region R`: one region's process (shards, REST facade, replication)."""

from __future__ import annotations

import argparse

from infra.cli.common import Commands
from infra.settings import Settings


def cmd_node(args: argparse.Namespace, settings: Settings) -> int:
    from infra.node.run import run_node

    return run_node(settings, args.region, loglevel=args.loglevel)


def register(sub: Commands) -> None:
    node = sub.add_parser("node", help="run one region: shards, REST facade, relay/replicator")
    node.add_argument("--region", required=True)
    node.add_argument("--loglevel", default="warn", choices=["crit", "error", "warn", "info"])
    node.set_defaults(handler=cmd_node)
