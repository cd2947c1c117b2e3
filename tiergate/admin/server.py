"""The gateway with the admin API mounted: what `tiergate serve` runs."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.types import ASGIApp

from tiergate.admin import route_tables
from tiergate.gateway.app import create_app
from tiergate.gateway.logs import configure_logging, logging_options
from tiergate.gateway.settings import Settings, load_settings


def create_server(settings: Settings, **kwargs: Any) -> Starlette:
    return create_app(settings, extra_routes=route_tables.routes(), **kwargs)


def server_from_environment() -> ASGIApp:
    """Factory for `uvicorn --factory` and worker processes: settings from $TIERGATE_CONFIG or the default.

    A worker process starts fresh (it does not inherit the parent's logging setup), so it configures logging
    from the same settings and TIERGATE_LOG_* variables the parent used.
    """
    settings = load_settings(None)
    configure_logging(*logging_options(settings))
    return create_server(settings)
