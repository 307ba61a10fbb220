"""`etsypro erase account|buyer|reason`: crypto-shredding from the server's shell (the API erases
accounts too: POST /accounts/{id}/erase). Each deletes the subject's key and records a
SubjectErased tombstone (commands/personal.py); exit 0 printing what was erased, 1 when there is
no such subject (nothing changed)."""

from __future__ import annotations

import json
import sys

from api.settings import Settings


def add_parsers(sub) -> None:
    """`etsypro erase ...` on the CLI's subcommands."""
    from api.cli import _tenant, _uuid

    e = sub.add_parser("erase", help="erase a person's data from the log's readable history (crypto-shredding)")
    kinds = e.add_subparsers(dest="erase", required=True)
    a = kinds.add_parser("account", help="an account: its username, client addresses, the reasons it wrote")
    a.add_argument("account_id", type=_uuid)
    a.set_defaults(func=erase_command)
    b = kinds.add_parser("buyer", help="a shop's buyer, named as its CSV files name them")
    b.add_argument("buyer", help="e.g. 'adal' or 'Ada Lovelace (adal)'")
    b.add_argument("--shop", required=True, type=_uuid)
    b.set_defaults(func=erase_command)
    r = kinds.add_parser("reason", help="the free-text reason of one command (its events' meta.command_id)")
    r.add_argument("command_id")
    r.add_argument("--tenant", required=True, type=_tenant)
    r.set_defaults(func=erase_command)


def erase_command(args) -> int:
    from api.cli import _migrated_engine
    from api.server import use_server_keys
    from domain.errors import CommandRefused, DomainError

    _, engine = _migrated_engine(pool_size=2)
    try:
        use_server_keys(engine, Settings.from_env(), log=lambda m: print(m, file=sys.stderr))  # and the previous one
        result = erase(engine, args)
    except (DomainError, CommandRefused) as e:
        print(f"erase refused, nothing changed: {e}", file=sys.stderr)
        return 1
    finally:
        engine.close()
    print(json.dumps(result.body, indent=2))
    return 0


def erase(engine, args):
    """The erasure `args` ask for, as the operator of the subject's tenant."""
    from eventsourcing.application import AggregateNotFoundError

    from commands.context import CommandContext
    from domain.account import Account
    from domain.errors import NotFound
    from domain.meta import Actor, ActorKind
    from domain.shop import Shop

    def operator(tenant_id: str) -> CommandContext:
        return CommandContext(actor=Actor("operator:erase", ActorKind.SERVICE), tenant_id=tenant_id)

    def tenant_of(aggregate_id, kind: type, what: str) -> str:
        try:
            found = engine.core.repository.get(aggregate_id)
        except AggregateNotFoundError:
            found = None
        if not isinstance(found, kind):
            raise NotFound(f"no {what} {aggregate_id}")
        return found.tenant_id

    vault = engine.identity.vault
    if args.erase == "account":
        ctx = operator(tenant_of(args.account_id, Account, "account"))
        return engine.identity.erase_account(ctx, args.account_id)
    if args.erase == "buyer":
        return vault.erase_buyer(operator(tenant_of(args.shop, Shop, "shop")), args.shop, args.buyer)
    return vault.erase_reason(operator(args.tenant), args.command_id)
