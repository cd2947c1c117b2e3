"""`tiergate promote [--dry-run] [--json]`: decide promotions and demotions on the stored evidence and write
the next route-table version (admin/jobs/promote.py)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from tiergate.admin.direct import CONFIG_HELP, FAILED, fail, run_against_database, table


def _print(outcome: Any) -> None:
    doc = outcome.as_json()
    rows = []
    for d in doc["domains"]:
        step = d["steps"][0] if d["steps"] else {}
        rows.append(
            {
                "domain": d["domain"],
                "name": d["name"],
                "tier": d["tier"],
                "traffic": d["traffic"],
                "step": f"{step['candidate']}<{step['incumbent']}" if step else None,
                "better/same/worse": f"{step['better']}/{step['same']}/{step['worse']}" if step else None,
                "gap": step.get("gap"),
                "bound": step.get("bound"),
                "shadow": d["shadow_fraction"],
            }
        )
    if rows:
        print(table(rows, list(rows[0])))
        print()
    print(doc["note"])
    if doc["dry_run"]:
        print("\ndry run: nothing written")
    elif doc["written_version"] is not None:
        print(f"\nroute table version {doc['written_version']} written (based on {doc['base_version']})")
    else:
        print(f"\nnothing changed: route table stays at version {doc['base_version']}")


def cmd(args: argparse.Namespace) -> int:
    from tiergate.admin.jobs import promote
    from tiergate.gateway.routing.table_store import VersionConflict

    async def work(settings: Any, engine: Any) -> Any:
        store = promote.open_store(engine)
        return await promote.run_promote(engine, store, settings, dry_run=args.dry_run)

    try:
        outcome = run_against_database(args, work)
    except promote.PromoteError as exc:
        return fail(str(exc))
    except VersionConflict as exc:
        return fail(f"{exc}: other writers kept changing the route table; run again", FAILED)
    if args.json:
        print(json.dumps(outcome.as_json(), indent=2))
    else:
        _print(outcome)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "promote", help="promote or demote domains on the stored evidence; write a new route-table version"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the decisions and the evidence, write nothing"
    )
    parser.add_argument("--config", help=CONFIG_HELP)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=cmd)
