"""`exchange-dr switchover --shard S --to R`: a planned hand-over, confirmed unless --force."""

from __future__ import annotations

import argparse
import sys

from infra.cli.common import CliError, Commands
from infra.settings import Settings


def cmd_switchover(args: argparse.Namespace, settings: Settings) -> int:
    import time

    import httpx

    from infra.cli.status import collect_status, current_leaders, render_status

    key = args.key or settings.operator_key
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
    time.sleep(0.5)
    print(render_status(collect_status(settings)))
    return 0


def register(sub: Commands) -> None:
    switch = sub.add_parser("switchover", help="planned hand-over of a shard to another region")
    switch.add_argument("--shard", required=True)
    switch.add_argument("--to", required=True, help="region that takes the shard")
    switch.add_argument("--force", action="store_true", help="do not ask for confirmation")
    switch.add_argument("--key", help="operator API key (default: EXDR_OPERATOR_KEY)")
    switch.set_defaults(handler=cmd_switchover)
