"""`tiergate models register|list|activate|deactivate|remove`: candidate models, shadowed on their tier's
traffic until activated."""

from __future__ import annotations

import argparse
from typing import Any

from tiergate.admin.direct import add_config, fail, output, run_against_database

COLUMNS = [
    "id",
    "tier",
    "model",
    "api_base",
    "api_key_env",
    "input_cost_per_mtok",
    "output_cost_per_mtok",
    "status",
]


def cmd(args: argparse.Namespace) -> int:
    from tiergate.admin import models
    from tiergate.gateway.errors import GatewayError

    async def work(settings: Any, engine: Any) -> list[dict[str, Any]]:
        if args.action == "register":
            row = await models.register(
                engine,
                tier=args.tier,
                model=args.model,
                api_base=args.api_base,
                api_key_env=args.api_key_env,
                input_cost_per_mtok=args.input_cost_per_mtok,
                output_cost_per_mtok=args.output_cost_per_mtok,
            )
            return [models.model_out(row)]
        if args.action == "list":
            return [models.model_out(r) for r in await models.list_models(engine)]
        if args.action == "activate":
            return [models.model_out(await models.activate(engine, args.id))]
        if args.action == "deactivate":
            return [models.model_out(await models.deactivate(engine, args.id))]
        return [models.model_out(await models.remove(engine, args.id))]

    try:
        rows = run_against_database(args, work)
    except GatewayError as exc:
        return fail(exc.message)
    if args.action == "remove":
        print(f"removed {args.id}; gateways stop using it at their next refresh")
        return 0
    output(args, rows if args.action == "list" else rows[0], rows, COLUMNS)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("models", help="register candidate models (e.g. a newly trained student)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    new = actions.add_parser(
        "register",
        help="add a candidate deployment: it serves no traffic; shadow evaluation compares it on its tier's traffic",
    )
    new.add_argument("--tier", required=True, choices=["student", "ta", "teacher", "supervisor"])
    new.add_argument("--model", required=True, help="the model name the server expects")
    new.add_argument(
        "--api-base", dest="api_base", required=True, help="its OpenAI-compatible base URL (…/v1)"
    )
    new.add_argument("--api-key-env", dest="api_key_env",
                     help="the environment variable holding its API key in every gateway (never stored)")  # fmt: skip
    new.add_argument("--input-cost-per-mtok", dest="input_cost_per_mtok", type=float, default=0.0)
    new.add_argument("--output-cost-per-mtok", dest="output_cost_per_mtok", type=float, default=0.0)
    listing = actions.add_parser("list", help="every registered model")
    activate = actions.add_parser(
        "activate",
        help="let a registered model serve its tier's traffic (every gateway, at its next refresh)",
    )
    deactivate = actions.add_parser(
        "deactivate", help="take an active model back to candidate (shadowed only)"
    )
    remove = actions.add_parser("remove", help="forget a registered model")
    for p in (activate, deactivate, remove):
        p.add_argument("id")
    for p in (new, listing, activate, deactivate, remove):
        add_config(p)
        p.set_defaults(func=cmd)
