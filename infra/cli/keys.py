"""`exchange-dr accounts create` and `keys create`: who may call the REST facade."""

from __future__ import annotations

import argparse
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
        issued = store.create_key(args.account, "operator" if args.operator else "trader")
    except KeyStoreError as exc:
        raise CliError(str(exc)) from None
    finally:
        store.close()
    _copy_credentials(settings)
    data = {
        "key_id": issued.key_id,
        "account": issued.account,
        "role": issued.role,
        "key": issued.token,
    }
    emit(data, args.json, "API key created; the key is shown only now, store it safely")
    return 0


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
    keys_create.add_argument("--json", action="store_true")
    keys_create.set_defaults(handler=cmd_keys)
