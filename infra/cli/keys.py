"""`exchange-dr accounts create`, `keys create` and `keys revoke`: who may call the REST facade."""

from __future__ import annotations

import argparse
import json
import sys

from infra.cli.common import CliError, Commands, emit
from infra.settings import Settings


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
    emit(
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
        issued = store.create_key(
            args.account, "operator" if args.operator else "trader", funding=args.funding
        )
    except KeyStoreError as exc:
        raise CliError(str(exc)) from None
    finally:
        store.close()
    _copy_credentials(settings)
    data = {
        "key_id": issued.key_id,
        "account": issued.account,
        "role": issued.role,
        "funding": issued.funding,
        "key": issued.token,
    }
    emit(data, args.json, "API key created; the key is shown only now, store it safely")
    return 0


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


def register(sub: Commands) -> None:
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
    keys_create.add_argument(
        "--funding", action="store_true", help="may deposit and withdraw (trading keys may not)"
    )
    keys_create.add_argument("--json", action="store_true")
    keys_create.set_defaults(handler=cmd_keys)

    keys_revoke = keys_sub.add_parser("revoke", help="revoke a key in every region, for good")
    keys_revoke.add_argument("key_id", help="the key's id (ak_..., the part before the dot)")
    keys_revoke.add_argument("--json", action="store_true")
    keys_revoke.set_defaults(handler=cmd_keys_revoke)
