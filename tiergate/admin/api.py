"""The admin API under /admin: tenants, keys and cost reports, for the master key only.

Built with FastAPI for request validation and the OpenAPI document (/admin/openapi.json), which also
describes the route-table endpoints (plain Starlette routes in `tiergate.admin.route_tables`); errors leave
in OpenAI's shape like everywhere else in the gateway. Bodies over `accounting.admin_max_body_bytes` are
refused before they are read.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from tiergate.admin import reports, store, trace_search
from tiergate.admin.openapi import complete
from tiergate.admin.schemas import (
    CachePurged,
    Deleted,
    KeyCreate,
    KeyCreated,
    KeyOut,
    KeyRotate,
    KeyUpdate,
    TenantCreate,
    TenantOut,
    TenantUpdate,
)
from tiergate.gateway.accounting.auth import require_master
from tiergate.gateway.components import ControlPlane
from tiergate.gateway.db.engine import database_error_types, database_unavailable, database_unreachable
from tiergate.gateway.errors import (
    BadRequest,
    GatewayError,
    MethodNotAllowed,
    NotFound,
)

__all__ = ["create_admin_app", "render", "report_query"]

log = logging.getLogger("tiergate.admin")


def _control(request: Request) -> ControlPlane:
    return request.app.state.control  # type: ignore[no-any-return]


async def _master(request: Request) -> ControlPlane:
    control = _control(request)
    require_master(await control.auth.authenticate(request.headers))
    return control


Admin = Annotated[ControlPlane, Depends(_master)]


def _error(error: GatewayError) -> Response:
    return Response(
        error.body(), status_code=error.status, headers=error.headers, media_type="application/json"
    )


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0]
    where = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON", None
    if first.get("type") == "model_attributes_type" or (not where and first.get("type") == "dict_type"):
        return "the request body must be a JSON object", None
    param = ".".join(where) or None
    message = first.get("msg", "invalid value")
    return (f"'{param}': {message}" if param else message), param


def create_admin_app(control: ControlPlane) -> FastAPI:
    """The admin API over the gateway's control plane."""
    app = FastAPI(
        title="tiergate admin API",
        version="1",
        description="Tenants, virtual keys, budgets and cost reports. Authenticate with the master key.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served below, behind the master key like every other admin path
    )

    app.state.control = control

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> Response:
        return _error(exc)

    async def database_error(request: Request, exc: Exception) -> Response:
        if database_unreachable(exc):  # nothing was written: the caller may simply try again
            return _error(database_unavailable())
        log.exception("admin API: %s %s failed", request.method, request.url.path)
        return _error(GatewayError("internal error in the admin API"))

    for kind in database_error_types():
        app.add_exception_handler(kind, database_error)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        message, param = _validation_message(exc)
        return _error(BadRequest(message, param=param, code="invalid_value"))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 405:
            allow = {"allow": ", ".join(_allowed(app, request.scope))}
            return _error(
                MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}", headers=allow)
            )
        if exc.status_code == 404:
            return _error(NotFound(f"no admin route {request.method} {request.url.path}", code="not_found"))
        # FastAPI's own refusals of a body it cannot read (not UTF-8, a broken multipart, ...).
        return _error(BadRequest(f"the request body cannot be read: {exc.detail}", code="invalid_value"))

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_document(control: Admin) -> Response:
        return JSONResponse(document())

    @app.post("/tenants", response_model=TenantOut, status_code=201)
    async def create_tenant(body: TenantCreate, control: Admin) -> Any:
        await store.check_limits(control.accounting.engine, control.settings, body)
        return store.tenant_out(
            await store.create_tenant(control.accounting.engine, body, control.settings.cache)
        )

    @app.get("/tenants", response_model=dict[str, Any])
    async def list_tenants(control: Admin) -> Any:
        tenants = await store.list_tenants(control.accounting.engine)
        return {"object": "list", "data": [store.tenant_out(t).model_dump() for t in tenants]}

    @app.get("/tenants/{tenant_id}", response_model=TenantOut)
    async def get_tenant(tenant_id: str, control: Admin) -> Any:
        return store.tenant_out(await store.get_tenant(control.accounting.engine, tenant_id))

    @app.patch("/tenants/{tenant_id}", response_model=TenantOut)
    async def update_tenant(tenant_id: str, body: TenantUpdate, control: Admin) -> Any:
        await store.check_limits(control.accounting.engine, control.settings, body)
        tenant = await store.update_tenant(control.accounting.engine, tenant_id, body, control.settings.cache)
        await control.accounting.announce(tenant_ids=[tenant_id])
        return store.tenant_out(tenant)

    @app.post("/tenants/{tenant_id}/cache/purge", response_model=CachePurged)
    async def purge_cache(tenant_id: str, control: Admin) -> Any:
        """Stop serving every answer cached for the tenant, exact and semantic, on every replica: its keys
        move to a new cache generation (at once here, within `key_refresh_s` elsewhere without Redis)."""
        tenant = await store.purge_cache(control.accounting.engine, tenant_id)
        await control.accounting.announce(tenant_ids=[tenant_id])
        return CachePurged(tenant_id=tenant_id, cache_epoch=tenant.cache_epoch)

    @app.delete("/tenants/{tenant_id}", response_model=Deleted)
    async def delete_tenant(tenant_id: str, control: Admin) -> Any:
        await store.delete_tenant(control.accounting.engine, tenant_id)
        await control.accounting.announce(tenant_ids=[tenant_id])
        return Deleted(id=tenant_id)

    @app.post("/keys", response_model=KeyCreated, status_code=201)
    async def create_key(body: KeyCreate, control: Admin) -> Any:
        await store.check_limits(control.accounting.engine, control.settings, body)
        key, secret = await store.create_key(control.accounting.engine, body)
        await control.accounting.announce(key_ids=[key.id])
        return {**store.key_out(key), "key": secret}

    @app.get("/keys", response_model=dict[str, Any])
    async def list_keys(control: Admin, tenant_id: Annotated[str | None, Query(max_length=40)] = None) -> Any:
        keys = await store.list_keys(control.accounting.engine, tenant_id)
        return {"object": "list", "data": [store.key_out(k) for k in keys]}

    @app.get("/keys/{key_id}", response_model=KeyOut)
    async def get_key(key_id: str, control: Admin) -> Any:
        return store.key_out(await store.get_key(control.accounting.engine, key_id))

    @app.patch("/keys/{key_id}", response_model=KeyOut)
    async def update_key(key_id: str, body: KeyUpdate, control: Admin) -> Any:
        await store.check_limits(control.accounting.engine, control.settings, body)
        key = await store.update_key(control.accounting.engine, key_id, body)
        await control.accounting.announce(key_ids=[key_id])
        return store.key_out(key)

    @app.delete("/keys/{key_id}", response_model=KeyOut)
    async def revoke_key(key_id: str, control: Admin) -> Any:
        """Revoke: refused by every replica within a second (at once with Redis)."""
        key = await store.revoke_key(control.accounting.engine, key_id)
        await control.accounting.announce(key_ids=[key_id])
        return store.key_out(key)

    @app.post("/keys/{key_id}/rotate", response_model=dict[str, Any])
    async def rotate_key(key_id: str, control: Admin, body: KeyRotate | None = None) -> Any:
        """A new key with the same settings; the old one keeps working for the grace period."""
        grace = (
            body.grace_period_s
            if body and body.grace_period_s is not None
            else control.settings.accounting.rotation_grace_s
        )
        new, secret, old = await store.rotate_key(control.accounting.engine, key_id, grace)
        await control.accounting.announce(key_ids=[key_id, new.id])
        return {
            "new_key": {**store.key_out(new), "key": secret},
            "old_key": store.key_out(old),
            "grace_period_s": grace,
        }

    @app.get("/reports/cost", response_model=None)
    async def cost_report(
        control: Admin,
        group_by: Literal["key", "tenant", "model", "tier", "day", "endpoint"] | None = None,
        start: Annotated[str | None, Query(description="ISO date or date-time, inclusive")] = None,
        end: Annotated[str | None, Query(description="ISO date or date-time, exclusive")] = None,
        tenant_id: Annotated[str | None, Query(max_length=40)] = None,
        format: Literal["json", "csv"] = "json",
    ) -> Any:
        query = report_query(group_by, start, end, tenant_id=tenant_id)
        report = await reports.cost_report(control.accounting.engine, control.settings, query)
        return render(report, format)

    @app.get("/traces", response_model=None)
    async def list_traces(
        control: Admin,
        tenant_id: Annotated[str | None, Query(max_length=40)] = None,
        domain: Annotated[str | None, Query(max_length=200)] = None,
        tier: Literal["student", "ta", "teacher", "supervisor"] | None = None,
        since: Annotated[str | None, Query(description="ISO date or date-time, inclusive")] = None,
        until: Annotated[str | None, Query(description="ISO date or date-time, exclusive")] = None,
        limit: Annotated[int, Query(ge=1, le=trace_search.MAX_LIMIT)] = 100,
    ) -> Any:
        """The newest traces first; `has_more` says whether `limit` cut the list (page on with `until`)."""
        query = trace_search.TraceQuery(tenant_id, domain, tier, _time(since, "since"), _time(until, "until"))
        data, more = await trace_search.list_traces(control.accounting.engine, query, limit)
        return {"object": "list", "data": data, "has_more": more}

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            # Builds and caches the document; models registered later are taken but not listed in it.
            complete(
                FastAPI.openapi(app),
                control.router.dimensions,
                store.configured_model_names(control.settings),
            )
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = document  # type: ignore[method-assign]
    return app


def _allowed(app: FastAPI, scope: Any) -> list[str]:
    """The methods some route takes on this path (FastAPI has a route per method, each 405s the others)."""
    methods: set[str] = set()
    path = scope["path"].removeprefix(scope.get("root_path", ""))  # the routes are relative to /admin
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path_regex.match(path):
            methods |= route.methods or set()
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def report_query(
    group_by: str | None, start: str | None, end: str | None, **scope: str | None
) -> reports.ReportQuery:
    try:
        start_ms = reports.parse_time(start, "start") if start is not None else None
        end_ms = reports.parse_time(end, "end") if end is not None else None
    except ValueError as exc:
        raise BadRequest(str(exc), param="start" if "'start'" in str(exc) else "end") from None
    return reports.ReportQuery(group_by, start_ms, end_ms, **scope)


def _time(value: str | None, name: str) -> int | None:
    try:
        return reports.parse_time(value, name) if value is not None else None
    except ValueError as exc:
        raise BadRequest(str(exc), param=name) from None


def render(report: dict[str, Any], format: str) -> Response:
    if format == "csv":
        # A BOM makes spreadsheet programs read the file as UTF-8 (tenant names may not be ASCII).
        return Response(
            "\ufeff" + reports.to_csv(report),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": 'attachment; filename="tiergate-cost-report.csv"'},
        )
    import orjson

    return Response(orjson.dumps(reports.public(report)), media_type="application/json")
