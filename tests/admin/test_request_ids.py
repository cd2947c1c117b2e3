"""Every response of the served app carries `x-request-id` (the caller's when it is a sane token), not only
the data plane's: probes, metrics, the admin API (its own errors too), and the 404/405 of unknown routes."""

from __future__ import annotations

import pytest

from tests.admin.conftest import ADMIN, config, serve

pytestmark = pytest.mark.asyncio

CALLS = [
    ("GET", "/healthz", {}, 200),
    ("GET", "/readyz", {}, 200),
    ("GET", "/metrics", ADMIN, 200),
    ("GET", "/metrics", {}, 401),
    ("GET", "/admin/tenants", ADMIN, 200),
    ("GET", "/admin/tenants", {}, 401),
    ("GET", "/admin/openapi.json", ADMIN, 200),
    ("GET", "/admin/nosuchthing", ADMIN, 404),
    ("GET", "/v1/usage", ADMIN, 400),
    ("GET", "/nosuchroute", {}, 404),
    ("DELETE", "/v1/chat/completions", {}, 405),
]


@pytest.mark.parametrize(("method", "path", "headers", "status"), CALLS)
async def test_every_response_has_a_request_id_and_echoes_a_sane_one(
    sqlite_url: str, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    async with serve(config(sqlite_url)) as s:
        fresh = await s.client.request(method, path, headers=headers)
        echoed = await s.client.request(method, path, headers={**headers, "x-request-id": "trace-42"})
        unsafe = await s.client.request(method, path, headers={**headers, "x-request-id": "a b\tc"})
    assert fresh.status_code == echoed.status_code == status, fresh.text
    assert fresh.headers["x-request-id"].startswith("req_")
    assert echoed.headers["x-request-id"] == "trace-42"
    assert unsafe.headers["x-request-id"].startswith("req_")
    assert len(fresh.headers.get_list("x-request-id")) == 1


async def test_an_oversized_admin_body_refused_before_fastapi_has_one_too(sqlite_url: str) -> None:
    async with serve(config(sqlite_url)) as s:
        limit = s.gateway.settings.accounting.admin_max_body_bytes
        refused = await s.client.post(
            "/admin/tenants", content=b"x" * (limit + 1), headers={**ADMIN, "x-request-id": "big-1"}
        )
    assert refused.status_code == 413 and refused.headers["x-request-id"] == "big-1"
