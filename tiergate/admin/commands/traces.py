"""`tiergate traces export --format jsonl|parquet --out FILE` and `tiergate traces purge` (retention)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tiergate.admin.direct import CONFIG_HELP, fail, run_against_database


def _config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help=CONFIG_HELP)


def cmd_export(args: argparse.Namespace) -> int:
    from tiergate.admin import trace_search
    from tiergate.admin.reports import parse_time

    if args.format == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            return fail(
                "Parquet export needs pyarrow: pip install 'tiergate[learning]' (or use --format jsonl)"
            )
    try:
        since = parse_time(args.since, "since") if args.since else None
        until = parse_time(args.until, "until") if args.until else None
    except ValueError as exc:
        return fail(str(exc))
    out = Path(args.out)
    if not out.parent.is_dir():
        return fail(f"the directory of {out} does not exist")
    query = trace_search.TraceQuery(args.tenant, args.domain, args.tier, since, until)

    async def work(settings: Any, engine: Any) -> int:
        return await trace_search.export(engine, query, args.format, out)

    count = run_against_database(args, work)
    print(f"wrote {count} trace(s) to {out}", file=sys.stderr)
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    from tiergate.admin import trace_search

    async def work(settings: Any, engine: Any) -> Any:
        days = settings.learning.traces.retention_days
        return await trace_search.purge(engine, days, int(time.time() * 1000), dry_run=args.dry_run), days

    purged, days = run_against_database(args, work)
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "default_retention_days": days, **asdict(purged)}))
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    print(
        f"{verb} {purged.traces} trace(s) past retention (default {days} days); "
        f"content removed from {purged.evaluations} evaluation(s) and {purged.feedback} feedback comment(s)"
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("traces", help="export traces, apply their retention")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = actions.add_parser("export", help="every matching trace, oldest first, to a file")
    export.add_argument("--format", required=True, choices=["jsonl", "parquet"])
    export.add_argument("--out", required=True, help="the file to write")
    export.add_argument("--tenant", help="only this tenant's traces")
    export.add_argument("--since", help="ISO date or date-time, inclusive")
    export.add_argument("--until", help="ISO date or date-time, exclusive")
    export.add_argument("--domain")
    export.add_argument("--tier", choices=["student", "ta", "teacher", "supervisor"])
    _config(export)
    export.set_defaults(func=cmd_export)
    purge = actions.add_parser(
        "purge",
        help="delete traces past their tenant's retention; remove evaluation and feedback content as old",
    )
    purge.add_argument("--dry-run", dest="dry_run", action="store_true", help="count, change nothing")
    purge.add_argument("--json", action="store_true")
    _config(purge)
    purge.set_defaults(func=cmd_purge)
