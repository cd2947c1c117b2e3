"""/admin/openapi.json describes every admin route, and what the route-table endpoints really return."""

from __future__ import annotations

from typing import Any

import jsonschema
from fastapi.routing import APIRoute
from starlette.routing import Mount, Route

from tests.admin.conftest import ADMIN, config, serve
from tiergate.admin.api import create_admin_app
from tiergate.admin.server import create_server

E0 = [1.0] + [0.0] * 383


METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def served_admin_routes(database_url: str) -> set[tuple[str, str]]:
    """(path under /admin, method) of every route the served app answers under /admin."""
    found: set[tuple[str, str]] = set()
    for route in create_server(config(database_url)).routes:
        if isinstance(route, Route) and route.path.startswith("/admin/"):
            # A function endpoint lists its methods; an HTTPEndpoint class has a handler per method.
            methods = route.methods or {m for m in METHODS if hasattr(route.endpoint, m.lower())}
            found |= {(route.path.removeprefix("/admin"), m) for m in methods if m != "HEAD"}
        if isinstance(route, Mount) and route.path == "/admin":
            routes_only = create_admin_app(None)  # type: ignore[arg-type]  # serves no call: no control plane
            admin = [r for r in routes_only.routes if isinstance(r, APIRoute)]
            found |= {(r.path, m) for r in admin if r.include_in_schema for m in r.methods}
    return found


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, item in doc["paths"].items() for method in item}


def refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        return {node["$ref"]} if "$ref" in node else set().union(*(refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(refs(v) for v in node))
    return set()


def check(doc: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    """`body` matches what the document says `method path` returns with `status`."""
    schema = doc["paths"][path][method]["responses"][str(status)]["content"]["application/json"]["schema"]
    jsonschema.validate(body, {**schema, "components": doc["components"]})


async def test_every_admin_route_is_documented_and_nothing_else(sqlite_url: str) -> None:
    routes = served_admin_routes(sqlite_url)
    assert {("/route-table", "PUT"), ("/route-table/rollback", "POST"), ("/tenants", "POST")} <= routes
    async with serve(config(sqlite_url)) as s:
        r = await s.client.get("/admin/openapi.json", headers=ADMIN)
    assert r.status_code == 200
    doc = r.json()
    assert documented(doc) == routes
    assert {f"#/components/schemas/{name}" for name in doc["components"]["schemas"]} >= refs(doc)


async def test_route_table_answers_match_the_document(sqlite_url: str) -> None:
    async with serve(config(sqlite_url)) as s:
        doc = (await s.client.get("/admin/openapi.json", headers=ADMIN)).json()
        current = await s.client.get("/admin/route-table", headers=ADMIN)
        check(doc, "/route-table", "get", 200, current.json())
        put = {"routes": {"billing": "student"}, "centroids": {"billing": E0}, "note": "n", "base_version": 0}
        jsonschema.validate(
            put, {"$ref": "#/components/schemas/RouteTablePut", "components": doc["components"]}
        )
        made = await s.client.put("/admin/route-table", json=put, headers=ADMIN)
        assert made.status_code == 201
        check(doc, "/route-table", "put", 201, made.json())
        await s.client.put("/admin/route-table", json={"routes": {"billing": "ta"}}, headers=ADMIN)
        check(
            doc, "/route-table", "get", 200, (await s.client.get("/admin/route-table", headers=ADMIN)).json()
        )
        history = await s.client.get("/admin/route-table/history?limit=5", headers=ADMIN)
        check(doc, "/route-table/history", "get", 200, history.json())
        back = await s.client.post("/admin/route-table/rollback", json={"to_version": 1}, headers=ADMIN)
        assert back.status_code == 201
        check(doc, "/route-table/rollback", "post", 201, back.json())
        for method, path, body, status in [
            ("put", "/route-table", {"routes": {"billing": "intern"}}, 400),
            ("put", "/route-table", {"routes": {}, "base_version": 1}, 409),
            ("post", "/route-table/rollback", {"to_version": 99}, 404),
        ]:
            r = await s.client.request(method.upper(), "/admin" + path, json=body, headers=ADMIN)
            assert r.status_code == status
            check(doc, path, method, status, r.json())
        tenant = await s.new_tenant()
        key = await s.new_key(tenant["id"])
        r = await s.client.get("/admin/route-table", headers={"authorization": f"Bearer {key['key']}"})
        assert r.status_code == 403
        check(doc, "/route-table", "get", 403, r.json())
