"""The gateway with the admin API mounted: what `tiergate serve` runs."""

from __future__ import annotations

import os
from typing import Any

from starlette.applications import Starlette
from starlette.types import ASGIApp

from tiergate.admin import route_tables
from tiergate.gateway.app import create_app
from tiergate.gateway.logs import configure_logging
from tiergate.gateway.settings import Settings, load_settings


def create_server(settings: Settings, **kwargs: Any) -> Starlette:
    return create_app(settings, extra_routes=route_tables.routes(), **kwargs)


def server_from_environment() -> ASGIApp:
    """Factory for `uvicorn --factory` and worker processes: settings from $TIERGATE_CONFIG or the default."""
    configure_logging(os.environ.get("TIERGATE_LOG_LEVEL", "info"))
    return create_server(load_settings(None))
