"""`tiergate distill --domain D|--all --out DIR`: fine-tuning and preference data from accepted answers."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tiergate.admin.direct import CONFIG_HELP, fail, run_against_database


def cmd(args: argparse.Namespace) -> int:
    if not 0 <= args.validation_fraction < 1:
        return fail("--validation-fraction must be at least 0 and below 1")
    from tiergate.admin.jobs.distill import Filtered, sources, write_export
    from tiergate.gateway.routing.local_embeddings import Embedder
    from tiergate.gateway.routing.table_store import SqlRouteTableStore

    domain = None if args.all else args.domain
    filtered = Filtered()

    async def work(settings: Any, engine: Any) -> Any:
        rows = await sources(engine, domain=domain, tenant_id=args.tenant, filtered=filtered)
        return rows, await SqlRouteTableStore(engine).latest_version()

    found, route_table_version = run_against_database(args, work)
    embedder = Embedder()
    try:
        manifest = write_export(
            found,
            filtered,
            Path(args.out),
            embedder.embed,
            domain=domain,
            tenant_id=args.tenant,
            validation_fraction=args.validation_fraction,
            seed=args.seed,
            # The version in force when the data was exported (None: no version written yet).
            route_table_version=route_table_version or None,
        )
    finally:
        embedder.close()
    if args.json:
        print(json.dumps(manifest, indent=2))
    else:
        totals = manifest["totals"]
        print(
            f"{len(manifest['domains'])} domain(s): {totals['train']} train, {totals['validation']} validation, "
            f"{totals['preference_train'] + totals['preference_validation']} preference pair(s); "
            f"manifest in {Path(args.out) / 'manifest.json'}",
            file=sys.stderr,
        )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "distill",
        help="export accepted teacher/supervisor answers as fine-tuning (SFT) and preference (DPO) data",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--domain", help="one domain ('unassigned': requests routed without a domain)")
    which.add_argument("--all", action="store_true", help="every domain, one directory each")
    parser.add_argument("--out", required=True, help="the directory to write into")
    parser.add_argument("--tenant", help="only this tenant's traffic")
    parser.add_argument("--validation-fraction", dest="validation_fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/validation split")
    parser.add_argument("--config", help=CONFIG_HELP)
    parser.add_argument("--json", action="store_true", help="print the manifest")
    parser.set_defaults(func=cmd)
