"""Shadow and judge calls are booked as evaluation spend: in the ledger and the cost report in their own
columns, and never against the tenant's request budget (which still binds the tenant's own requests)."""

from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy import select

from tests.admin.conftest import ADMIN, config, serve
from tiergate.gateway.db.learning import Evaluation


def dep(model: str, price_in: float, price_out: float) -> dict[str, object]:
    return {"model": model, "api_base": "http://up/v1", "input_cost_per_mtok": price_in,
            "output_cost_per_mtok": price_out, "max_output_tokens": 1000}  # fmt: skip


def answers(request: httpx.Request) -> httpx.Response:
    """The teacher says B, the student C, the judge prefers the teacher; usage 10 + 5 tokens each."""
    body = json.loads(request.content)
    content = {"big": "The answer is B", "small": "The answer is C"}.get(body["model"])
    if content is None:
        served_first = "The answer is B" in body["messages"][1]["content"].split("Answer B:")[0]
        content = json.dumps({"winner": "A" if served_first else "B", "reason": "B is right"})
    return httpx.Response(200, json={
        "id": "c", "object": "chat.completion", "created": 1, "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    })  # fmt: skip


async def test_evaluation_spend_is_reported_apart_and_spares_the_request_budget(database_url: str) -> None:
    settings = config(
        database_url,
        tiers={"student": [dep("small", 1, 2)], "teacher": [dep("big", 10, 40)], "supervisor": [dep("judge", 100, 400)]},
        learning={"shadow": {"fraction": 1.0, "daily_budget_usd": 1.0, "evaluation_share": 1000}},
    )  # fmt: skip
    async with serve(settings, answers) as s:
        # Each teacher answer costs 300,000 nano-USD and reserves ~490,000 (the prompt allowance and 5 output
        # tokens): three fit in the budget, a fourth does not.
        tenant = await s.new_tenant(budget_usd=0.0011)
        key = await s.new_key(tenant["id"])
        for _ in range(3):
            r = await s.chat(key["key"], "teacher", max_tokens=5)
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "The answer is B"
            # Each evaluation (6,020,000 nano-USD) is done before the next request.
            await s.gateway.learning.shadow.drain()
        await s.flushed()
        async with s.gateway.accounting.engine.connect() as conn:
            verdicts = (await conn.execute(select(Evaluation.__table__.c.verdict))).scalars().all()  # type: ignore[attr-defined]
        assert verdicts == ["worse"] * 3  # the judge preferred the teacher, both ways round
        # The request budget binds the tenant's own requests only.
        assert (await s.chat(key["key"], "teacher", max_tokens=5)).status_code == 429
        report = (
            await s.client.get(f"/admin/reports/cost?tenant_id={tenant['id']}&group_by=tier", headers=ADMIN)
        ).json()
        usage = (await s.client.get("/v1/usage", headers={"authorization": f"Bearer {key['key']}"})).json()
        csv = (
            await s.client.get(f"/admin/reports/cost?tenant_id={tenant['id']}&format=csv", headers=ADMIN)
        ).text
    total = report["total"]
    assert total["requests"] == 3 and total["cost_usd"] == pytest.approx(0.0009)
    assert total["evaluation_calls"] == 9  # per request: one shadow call, two judge calls
    assert total["evaluation_cost_usd"] == pytest.approx(3 * (20_000 + 2 * 3_000_000) / 1e9)
    tiers = {row["tier"]: row for row in report["rows"]}
    assert (tiers["teacher"]["requests"], tiers["teacher"]["evaluation_calls"]) == (3, 0)
    assert (tiers["student"]["requests"], tiers["student"]["evaluation_calls"]) == (0, 3)
    assert (tiers["supervisor"]["requests"], tiers["supervisor"]["evaluation_cost_usd"]) == (
        0,
        pytest.approx(0.018),
    )
    # A key sees the evaluation spend its requests caused, apart from its own.
    assert usage["total"]["evaluation_calls"] == 9 and usage["total"]["requests"] == 3
    header = csv.lstrip("\ufeff").splitlines()[0]
    assert header.endswith("evaluation_calls,evaluation_cost_usd")
