"""`tiergate db upgrade` (a deploy step) and `tiergate db revision` (for developers adding a table)."""

from __future__ import annotations

import argparse
import asyncio

from tiergate.admin.direct import CONFIG_HELP


def cmd_upgrade(args: argparse.Namespace) -> int:
    from tiergate.gateway.config.settings import load_settings
    from tiergate.gateway.db import migrate
    from tiergate.gateway.db.engine import redact_url

    settings = load_settings(args.config)
    before, after = asyncio.run(migrate.upgrade(settings.database_url))
    where = redact_url(settings.database_url)
    print(
        f"{where}: already at {after}"
        if before == after
        else f"{where}: migrated {before or 'empty'} -> {after}"
    )
    return 0


def cmd_revision(args: argparse.Namespace) -> int:
    from tiergate.gateway.db import migrate

    for path in asyncio.run(migrate.autogenerate(args.message)):
        print(f"wrote {path}: review it before committing")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = sub.add_parser("db", help="database schema: upgrade, revision")
    actions = db.add_subparsers(dest="action", required=True, metavar="ACTION")
    upgrade = actions.add_parser("upgrade", help="apply pending migrations to the configured database")
    upgrade.add_argument("--config", help=CONFIG_HELP)
    upgrade.set_defaults(func=cmd_upgrade)
    revision = actions.add_parser(
        "revision", help="autogenerate a migration from changed models (developers)"
    )
    revision.add_argument("-m", "--message", required=True)
    revision.set_defaults(func=cmd_revision)
