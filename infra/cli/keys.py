"""`exchange-dr keys revoke`: a key stops working in every region, for good."""

from __future__ import annotations

import argparse
import json
import sys

from infra.settings import Settings


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from infra.bootstrap import revoke_everywhere

    results = revoke_everywhere(settings, args.key_id)
    unreachable = {r: v for r, v in results.items() if isinstance(v, str)}
    known = [r for r, v in results.items() if isinstance(v, bool)]
    if args.json:
        print(json.dumps({"key_id": args.key_id, "regions": results}))
    else:
        for region, outcome in results.items():
            print(f"  {region:<12} {_outcome(outcome)}")
    if unreachable:
        names = ", ".join(unreachable)
        print(
            f"exchange-dr: key {args.key_id} NOT revoked in {names}: run the command again "
            "once they answer",
            file=sys.stderr,
        )
        return 1
    if not known:
        print(f"exchange-dr: no key {args.key_id!r} in any region", file=sys.stderr)
        return 1
    if not args.json:
        print(
            f"key {args.key_id} revoked; every region refuses it within "
            f"{settings.security.key_cache_ttl_s:g} s (the key cache's TTL)"
        )
    return 0


def _outcome(outcome: bool | str | None) -> str:
    if isinstance(outcome, str):
        return f"NOT REACHED ({outcome})"
    return {True: "revoked", False: "already revoked", None: "no such key"}[outcome]
