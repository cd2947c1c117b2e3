"""`/admin/route-table`: read, write and roll back the versioned route table (master key only).

    GET  /admin/route-table                  the newest version, and the version this replica serves
    GET  /admin/route-table/history?limit=N  the newest versions first
    PUT  /admin/route-table                  {"routes", "centroids"?, "names"?, "sampling"?, "note"?,
                                              "base_version"?} -> a new version
    POST /admin/route-table/rollback         {"to_version"?} -> a new version with that content
                                             (default: the version before the newest)

Writes are append-only. `base_version` makes a write conditional (409 when the table moved on). The replica
that took the write installs it at once; the others pick it up within `routing.refresh_s`. `put` and
`rollback` are also what `tiergate route-table` runs against the database directly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tiergate.gateway.accounting.auth import require_master
from tiergate.gateway.app import error_response, read_body, request_id
from tiergate.gateway.components import ControlPlane
from tiergate.gateway.errors import BadRequest, GatewayError, NotFound
from tiergate.gateway.http.bodies import parse_object
from tiergate.gateway.routing.router import CentroidMismatch, check_centroids
from tiergate.gateway.routing.table_store import RouteTableStore, StoredRouteTable, VersionConflict, install
from tiergate.policies.route_table import RouteTableDoc, RouteTableError, parse_route_table

MAX_BODY_BYTES = 8 * 1024 * 1024  # 10,000 domains with centroids fit


class RouteTableConflict(GatewayError):
    status = 409
    type = "invalid_request_error"
    code = "version_conflict"


def shown_table(stored: StoredRouteTable) -> dict[str, Any]:
    return {
        "version": stored.version,
        "created_ms": stored.created_ms,
        "author": stored.author,
        **stored.doc.as_json(),
    }


async def _admin(request: Request) -> ControlPlane:
    control: ControlPlane = request.app.state.control
    require_master(await control.auth.authenticate(request.headers))
    return control


def _json(doc: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json")


Handler = Callable[[Request, ControlPlane], Awaitable[Response]]


def _master_only(handler: Handler) -> Callable[[HTTPEndpoint, Request], Awaitable[Response]]:
    """An endpoint method: the master key only, errors in OpenAI's shape, the request id echoed."""

    async def method(endpoint: HTTPEndpoint, request: Request) -> Response:
        rid = request_id(request)
        try:
            response = await handler(request, await _admin(request))
        except GatewayError as error:
            return error_response(error, rid)
        response.headers["x-request-id"] = rid
        return response

    return method


async def _current(request: Request, control: ControlPlane) -> Response:
    stored = await control.route_tables.get()
    serving = control.router.snapshot.table
    current = (
        shown_table(stored) if stored else {"version": 0, "routes": dict(serving.routes), "centroids": {}}
    )
    return _json({**current, "serving_version": serving.version})


async def _write(request: Request, control: ControlPlane) -> Response:
    raw = await read_body(request, MAX_BODY_BYTES)
    stored = await put(
        control.route_tables, parse_object(raw), author="master", dimensions=control.router.dimensions
    )
    install(control.router, stored)
    return _json(shown_table(stored), status=201)


async def _history(request: Request, control: ControlPlane) -> Response:
    limit = request.query_params.get("limit", "20")
    if not limit.isdigit() or not 1 <= int(limit) <= 1000:
        raise BadRequest("'limit' must be an integer between 1 and 1000", param="limit")
    return _json({"data": [shown_table(s) for s in await control.route_tables.history(int(limit))]})


async def _rollback(request: Request, control: ControlPlane) -> Response:
    raw = await read_body(request, MAX_BODY_BYTES)
    body = parse_object(raw) if raw.strip() else {}
    unknown = sorted(set(body) - {"to_version"})
    if unknown:  # `{"version": 1}` must not roll back to the default version
        raise BadRequest(
            f"unknown field(s) {', '.join(unknown)}; the one field is 'to_version'", param=unknown[0]
        )
    stored = await rollback(
        control.route_tables, body.get("to_version"), author="master", dimensions=control.router.dimensions
    )
    install(control.router, stored)
    return _json(shown_table(stored), status=201)


# Starlette dispatches on the method (HEAD is served as GET) and answers any other method with a 405 and
# its `Allow` header; each path matches in full, so the /admin mount behind it never takes these paths.
class _RouteTable(HTTPEndpoint):
    get = _master_only(_current)
    put = _master_only(_write)


class _History(HTTPEndpoint):
    get = _master_only(_history)


class _Rollback(HTTPEndpoint):
    post = _master_only(_rollback)


async def put(
    store: RouteTableStore, body: dict[str, Any], *, author: str, dimensions: int
) -> StoredRouteTable:
    """Validate a route-table document and write it as the next version (conditional on `base_version`).

    `dimensions` is the domain embedder's (`routing.domains.dimensions`): centroids of another length were
    made by another embedding model and are refused."""
    try:
        doc = parse_route_table(body, dimensions)
    except RouteTableError as exc:
        raise BadRequest(
            f"{exc} (the dimension of the configured domain embedder)", param=exc.param
        ) from None
    base = _whole(body.get("base_version"))
    if base is not None and (isinstance(base, bool) or not isinstance(base, int)):
        raise BadRequest("'base_version' must be an integer", param="base_version")
    return await _append(store, doc, author, base)


def _whole(value: Any) -> Any:
    # As the admin API's other integers: JSON Schema's "integer" includes 3.0.
    return int(value) if isinstance(value, float) and value.is_integer() else value


async def rollback(store: RouteTableStore, target: Any, *, author: str, dimensions: int) -> StoredRouteTable:
    """Write the content of version `target` (None: the one before the newest) as the next version."""
    latest = await store.latest_version()
    target = _whole(target)
    if target is None:
        target = latest - 1
    if isinstance(target, bool) or not isinstance(target, int):
        raise BadRequest("'to_version' must be an integer", param="to_version")
    if target < 1:  # as for a version that does not exist: the API's state, not the request, is why
        raise NotFound(
            "there is no earlier version to roll back to", param="to_version", code="version_not_found"
        )
    older = (
        await store.get(target) if target <= latest else None
    )  # (never a number the database overflows on)
    if older is None:
        raise NotFound(
            f"route table version {target} does not exist", param="to_version", code="version_not_found"
        )
    try:
        check_centroids(older.doc.centroids, dimensions)
    except CentroidMismatch as exc:
        raise BadRequest(f"version {target} cannot be served: {exc}", param="to_version") from None
    return await _append(store, older.doc, author, latest)


async def _append(
    store: RouteTableStore, doc: RouteTableDoc, author: str, base: int | None
) -> StoredRouteTable:
    try:
        return await store.append(doc, author=author, base_version=base)
    except VersionConflict as exc:
        raise RouteTableConflict(
            f"the route table moved on to version {exc.latest}; re-read it and retry", param="base_version"
        ) from None


def route_table_routes() -> list[Route]:
    return [
        Route("/admin/route-table", _RouteTable),
        Route("/admin/route-table/history", _History),
        Route("/admin/route-table/rollback", _Rollback),
    ]
