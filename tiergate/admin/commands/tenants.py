"""`tiergate tenants create|list|show|update|delete`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from tiergate.admin.direct import add_config, add_limits, announce, fail, fields, output, run_against_database

COLUMNS = ["id", "name", "budget_usd", "budget_period", "rpm", "tpm", "allowed_models", "trace_content"]
LIMITS = (
    "budget_usd",
    "budget_period",
    "rpm",
    "tpm",
    "allowed_models",
    "trace_content",
    "trace_retention_days",
)


def cmd(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from tiergate.admin import store
    from tiergate.admin.schemas import TenantCreate, TenantUpdate
    from tiergate.gateway.errors import GatewayError

    cache: dict[str, Any] = {}
    if getattr(args, "cache", None) is not None:
        try:
            cache["cache"] = json.loads(args.cache)  # `null` too: it removes the override
        except json.JSONDecodeError as exc:
            return fail(f"--cache: not valid JSON ({exc})")
    meta = None
    if getattr(args, "metadata", None):
        try:
            meta = json.loads(args.metadata)
        except json.JSONDecodeError as exc:
            return fail(f"--metadata: not valid JSON ({exc})")

    async def work(settings: Any, engine: Any) -> Any:
        if args.action == "create":
            new = TenantCreate(name=args.name, metadata=meta, **fields(args, LIMITS), **cache)
            await store.check_limits(engine, settings, new)
            return [store.tenant_out(await store.create_tenant(engine, new, settings.cache))]
        if args.action == "list":
            return [store.tenant_out(t) for t in await store.list_tenants(engine)]
        if args.action == "show":
            return [store.tenant_out(await store.get_tenant(engine, args.id))]
        if args.action == "update":
            changes = fields(args, (*LIMITS, "name"))
            update = TenantUpdate(**changes, **cache)
            await store.check_limits(engine, settings, update)
            tenant = await store.update_tenant(engine, args.id, update, settings.cache)
            await announce(settings, tenant_ids=[args.id])
            return [store.tenant_out(tenant)]
        if args.action == "purge-cache":
            tenant = await store.purge_cache(engine, args.id)
            await announce(settings, tenant_ids=[args.id])
            return [store.tenant_out(tenant)]
        await store.delete_tenant(engine, args.id)
        await announce(settings, tenant_ids=[args.id])
        return []

    try:
        tenants = run_against_database(args, work)
    except ValidationError as exc:
        return fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    except GatewayError as exc:
        return fail(exc.message)
    if args.action == "delete":
        print(f"deleted {args.id}; its keys no longer work")
        return 0
    docs = [t.model_dump() for t in tenants]
    output(args, docs if args.action == "list" else docs[0], docs, COLUMNS)
    return 0


def add_trace_policy(parser: argparse.ArgumentParser, *, clearable: bool) -> None:
    parser.add_argument("--trace-content", dest="trace_content", choices=["full", "redacted", "none"],
                        help="what traces keep of this tenant's requests (default: the config's)")  # fmt: skip
    parser.add_argument("--trace-retention-days", dest="trace_retention_days", type=int,
                        help="days this tenant's traces are kept (default: the config's)")  # fmt: skip
    if clearable:
        for name in ("trace_content", "trace_retention_days"):
            parser.add_argument(f"--no-{name.replace('_', '-')}", dest=f"clear_{name}", action="store_true",
                                help="back to the config's default")  # fmt: skip


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("tenants", help="create, list, change and delete tenants")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="a new tenant")
    create.add_argument("name")
    create.add_argument("--metadata", help="a JSON object")
    add_limits(create, clearable=False)
    listing = actions.add_parser("list", help="every tenant")
    show = actions.add_parser("show", help="one tenant")
    show.add_argument("id")
    update = actions.add_parser("update", help="change a tenant's name or limits")
    update.add_argument("id")
    update.add_argument("--name")
    add_limits(update, clearable=True)
    delete = actions.add_parser("delete", help="delete a tenant (its keys stop working; its ledger stays)")
    delete.add_argument("id")
    purge = actions.add_parser("purge-cache", help="stop serving every answer cached for a tenant")
    purge.add_argument("id")
    for p, clearable in ((create, False), (update, True)):
        add_trace_policy(p, clearable=clearable)
        p.add_argument("--cache", metavar="JSON",
                       help='override of the config\'s cache policy, e.g. \'{"exact": {"enabled": false}}\''
                       + ("; replaces the previous one, null removes it" if clearable else ""))  # fmt: skip
    for p in (create, listing, show, update, delete, purge):
        add_config(p)
        p.set_defaults(func=cmd)
