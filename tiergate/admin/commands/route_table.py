"""`tiergate route-table show|history|put|rollback`: the versioned route table, on the database directly.

Writes follow the admin API's rules (the same validation, append-only, `--base-version` conditional); running
gateways install a new version within `routing.refresh_s`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tiergate.admin.direct import add_config, fail, output, run_against_database
from tiergate.policies.route_table import Sampling

HISTORY_COLUMNS = ["version", "created_at", "author", "domains", "note"]
ROUTE_COLUMNS = ["domain", "tier", "centroid", "shadow"]


def load_document(path: str) -> dict[str, Any]:
    """A route-table document from a .json, .yaml or .yml file; ValueError says what is wrong with it."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise ValueError(f"{path}: a route table file must end in .json, .yaml or .yml")
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror or exc}") from None
    if suffix == ".json":
        import orjson

        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from None
    else:
        import yaml

        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: the route table must be an object with 'routes'")
    return doc


def cmd(args: argparse.Namespace) -> int:
    from tiergate.admin import route_tables
    from tiergate.admin.store import iso
    from tiergate.gateway.errors import GatewayError
    from tiergate.gateway.routing.table_store import SqlRouteTableStore, StoredRouteTable

    body: dict[str, Any] = {}
    if args.action == "put":
        try:
            body = load_document(args.file)
        except ValueError as exc:
            return fail(str(exc))
        if args.base_version is not None:
            body["base_version"] = args.base_version
        if args.note is not None:
            body["note"] = args.note

    async def work(settings: Any, engine: Any) -> list[StoredRouteTable | None]:
        store = SqlRouteTableStore(engine)
        dimensions = settings.routing.domains.dimensions
        if args.action == "show":
            return [await store.get(args.version)]
        if args.action == "history":
            return list(await store.history(args.limit))
        if args.action == "put":
            return [await route_tables.put(store, body, author="cli", dimensions=dimensions)]
        return [await route_tables.rollback(store, args.to, author="cli", dimensions=dimensions)]

    try:
        found = run_against_database(args, work)
    except GatewayError as exc:
        return fail(exc.message)
    stored = [s for s in found if s is not None]
    if args.action == "show" and not stored:
        return fail(
            "the route table has no versions yet"
            if args.version is None
            else f"route table version {args.version} does not exist"
        )

    def described(s: StoredRouteTable) -> dict[str, Any]:
        return {**route_tables.shown_table(s), "created_at": iso(s.created_ms)}

    if args.action == "history":
        rows = [{**described(s), "domains": len(s.doc.routes)} for s in stored]
        output(args, [described(s) for s in stored], rows, HISTORY_COLUMNS)
        return 0
    one = stored[0]
    if args.action != "show":
        print(
            f"wrote route table version {one.version}; gateways install it within routing.refresh_s",
            file=sys.stderr,
        )
    if not args.json:
        print(f"version {one.version}  {iso(one.created_ms)}  by {one.author}  {one.doc.note}".rstrip())
    rows = [
        {
            "domain": d,
            "tier": t,
            "centroid": "yes" if d in one.doc.centroids else "-",
            "shadow": _share(one.doc.sampling.get(d)),
        }
        for d, t in sorted(one.doc.routes.items())
    ]
    output(args, described(one), rows, ROUTE_COLUMNS)
    return 0


def _share(sampling: Sampling | None) -> str:
    if sampling is None:
        return "-"
    if sampling.incumbent is None:
        return f"explore {sampling.share:g}"
    return f"monitor {sampling.share:g} ({sampling.incumbent} serves)"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("route-table", help="the versioned route table: show, history, put, rollback")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="one version (default: the newest) and its routes")
    show.add_argument("--version", type=_positive, help="the version to show")
    history = actions.add_parser("history", help="the newest versions first")
    history.add_argument("--limit", type=_positive, default=20)
    put = actions.add_parser("put", help="write a new version from a JSON or YAML file")
    put.add_argument("file", help='{"routes": {domain: tier}, "centroids"?: {domain: [384 floats]}, "note"?}')
    put.add_argument("--base-version", dest="base_version", type=int,
                     help="write only if the newest version is still this one")  # fmt: skip
    put.add_argument("--note", help="why (overrides the file's note)")
    rollback = actions.add_parser("rollback", help="write an older version's content as a new version")
    rollback.add_argument(
        "--to", type=_positive, help="the version to go back to (default: the one before the newest)"
    )
    for p in (show, history, put, rollback):
        add_config(p)
        p.set_defaults(func=cmd)
