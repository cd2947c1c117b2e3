"""What the tenant, key and report commands share: they work on the configured database directly.

Direct access (rather than calling a running gateway's admin API) means the commands work before any
gateway runs (bootstrapping a tenant), from cron and deploy scripts, and with nothing but the config file;
the same `tiergate.admin.store` functions serve both, so the rules are the same. Changes are announced on
Redis when it is configured; gateways without Redis see them at their next key poll (about a second).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from tiergate.policies.budget import PERIODS

T = TypeVar("T")
# Exit statuses: 2 for a request that cannot be done as asked (the user changes it), 1 for one that could not
# be done now (the database is away: running it again later may work).
USAGE, FAILED = 2, 1


class CommandError(Exception):
    """A command cannot go on: `tiergate.admin.cli.main` prints `tiergate: <message>` and exits `status`."""

    def __init__(self, message: str, status: int = USAGE) -> None:
        super().__init__(message)
        self.status = status


CONFIG_HELP = (
    "YAML config (default: $TIERGATE_CONFIG, else ./tiergate.yaml if there is one, else the embedded default)"
)


def add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help=CONFIG_HELP)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run_against_database(args: argparse.Namespace, work: Callable[[Any, Any], Awaitable[T]]) -> T:
    """Run `work(settings, engine)` against the configured database, migrated (SQLite) or checked."""
    from tiergate.gateway.config.settings import load_settings
    from tiergate.gateway.db import migrate
    from tiergate.gateway.db.engine import (
        check_database_url,
        database_error_types,
        database_unreachable,
        is_sqlite,
        open_engine,
        redact_url,
        sqlite_path,
    )
    from tiergate.gateway.upstream.prices import with_known_prices

    settings = with_known_prices(load_settings(args.config))
    for made in settings.created:
        print(f"tiergate: {made}", file=sys.stderr)
    url = settings.database_url
    check_database_url(url)
    new = is_sqlite(url) and not os.path.exists(sqlite_path(url))

    async def main() -> T:
        if is_sqlite(url):
            await migrate.upgrade(url)
            if new:  # an unexpected new file is how a wrong working directory or config shows
                print(
                    f"tiergate: created a new database {sqlite_path(url)} (config: {settings.source})",
                    file=sys.stderr,
                )
        else:
            await migrate.require_current(url)
        engine = open_engine(url)
        try:
            return await work(settings, engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except migrate.SchemaBehind as exc:
        raise CommandError(str(exc)) from None
    except database_error_types() as exc:
        if not database_unreachable(exc):
            raise
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
        raise CommandError(f"cannot reach the database {redact_url(url)} ({reason})", FAILED) from None


async def announce(settings: Any, *, key_ids: Iterable[str] = (), tenant_ids: Iterable[str] = ()) -> None:
    if not settings.redis_url:
        return
    from redis.asyncio import Redis

    from tiergate.gateway.accounting.books import publish_change

    redis = Redis.from_url(settings.redis_url)
    try:
        await publish_change(redis, settings.redis_prefix, key_ids=key_ids, tenant_ids=tenant_ids)
    finally:
        await redis.aclose()


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[_text(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6f}".rstrip("0").rstrip(".") if value else "0"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def output(args: argparse.Namespace, doc: Any, rows: list[dict[str, Any]], columns: list[str]) -> None:
    print(json.dumps(doc, indent=2) if args.json else table(rows, columns))


def fail(message: str, status: int = USAGE) -> int:
    print(f"tiergate: {message}", file=sys.stderr)
    return status


def fields(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The limit options given on the command line (`--no-X` clears X)."""
    out: dict[str, Any] = {}
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            out[name] = value
        if getattr(args, f"clear_{name}", False):
            out[name] = None
    return out


def add_limits(parser: argparse.ArgumentParser, *, clearable: bool) -> None:
    parser.add_argument("--budget-usd", dest="budget_usd", type=float)
    parser.add_argument("--budget-period", dest="budget_period", choices=PERIODS)
    parser.add_argument("--rpm", type=int)
    parser.add_argument("--tpm", type=int)
    parser.add_argument("--allowed-models", dest="allowed_models", type=lambda s: [m.strip() for m in s.split(",") if m.strip()],
                        help="comma-separated tier and deployment names")  # fmt: skip
    if clearable:
        for name in ("budget_usd", "rpm", "tpm", "allowed_models"):
            parser.add_argument(f"--no-{name.replace('_', '-')}", dest=f"clear_{name}", action="store_true")
