"""The versioned route table through the admin API, kept in the database, and its pickup by a running gateway."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from httpx import Response

from tests.gateway.cache.test_response_cache import TenantKeys
from tests.gateway.conftest import AUTH, completion, settings
from tests.gateway.routing.test_routing_strategies import CountingEncoder
from tests.support import authenticate_with
from tiergate.admin.server import create_server
from tiergate.gateway.db import migrate
from tiergate.gateway.routing.table_store import RouteTableDoc
from tiergate.policies.route_table import Sampling

E0 = [1.0] + [0.0] * 383  # the CountingEncoder embeds every text as e0
E1 = [0.0, 1.0] + [0.0] * 382


@pytest.fixture
def database_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """The test's own SQLite file, or its own PostgreSQL database when the test asks for `postgres`."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return sqlite_url
    url: str = request.getfixturevalue("postgres_url")
    return url


@asynccontextmanager
async def server(
    database_url: str, spill_dir: Path, refresh_s: float = 60.0
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    router = respx.Router(assert_all_called=False)
    router.post("http://up-a/v1/chat/completions").mock(
        return_value=Response(200, json=completion("small-a"))
    )
    router.post("http://up-t/v1/chat/completions").mock(return_value=Response(200, json=completion("big")))
    if not database_url.startswith("sqlite"):
        await migrate.upgrade(database_url)
    # Everything the gateway writes goes under the test's own directory, never into the working directory.
    config = settings(
        database_url=database_url,
        accounting={"spill_dir": str(spill_dir)},
        routing={"strategy": "promotion", "refresh_s": refresh_s},
        cache={"exact": {"enabled": False}},
    )
    app = create_server(config, upstream_transport=httpx.MockTransport(router.handler), rng=random.Random(0))
    async with app.router.lifespan_context(app):
        gw = app.state.gateway
        gw.chat.embedder = CountingEncoder()  # type: ignore[assignment]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            yield client, gw


async def tier(client: httpx.AsyncClient) -> str:
    r = await client.post(
        "/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": "x"}]},
        headers=AUTH,
    )
    return r.headers["x-tiergate-tier"]


async def test_put_get_history_and_rollback(database_url: str, tmp_path: Path) -> None:
    async with server(database_url, tmp_path) as (client, _):
        assert await tier(client) == "teacher"  # no table: every domain is unknown
        first = await client.put(
            "/admin/route-table",
            json={"routes": {"billing": "student"}, "centroids": {"billing": E0}, "note": "promote billing"},
            headers=AUTH,
        )
        assert first.status_code == 201 and first.json()["version"] == 1
        assert await tier(client) == "student"  # this replica installs its own write at once
        second = await client.put(
            "/admin/route-table",
            json={"routes": {"billing": "teacher"}, "centroids": {"billing": E0}, "base_version": 1},
            headers=AUTH,
        )
        assert second.json()["version"] == 2 and await tier(client) == "teacher"
        current = (await client.get("/admin/route-table", headers=AUTH)).json()
        assert current["version"] == current["serving_version"] == 2 and current["routes"] == {
            "billing": "teacher"
        }
        back = await client.post("/admin/route-table/rollback", headers=AUTH)
        assert (
            back.status_code == 201
            and back.json()["version"] == 3
            and back.json()["routes"] == {"billing": "student"}
        )
        assert await tier(client) == "student"
        again = await client.post("/admin/route-table/rollback", json={"to_version": 2}, headers=AUTH)
        assert again.json()["version"] == 4 and await tier(client) == "teacher"
        history = (await client.get("/admin/route-table/history?limit=10", headers=AUTH)).json()["data"]
        assert [h["version"] for h in history] == [4, 3, 2, 1] and history[-1]["note"] == "promote billing"


async def test_a_domain_far_from_every_centroid_is_general(database_url: str, tmp_path: Path) -> None:
    async with server(database_url, tmp_path) as (client, _):
        await client.put(
            "/admin/route-table",
            json={"routes": {"billing": "student"}, "centroids": {"billing": E1}},
            headers=AUTH,
        )
        assert await tier(client) == "teacher"
        await client.put("/admin/route-table", json={"routes": {"general": "student"}}, headers=AUTH)
        assert await tier(client) == "student"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "param"),
    [
        ("PUT", "/admin/route-table", {"routes": {"billing": "intern"}}, 400, "routes.billing"),
        ("PUT", "/admin/route-table", {"routes": []}, 400, "routes"),
        ("PUT", "/admin/route-table", {"routes": {}, "centroids": {"x": [1.0, 2.0]}}, 400, "centroids.x"),
        ("PUT", "/admin/route-table", {"routes": {}, "centroids": {"x": [0.0] * 384}}, 400, "centroids.x"),
        ("PUT", "/admin/route-table", {"routes": {}, "extra": 1}, 400, "extra"),
        ("PUT", "/admin/route-table", {"routes": {}, "names": {"d1": ""}}, 400, "names.d1"),
        ("PUT", "/admin/route-table", {"routes": {}, "names": ["d1"]}, 400, "names"),
        (
            "PUT",
            "/admin/route-table",
            {"routes": {}, "sampling": {"x": {"explore": 2}}},
            400,
            "sampling.x.explore",
        ),
        (
            "PUT",
            "/admin/route-table",
            {"routes": {"billing": "teacher"}, "sampling": {"billing": {"monitor": 0.1, "incumbent": "ta"}}},
            400,
            "sampling.billing.incumbent",
        ),
        ("PUT", "/admin/route-table", {"routes": {}, "sampling": {"x": {"share": 0.1}}}, 400, "sampling.x"),
        ("PUT", "/admin/route-table", {"routes": {}, "base_version": 7}, 409, "base_version"),
        ("POST", "/admin/route-table/rollback", {}, 404, "to_version"),  # nothing to roll back to
        ("POST", "/admin/route-table/rollback", {"to_version": 9}, 404, "to_version"),
        ("POST", "/admin/route-table/rollback", {"to_version": 2**80}, 404, "to_version"),  # no overflow
        ("POST", "/admin/route-table/rollback", {"to_version": 1.5}, 400, "to_version"),
        # An unknown field must not roll back to the default version instead.
        ("POST", "/admin/route-table/rollback", {"version": 1}, 400, "version"),
        ("PUT", "/admin/route-table", {"routes": {}, "note": {}}, 400, "note"),
        ("PUT", "/admin/route-table", {"routes": {}, "centroids": []}, 400, "centroids"),
        ("GET", "/admin/route-table/history?limit=0", None, 400, "limit"),
    ],
)
async def test_bad_writes_are_refused_and_change_nothing(
    method: str, path: str, body: Any, status: int, param: str, database_url: str, tmp_path: Path
) -> None:
    async with server(database_url, tmp_path) as (client, gw):
        await client.put("/admin/route-table", json={"routes": {"billing": "student"}}, headers=AUTH)
        r = await client.request(method, path, json=body, headers=AUTH)
        assert r.status_code == status and r.json()["error"]["param"] == param
        assert await gw.control.route_tables.latest_version() == 1 and gw.router.snapshot.table.version == 1


async def test_only_the_master_key_may_use_it(database_url: str, tmp_path: Path) -> None:
    async with server(database_url, tmp_path) as (client, gw):
        authenticate_with(gw, TenantKeys())
        assert (await client.get("/admin/route-table")).status_code == 401
        denied = await client.put(
            "/admin/route-table", json={"routes": {}}, headers={"authorization": "Bearer k-acme-1"}
        )
        assert denied.status_code == 403 and await gw.control.route_tables.latest_version() == 0


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/admin/route-table", "GET, HEAD, PUT"),
        ("DELETE", "/admin/route-table", "GET, HEAD, PUT"),
        ("PUT", "/admin/route-table/history", "GET, HEAD"),
        ("GET", "/admin/route-table/rollback", "POST"),
    ],
)
async def test_a_method_a_path_does_not_take_is_a_405_naming_those_it_does(
    method: str, path: str, allow: str, database_url: str, tmp_path: Path
) -> None:
    async with server(database_url, tmp_path) as (client, gw):
        r = await client.request(method, path, json={"routes": {}}, headers=AUTH)
        assert r.status_code == 405 and r.headers["allow"] == allow and r.headers["x-request-id"]
        assert r.json()["error"]["code"] == "method_not_allowed"
        assert await gw.control.route_tables.latest_version() == 0


async def test_head_reads_and_other_paths_under_it_are_the_admin_apis_404(
    database_url: str, tmp_path: Path
) -> None:
    async with server(database_url, tmp_path) as (client, gw):
        # HEAD is a GET without a body: it used to fall through to the write and was refused as one.
        head = await client.request("HEAD", "/admin/route-table", content=b'{"routes": {}}', headers=AUTH)
        assert head.status_code == 200 and await gw.control.route_tables.latest_version() == 0
        for path in ("/admin/route-table/", "/admin/route-table/nope", "/admin/route-tables"):
            r = await client.get(path, headers=AUTH)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", path


async def test_a_running_gateway_picks_up_a_version_another_replica_wrote(
    database_url: str, tmp_path: Path
) -> None:
    async with server(database_url, tmp_path, refresh_s=0.05) as (client, gw):
        assert await tier(client) == "teacher"
        # Another replica's write: straight into the shared store, not through this replica's API.
        await gw.control.route_tables.append(
            RouteTableDoc({"general": "student"}), author="replica-2", base_version=None
        )
        deadline = asyncio.get_running_loop().time() + 5
        while gw.router.snapshot.table.version != 1:
            assert asyncio.get_running_loop().time() < deadline, "the new version was not picked up"
            await asyncio.sleep(0.02)
        assert await tier(client) == "student"


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_a_written_version_survives_a_restart(database_url: str, tmp_path: Path) -> None:
    async with server(database_url, tmp_path) as (client, _):
        # No monitoring share for billing: its requests are all the student's, so `tier` is deterministic.
        sampling = {"billing": {"monitor": 0.0, "incumbent": "teacher"}, "code": {"explore": 0.3}}
        r = await client.put(
            "/admin/route-table",
            json={
                "routes": {"billing": "student", "code": "teacher"},
                "centroids": {"billing": E0},
                "note": "keep me",
                "sampling": sampling,
            },
            headers=AUTH,
        )
        assert r.status_code == 201 and r.json()["sampling"] == sampling
    async with server(database_url, tmp_path) as (client, gw):
        # Installed at startup, before the first request: no poll needed.
        assert gw.router.snapshot.table.version == 1 and await tier(client) == "student"
        current = (await client.get("/admin/route-table", headers=AUTH)).json()
        assert current["version"] == current["serving_version"] == 1
        assert current["note"] == "keep me" and current["centroids"]["billing"] == E0
        assert current["sampling"] == sampling
        assert gw.router.snapshot.table.sampling == {
            "billing": Sampling(0.0, "teacher"),
            "code": Sampling(0.3),
        }
