"""The same workload through the Chat, Completions, Messages and Responses doors: one budget, one ledger, one
cost report."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from tests.admin.conftest import ADMIN, config, serve
from tiergate.gateway.db.models import LedgerEntry

QUESTION = "hello there"


def door_requests(key: str) -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    """(path, body, headers) of one request per door, each asking the student the same question."""
    bearer = {"authorization": f"Bearer {key}"}
    return [
        ("/v1/chat/completions",
         {"model": "student", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 5}, bearer),
        ("/v1/completions", {"model": "student", "prompt": QUESTION, "max_tokens": 5}, bearer),
        ("/v1/messages", {"model": "student", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 5},
         {"x-api-key": key, "anthropic-version": "2023-06-01"}),
        ("/v1/responses", {"model": "student", "input": QUESTION, "max_output_tokens": 5}, bearer),
    ]  # fmt: skip


async def test_every_door_is_booked_against_one_budget_and_reported(database_url: str) -> None:
    async with serve(config(database_url, cache={"exact": {"enabled": False}})) as s:
        # Each answer costs 10 * 1,000 + 5 * 2,000 = 20,000 nano-USD.
        tenant = await s.new_tenant(budget_usd=1.0)
        key = (await s.new_key(tenant["id"]))["key"]
        for _ in range(2):
            for path, body, headers in door_requests(key):
                r = await s.client.post(path, json=body, headers=headers)
                assert r.status_code == 200, (path, r.text)
        await s.flushed()
        # A budget of exactly what the eight answers cost leaves nothing to reserve for a ninth.
        patched = await s.client.patch(
            f"/admin/tenants/{tenant['id']}", json={"budget_usd": 0.00016}, headers=ADMIN
        )
        assert patched.status_code == 200, patched.text
        refused = {}
        for path, body, headers in door_requests(key):
            r = await s.client.post(path, json=body, headers=headers)
            refused[path] = (r.status_code, r.json())
        await s.flushed()
        async with s.gateway.accounting.engine.connect() as conn:
            table = LedgerEntry.__table__  # type: ignore[attr-defined]
            rows = (await conn.execute(select(table.c.endpoint, table.c.cost_nano, table.c.key_id))).all()
        report = (
            await s.client.get(
                f"/admin/reports/cost?tenant_id={tenant['id']}&group_by=endpoint", headers=ADMIN
            )
        ).json()
        usage = (await s.client.get("/v1/usage?group_by=endpoint", headers={"x-api-key": key})).json()
    assert sorted(r.endpoint for r in rows) == (
        ["chat"] * 2 + ["completions"] * 2 + ["messages"] * 2 + ["responses"] * 2
    )
    assert {r.cost_nano for r in rows} == {20_000} and {r.key_id for r in rows} == {usage["key_id"]}
    # The budget is spent: each door refuses in its own API's shape.
    assert refused["/v1/chat/completions"][0] == 429
    assert refused["/v1/chat/completions"][1]["error"]["code"] == "insufficient_quota"
    assert refused["/v1/completions"][0] == 429
    assert refused["/v1/messages"][0] == 402
    assert refused["/v1/messages"][1]["error"]["type"] == "billing_error"
    assert refused["/v1/responses"][0] == 429
    assert refused["/v1/responses"][1]["error"]["code"] == "insufficient_quota"
    by_door = {row["endpoint"]: row for row in report["rows"]}
    assert set(by_door) == {"chat", "completions", "messages", "responses"}
    for row in by_door.values():
        assert (row["requests"], row["prompt_tokens"], row["completion_tokens"]) == (2, 20, 10)
        assert row["cost_usd"] == pytest.approx(40_000 / 1e9)
    assert report["total"]["requests"] == 8 and report["total"]["cost_usd"] == pytest.approx(160_000 / 1e9)
    assert {row["endpoint"] for row in usage["rows"]} == set(by_door) and usage["total"]["requests"] == 8
