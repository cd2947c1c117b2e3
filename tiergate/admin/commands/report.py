"""`tiergate report cost [--group-by G] [--start D] [--end D] [--tenant ID] [--csv|--json]`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tiergate.admin.direct import CONFIG_HELP, fail, run_against_database, table
from tiergate.admin.reports import COLUMNS


def cmd_cost(args: argparse.Namespace) -> int:
    from tiergate.admin import reports
    from tiergate.admin.api import report_query
    from tiergate.gateway.errors import BadRequest, GatewayError

    async def work(settings: Any, engine: Any) -> dict[str, Any]:
        query = report_query(args.group_by, args.start, args.end, tenant_id=args.tenant)
        # The API answers an empty range with an empty report; on the command line it is a typo.
        if query.start_ms is not None and query.end_ms is not None and query.end_ms <= query.start_ms:
            raise BadRequest("'end' must be after 'start'", param="end")
        return await reports.cost_report(engine, settings, query)

    try:
        report = run_against_database(args, work)
    except GatewayError as exc:
        return fail(exc.message)
    if args.csv:
        sys.stdout.write(reports.to_csv(report))
        return 0
    if args.json:
        print(json.dumps(reports.public(report), indent=2))
        return 0
    key = args.group_by or "group"
    rows = [*report["rows"], {key: "TOTAL", **report["total"]}]
    print(table(rows, [key, *COLUMNS]))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("report", help="reports read from the ledger")
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="REPORT")
    cost = kinds.add_parser("cost", help="requests, tokens, cost and what the teacher tier would have cost")
    cost.add_argument("--group-by", dest="group_by", choices=["key", "tenant", "model", "tier", "day"])
    cost.add_argument("--start", help="ISO date or date-time, inclusive")
    cost.add_argument("--end", help="ISO date or date-time, exclusive")
    cost.add_argument("--tenant", help="only this tenant's requests")
    cost.add_argument("--config", help=CONFIG_HELP)
    out = cost.add_mutually_exclusive_group()
    out.add_argument("--csv", action="store_true", help="CSV on standard output")
    out.add_argument("--json", action="store_true")
    cost.set_defaults(func=cmd_cost)
