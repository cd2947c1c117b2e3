"""`tiergate keys create|list|show|update|revoke|rotate`."""

from __future__ import annotations

import argparse
from typing import Any

from tiergate.admin.direct import add_config, add_limits, announce, fail, fields, output, run_against_database

COLUMNS = [
    "id",
    "tenant_id",
    "name",
    "prefix",
    "status",
    "budget_usd",
    "budget_period",
    "rpm",
    "tpm",
    "expires_at",
]
LIMITS = ("budget_usd", "budget_period", "rpm", "tpm", "allowed_models")


def cmd(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from tiergate.admin import store
    from tiergate.admin.schemas import KeyCreate, KeyUpdate
    from tiergate.gateway.errors import GatewayError

    async def work(settings: Any, engine: Any) -> Any:
        if args.action == "create":
            body = KeyCreate(
                tenant_id=args.tenant, name=args.name, expires_at=args.expires_at, **fields(args, LIMITS)
            )
            await store.check_limits(engine, settings, body)
            key, secret = await store.create_key(engine, body)
            await announce(settings, key_ids=[key.id])
            return [{**store.key_out(key), "key": secret}]
        if args.action == "list":
            return [store.key_out(k) for k in await store.list_keys(engine, args.tenant)]
        if args.action == "show":
            return [store.key_out(await store.get_key(engine, args.id))]
        if args.action == "update":
            update = KeyUpdate(**fields(args, (*LIMITS, "name", "expires_at")))
            await store.check_limits(engine, settings, update)
            key = await store.update_key(engine, args.id, update)
            await announce(settings, key_ids=[args.id])
            return [store.key_out(key)]
        if args.action == "revoke":
            key = await store.revoke_key(engine, args.id)
            await announce(settings, key_ids=[args.id])
            return [store.key_out(key)]
        grace = args.grace_s if args.grace_s is not None else settings.accounting.rotation_grace_s
        new, secret, old = await store.rotate_key(engine, args.id, grace)
        await announce(settings, key_ids=[old.id, new.id])
        return [{**store.key_out(new), "key": secret}, store.key_out(old)]

    try:
        keys = run_against_database(args, work)
    except ValidationError as exc:
        return fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    except GatewayError as exc:
        return fail(exc.message)
    if args.action in ("create", "rotate") and not args.json:
        print(f"key: {keys[0]['key']}\n(shown once: store it now; tiergate keeps only its hash)")
        if args.action == "rotate":
            print(f"the old key {keys[1]['id']} keeps working until {keys[1]['expires_at']}")
    output(args, keys if args.action in ("list", "rotate") else keys[0], keys, COLUMNS)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("keys", help="create, list, change, revoke and rotate virtual keys")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="a new key for a tenant (the secret is printed once)")
    create.add_argument("--tenant", required=True, help="tenant id")
    create.add_argument("--name")
    create.add_argument("--expires-at", dest="expires_at", help="ISO 8601 date-time")
    add_limits(create, clearable=False)
    listing = actions.add_parser("list", help="keys, of one tenant with --tenant")
    listing.add_argument("--tenant")
    show = actions.add_parser("show", help="one key")
    show.add_argument("id")
    update = actions.add_parser("update", help="change a key's limits")
    update.add_argument("id")
    update.add_argument("--name")
    update.add_argument("--expires-at", dest="expires_at")
    add_limits(update, clearable=True)
    revoke = actions.add_parser("revoke", help="revoke a key (refused everywhere within a second)")
    revoke.add_argument("id")
    rotate = actions.add_parser("rotate", help="a new key; the old one keeps working for a grace period")
    rotate.add_argument("id")
    rotate.add_argument("--grace-s", dest="grace_s", type=float, help="seconds the old key keeps working")
    for p in (create, listing, show, update, revoke, rotate):
        add_config(p)
        p.set_defaults(func=cmd)
