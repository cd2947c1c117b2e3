"""The served application: the gateway's data plane, the admin API at /admin, and `GET /v1/usage`."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp

from tiergate.admin import reports, route_tables
from tiergate.admin.mount import LazyAdmin
from tiergate.gateway.app import create_app, error_response, request_id
from tiergate.gateway.components import ControlPlane
from tiergate.gateway.config.settings import Settings, load_settings
from tiergate.gateway.db.engine import database_unavailable, database_unreachable
from tiergate.gateway.errors import BadRequest, GatewayError
from tiergate.gateway.telemetry.logs import configure_logging, logging_options

if TYPE_CHECKING:
    import httpx

__all__ = ["create_server", "server_from_environment"]

_USAGE_PARAMS = frozenset({"group_by", "start", "end", "format"})
_USAGE_GROUPS = ("model", "tier", "day", "endpoint")


async def usage(request: Request) -> Response:
    """A key holder's own figures: the cost report restricted to the key that asks, and nothing else."""
    from tiergate.admin.api import render, report_query

    control: ControlPlane = request.app.state.control
    rid = request_id(request)
    try:
        principal = await control.auth.authenticate(request.headers)
        if principal.key_id is None:
            raise BadRequest(
                "GET /v1/usage reports a virtual key's own usage; with the master key use /admin/reports/cost"
            )
        params = request.query_params
        unknown = set(params) - _USAGE_PARAMS
        if unknown:
            raise BadRequest(
                f"unknown parameter(s) {', '.join(sorted(unknown))}; a key sees only its own usage",
                param=sorted(unknown)[0],
            )
        group_by = params.get("group_by")
        if group_by is not None and group_by not in _USAGE_GROUPS:
            raise BadRequest(f"'group_by' must be one of {', '.join(_USAGE_GROUPS)}", param="group_by")
        fmt = params.get("format", "json")
        if fmt not in ("json", "csv"):
            raise BadRequest("'format' must be json or csv", param="format")
        query = report_query(
            group_by,
            params.get("start"),
            params.get("end"),
            tenant_id=principal.tenant_id,
            key_id=principal.key_id,
        )
        report = await reports.cost_report(control.accounting.engine, control.settings, query)
    except GatewayError as error:
        return error_response(error, rid)
    except Exception as exc:
        if not database_unreachable(exc):
            raise
        return error_response(database_unavailable(), rid)
    report["key_id"] = principal.key_id
    response = render(report, fmt)
    response.headers["x-request-id"] = rid
    return response


def control_plane_routes() -> list[BaseRoute]:
    # The route-table endpoints come before the /admin mount, which would otherwise take their paths.
    return [
        Route("/v1/usage", usage, methods=["GET"]),
        Route("/usage", usage, methods=["GET"]),
        *route_tables.route_table_routes(),
        Mount("/admin", app=LazyAdmin()),
    ]


def create_server(
    settings: Settings,
    *,
    upstream_transport: httpx.AsyncBaseTransport | None = None,
    rng: random.Random | None = None,
) -> Starlette:
    """The gateway with its control plane: what `tiergate serve` runs."""
    return create_app(
        settings,
        upstream_transport=upstream_transport,
        rng=rng,
        extra_routes=control_plane_routes(),
        background=[promote_periodically] if settings.learning.promote.enabled else [],
    )


async def promote_periodically(control: ControlPlane) -> None:
    """`learning.promote.enabled`: this gateway runs the promote job every `interval_s` on its own database
    and route-table store. Every replica schedules it; a claim in the database lets one of them run it per
    interval, and the conditional write keeps a version right should two runs still overlap."""
    from tiergate.admin.jobs import lease, promote

    engine, interval_s, holder = (
        control.accounting.engine,
        control.settings.learning.promote.interval_s,
        lease.holder_name(),
    )
    await promote.periodically(
        lambda: promote.run_promote(engine, control.route_tables, control.settings),
        interval_s,
        # A little under the interval, so that this replica's own next wake-up, a few ms early, still runs.
        claim=lambda: lease.claim(engine, "promote", holder, 0.9 * interval_s),
    )


def server_from_environment() -> ASGIApp:
    """Factory for `uvicorn --factory` and worker processes: settings from $TIERGATE_CONFIG or the default.

    A worker process starts fresh (it does not inherit the parent's logging setup), so it configures logging
    from the same settings and TIERGATE_LOG_* variables the parent used.
    """
    settings = load_settings(None)
    configure_logging(*logging_options(settings))
    return create_server(settings)
