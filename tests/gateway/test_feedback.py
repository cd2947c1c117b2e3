"""`POST /v1/feedback`: only on the caller's tenant's requests, validated before anything is written, the
comment kept per content policy, and found even before the trace reached the database."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select

from tests.admin.conftest import ADMIN, config, serve
from tiergate.gateway.db import migrate
from tiergate.gateway.db.learning import Feedback


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """Both databases; PostgreSQL migrated first (a gateway on it only checks the schema)."""
    if request.param == "sqlite":
        return sqlite_url
    url: str = request.getfixturevalue("postgres_url")
    asyncio.run(migrate.upgrade(url))
    return url


def bearer(key: dict[str, Any]) -> dict[str, str]:
    return {"authorization": f"Bearer {key['key']}"}


async def stored(s: Any) -> list[Any]:
    async with s.gateway.accounting.engine.connect() as conn:
        return list((await conn.execute(select(Feedback.__table__))).all())  # type: ignore[attr-defined]


async def test_feedback_crosses_no_tenant_wall(database_url: str) -> None:
    async with serve(config(database_url, learning={"traces": {"flush_s": 0.01}})) as s:
        acme, globex = await s.new_tenant(), await s.new_tenant(name="globex")
        mine, colleague, theirs = (
            await s.new_key(acme["id"]),
            await s.new_key(acme["id"]),
            await s.new_key(globex["id"]),
        )
        answered = await s.chat(mine["key"])
        rid = answered.headers["x-request-id"]
        await s.gateway.learning.traces.flush()
        given = await s.client.post(
            "/v1/feedback", json={"request_id": rid, "score": 0.25}, headers=bearer(mine)
        )
        assert given.status_code == 201 and given.json()["score"] == 0.25
        # Another key of the same tenant may (a rotated key, another service of the tenant's) ...
        again = await s.client.post(
            "/v1/feedback", json={"request_id": rid, "label": "bad"}, headers=bearer(colleague)
        )
        assert again.status_code == 201
        # ... another tenant's key may not, and learns nothing: the same 404 as for an id nobody used.
        foreign = await s.client.post(
            "/v1/feedback", json={"request_id": rid, "label": "good"}, headers=bearer(theirs)
        )
        unknown = await s.client.post(
            "/v1/feedback", json={"request_id": "req_none", "label": "good"}, headers=bearer(mine)
        )
        assert foreign.status_code == unknown.status_code == 404
        assert foreign.json()["error"]["message"].replace(rid, "X") == unknown.json()["error"][
            "message"
        ].replace("req_none", "X")
        rows = await stored(s)
    assert [(r.score, r.label, r.key_id) for r in rows] == [
        (0.25, None, mine["id"]),
        (0.0, "bad", colleague["id"]),
    ]
    assert {r.tenant_id for r in rows} == {acme["id"]}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"score": 0.5}, "request_id"),
        ({"request_id": "", "score": 0.5}, "request_id"),
        ({"request_id": "R"}, "score"),  # neither score nor label
        ({"request_id": "R", "score": 1, "label": "good"}, "score"),  # both
        ({"request_id": "R", "score": 1.01}, "score"),
        ({"request_id": "R", "score": -0.1}, "score"),
        ({"request_id": "R", "score": True}, "score"),
        ({"request_id": "R", "score": "1"}, "score"),
        ({"request_id": "R", "label": "meh"}, "label"),
        ({"request_id": "R", "label": "good", "comment": 5}, "comment"),
        ({"request_id": "R", "label": "good", "comment": "x" * 4001}, "comment"),
        ({"request_id": "R", "label": "good", "stars": 5}, "stars"),
    ],
)
async def test_bad_input_is_a_400_naming_the_field_and_writes_nothing(
    sqlite_url: str, body: dict[str, Any], param: str
) -> None:
    async with serve(config(sqlite_url)) as s:
        key = await s.new_key((await s.new_tenant())["id"])
        rid = (await s.chat(key["key"])).headers["x-request-id"]
        body = {k: (rid if v == "R" else v) for k, v in body.items()}
        r = await s.client.post("/v1/feedback", json=body, headers=bearer(key))
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
        for raw in (b"", b"[1]", b"{nope"):
            assert (await s.client.post("/v1/feedback", content=raw, headers=bearer(key))).status_code == 400
        assert (await s.client.post("/v1/feedback", json={"request_id": rid, "score": 1})).status_code == 401
        assert await stored(s) == []


async def test_a_trace_still_queued_is_found_and_the_comment_follows_the_content_policy(
    sqlite_url: str,
) -> None:
    # Traces wait a minute before they are written: the feedback must find the request in the writer's queue.
    settings = config(sqlite_url, learning={"traces": {"flush_s": 60, "content": "redacted"}})
    async with serve(settings) as s:
        tenant = await s.new_tenant()
        key = await s.new_key(tenant["id"])
        rid = (await s.chat(key["key"])).headers["x-request-id"]
        assert s.gateway.learning.traces.pending_tenant(rid) == (True, tenant["id"])
        comment = "wrong, mail me at jane@example.com"
        r = await s.client.post(
            "/v1/feedback", json={"request_id": rid, "label": "bad", "comment": comment}, headers=bearer(key)
        )
        assert r.status_code == 201 and r.json()["comment"] == "wrong, mail me at [EMAIL]"
        await s.client.patch(f"/admin/tenants/{tenant['id']}", json={"trace_content": "none"}, headers=ADMIN)
        r = await s.client.post(
            "/v1/feedback", json={"request_id": rid, "label": "bad", "comment": comment}, headers=bearer(key)
        )
        assert r.status_code == 201 and r.json()["comment"] is None
        assert [row.comment for row in await stored(s)] == ["wrong, mail me at [EMAIL]", None]
