"""`tiergate serve`."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tiergate.admin.direct import CONFIG_HELP
from tiergate.gateway.config.settings import Settings, load_settings
from tiergate.policies.tiers import TIERS


def _describe(settings: Settings) -> str:
    lines = [f"config: {settings.source}"]
    for tier in TIERS:
        models = [d.model for d in settings.deployments if d.tier == tier and not d.candidate]
        if models:
            lines.append(f"  {tier:<10} {', '.join(models)}")
    return "\n".join(lines)


def uvicorn_kwargs(host: str, port: int, settings: Settings) -> dict[str, Any]:
    from tiergate.gateway.http.protocol import ArrivalStampingProtocol

    return {
        "host": host,
        "port": port,
        "loop": "uvloop" if sys.platform != "win32" else "asyncio",
        "http": ArrivalStampingProtocol,  # httptools, stamping each request's arrival for the overhead figures
        "access_log": False,  # tiergate writes its own structured line per request when access_log is on
        "log_config": None,
        "timeout_graceful_shutdown": settings.drain_timeout_s,
        "server_header": False,
        # uvicorn kills a worker whose health ping goes unanswered this long (dropping its requests); its
        # 5 s default is too short for a worker that is starting on a busy machine.
        "timeout_worker_healthcheck": 30,
    }


@contextmanager
def _shared_metrics(settings: Settings) -> Iterator[None]:
    """Metrics for several processes: a directory the workers write their values to, and the metrics
    port (when configured) served here, in the supervisor, from all of them.

    $PROMETHEUS_MULTIPROC_DIR names the directory when set (e.g. a volume); otherwise a temporary one is
    made and removed at exit. Either way it is cleared of a previous run's values first, and it is set
    before prometheus_client is imported, as its multiprocess mode requires.
    """
    from tiergate.gateway.telemetry.metrics import MULTIPROC_ENV, clear_multiprocess_dir

    given = os.environ.get(MULTIPROC_ENV)
    path = given or tempfile.mkdtemp(prefix="tiergate-metrics-")
    clear_multiprocess_dir(path)
    os.environ[MULTIPROC_ENV] = path
    server = None
    if settings.metrics_port is not None:
        from tiergate.gateway.telemetry.metrics import MetricsServer, multiprocess_registry

        server = MetricsServer(multiprocess_registry(path), settings.metrics_host, settings.metrics_port)
    try:
        yield
    finally:
        if server is not None:
            server.close()
        if not given:
            shutil.rmtree(path, ignore_errors=True)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from tiergate.admin.server import create_server
    from tiergate.gateway.db import migrate
    from tiergate.gateway.db.engine import check_database_url, is_sqlite
    from tiergate.gateway.telemetry.logs import configure_logging, logging_options

    settings = load_settings(args.config)
    # Here, not in the app's start-up, where uvicorn would print it as a traceback.
    check_database_url(settings.database_url)
    level, fmt = logging_options(settings, level=args.log_level)
    configure_logging(level, fmt)
    print(_describe(settings), file=sys.stderr)
    kwargs = uvicorn_kwargs(args.host, args.port, settings)
    if args.workers > 1 and not settings.redis_url:
        print(
            "tiergate: --workers > 1 needs redis_url: worker processes must share rate limits and budgets",
            file=sys.stderr,
        )
        return 2
    if args.workers == 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        uvicorn.run(create_server(settings), **kwargs)
        return 0
    if args.workers > 1 and is_sqlite(settings.database_url):
        # Migrate once, here, before the workers start: several workers migrating one file at once collide.
        asyncio.run(migrate.upgrade(settings.database_url))
    # Worker processes start fresh: the environment carries the config and the logging choices to them.
    if args.config:
        os.environ["TIERGATE_CONFIG"] = os.path.abspath(args.config)
    os.environ["TIERGATE_LOG_LEVEL"], os.environ["TIERGATE_LOG_FORMAT"] = level, fmt
    with _shared_metrics(settings):
        if args.workers == 1:
            uvicorn.run(create_server(settings), **kwargs)
        else:
            uvicorn.run(
                "tiergate.admin.server:server_from_environment", factory=True, workers=args.workers, **kwargs
            )
    return 0


def port_number(text: str) -> int:
    """An argparse type: a TCP port a server can listen on (uvicorn would take 81535 modulo 65536)."""
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: give a number from 1 to 65535")
    return port


def worker_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of worker processes (1 or more)")
    return count


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help=CONFIG_HELP)
    serve.add_argument("--host", default=os.environ.get("TIERGATE_HOST", "127.0.0.1"))
    # String defaults go through `type` too: a bad $TIERGATE_PORT is a usage error, not a traceback.
    serve.add_argument("--port", type=port_number, default=os.environ.get("TIERGATE_PORT", "4000"),
                       help="default: $TIERGATE_PORT, else 4000")  # fmt: skip
    serve.add_argument("--workers", type=worker_count, default=os.environ.get("TIERGATE_WORKERS", "1"),
                       help="default: $TIERGATE_WORKERS, else 1")  # fmt: skip
    serve.set_defaults(func=cmd_serve)
