"""The admin API's OpenAPI document: FastAPI's generated one, completed to say what the API really does.

FastAPI documents a 422 it never sends (validation errors leave as OpenAI-shaped 400s) and none of the
statuses the handlers raise; the route-table endpoints are Starlette routes it does not see; date parameters
and the CSV report are plain strings to it. `complete` fixes all of that in one pass over the document, and
`tests/admin/test_schemathesis.py` checks the result against the running API.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tiergate.admin.schemas import (
    ErrorBody,
    RouteTableCurrent,
    RouteTableHistory,
    RouteTablePut,
    RouteTableRollback,
    RouteTableVersionOut,
)
from tiergate.gateway.config.cache import CacheOverride

__all__ = ["complete"]

_ERRORS = {
    400: "Invalid request (OpenAI-shaped error)",
    401: "No or an unknown key",
    403: "A virtual key: the admin API takes the master key only",
    404: "No such tenant, key or version",
    409: "A conflict with the current state (a revoked key, a route table that moved on)",
    413: "The body is too large",
    503: "The database is unreachable; nothing was written, retry",
}
# Operations that can conflict with the gateway's state (409), or look up a tenant named in the body (404).
_CONFLICTS = {
    ("/keys/{key_id}", "patch"),
    ("/keys/{key_id}/rotate", "post"),
    ("/tenants", "post"),  # a cache override asking for a cache the config did not open
    ("/tenants/{tenant_id}", "patch"),
}
_LOOKUPS = {("/keys", "post")}
_DATES = {"start", "end", "since", "until"}  # ISO date or date-time (reports.parse_time)
_DATE_SCHEMA = {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]}


def _ref(name: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}


def _error(status: int) -> dict[str, Any]:
    return {"description": _ERRORS[status], **_ref(ErrorBody.__name__)}


def complete(doc: dict[str, Any], dimensions: int, models: Iterable[str]) -> dict[str, Any]:
    """`doc` (FastAPI's) with the route-table paths and every status, format and media type the API uses.

    `dimensions` is the domain embedder's: a route table's centroids must have exactly that many numbers.
    `models` are the names `allowed_models` may hold (`store.check_limits` refuses any other)."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for body in ("TenantCreate", "TenantUpdate", "KeyCreate", "KeyUpdate"):
        field = schemas[body]["properties"]["allowed_models"]
        field["anyOf"][0]["items"] = {"type": "string", "enum": sorted(set(models))}
    for body in ("KeyCreate", "KeyUpdate"):
        schemas[body]["properties"]["expires_at"]["description"] += "; in the future"
    for model in (
        RouteTablePut,
        RouteTableRollback,
        RouteTableVersionOut,
        RouteTableCurrent,
        RouteTableHistory,
    ):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    schemas[ErrorBody.__name__] = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schemas[ErrorBody.__name__].pop("$defs", {}))
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    # A tenant's cache override is stored as the object it was sent as; its fields are the config's.
    override = CacheOverride.model_json_schema(ref_template="#/components/schemas/{model}")
    parts = {**override.pop("$defs", {}), CacheOverride.__name__: override}
    for part in parts.values():  # as in the config file, a field written null is a field not written
        for name, field in part.get("properties", {}).items():
            if isinstance(field.get("additionalProperties"), dict):  # `domains`: its entries too
                field["additionalProperties"] = {"anyOf": [field["additionalProperties"], {"type": "null"}]}
            if name not in part.get("required", ()):  # null leaves a required field missing: refused
                part["properties"][name] = {"anyOf": [field, {"type": "null"}]}
    schemas.update(parts)
    for body in ("TenantCreate", "TenantUpdate"):
        field = schemas[body]["properties"]["cache"]
        field["anyOf"] = [{"$ref": f"#/components/schemas/{CacheOverride.__name__}"}, {"type": "null"}]
    vector = {
        "type": "array",
        "items": {"type": "number"},
        "minItems": dimensions,
        "maxItems": dimensions,
        "contains": {"not": {"const": 0}},  # not the zero vector
    }
    centroids = schemas[RouteTablePut.__name__]["properties"]["centroids"]
    centroids["anyOf"] = [{"type": "object", "additionalProperties": vector}, {"type": "null"}]

    for path, item in doc["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            responses.pop("422", None)
            params = operation.get("parameters", [])
            statuses = {400, 401, 403, 503}
            if "{" in path or (path, method) in _LOOKUPS or any(p["name"] == "tenant_id" for p in params):
                statuses.add(404)
            if (path, method) in _CONFLICTS:
                statuses.add(409)
            if "requestBody" in operation:
                statuses.add(413)
            for status in sorted(statuses):
                responses.setdefault(str(status), _error(status))
            for param in params:
                if param["name"] in _DATES:
                    param["schema"] = {**_DATE_SCHEMA, "description": param["schema"].get("description", "")}
    csv = {"schema": {"type": "string", "description": "one row per group, with a header row"}}
    doc["paths"]["/reports/cost"]["get"]["responses"]["200"]["content"]["text/csv"] = csv
    doc["paths"].update(_route_table_paths())
    doc["servers"] = [{"url": "/admin"}]  # the paths are under the gateway's /admin mount
    return doc


def _route_table_paths() -> dict[str, Any]:
    """The route-table endpoints, served before the /admin mount by `tiergate.admin.route_tables`."""

    def operation(
        op_id: str, summary: str, ok: int, out: type[Any], errors: tuple[int, ...], **extra: Any
    ) -> dict[str, Any]:
        responses = {str(ok): {"description": "Successful Response", **_ref(out.__name__)}}
        for status in (*errors, 401, 403, 503):
            responses[str(status)] = _error(status)
        return {
            "summary": summary,
            "operationId": op_id,
            "tags": ["route table"],
            "responses": responses,
            **extra,
        }

    limit = {
        "name": "limit", "in": "query", "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 20},
    }  # fmt: skip
    return {
        "/route-table": {
            "get": operation(
                "get_route_table", "The newest version, and the version this replica serves",
                200, RouteTableCurrent, (),
            ),
            "put": operation(
                "put_route_table", "Write a new version (conditional on base_version)",
                201, RouteTableVersionOut, (400, 409, 413),
                requestBody={"required": True, **_ref(RouteTablePut.__name__)},
            ),
        },
        "/route-table/history": {
            "get": operation(
                "route_table_history", "The newest versions first", 200, RouteTableHistory, (400,),
                parameters=[limit],
            ),
        },
        "/route-table/rollback": {
            "post": operation(
                "rollback_route_table", "A new version with an earlier version's content",
                201, RouteTableVersionOut, (400, 404, 409, 413),
                requestBody={"required": False, **_ref(RouteTableRollback.__name__)},
            ),
        },
    }  # fmt: skip
