"""The caps on a tenant's evaluation spend: dollars per day and a share of its serving spend, with this
replica's calls in flight held inside the share, and the other replicas' spend read from the ledger."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import respx
from httpx import Response
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.gateway.conftest import AUTH, completion, gateway
from tests.gateway.learning.test_shadow import STUDENT, TEACHER, ask, config, evaluation_ledger, rows
from tests.support import gateway_of, metric, parse_metrics
from tiergate.gateway.db import migrate
from tiergate.gateway.db.engine import open_engine
from tiergate.gateway.db.models import LedgerEntry
from tiergate.gateway.learning.evaluation_budget import EvaluationBudget, utc_day
from tiergate.policies.exploration import EVALUATION_SHARE

NOW = 1_750_000_000.0
DOLLAR = 10**9


@pytest.fixture
async def engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    await migrate.upgrade(sqlite_url)
    engine = open_engine(sqlite_url)
    yield engine
    await engine.dispose()


async def ledger_row(engine: AsyncEngine, tenant: str, kind: str, cost_nano: int) -> None:
    row: dict[str, Any] = {
        "entry_id": uuid.uuid4().hex, "request_id": uuid.uuid4().hex, "ts_ms": int(NOW * 1000),
        "day": utc_day(NOW), "tenant_id": tenant, "kind": kind, "endpoint": "chat", "requested_model": "teacher",
        "status": "ok", "cost_nano": cost_nano,
    }  # fmt: skip
    async with engine.begin() as conn:
        await conn.execute(insert(LedgerEntry.__table__), [row])  # type: ignore[attr-defined]


async def test_the_share_cap_holds_calls_in_flight_and_grows_with_serving(engine: AsyncEngine) -> None:
    budget = EvaluationBudget(engine, clock=lambda: NOW)
    budget.served("acme", 1000)  # the cap: 50 at a 5% share
    assert await budget.reserve("acme", DOLLAR, 0.05, 30)
    # The first call is in flight: a second that would take the spend past the share must wait.
    assert not await budget.reserve("acme", DOLLAR, 0.05, 30)
    assert await budget.reserve("acme", DOLLAR, 0.05, 20)  # 30 + 20 = 50 fits exactly
    budget.add("acme", 25)  # the first cost less than held
    budget.release("acme", 30)
    budget.release("acme", 20)
    assert await budget.spent("acme") == 25
    assert not await budget.reserve("acme", DOLLAR, 0.05, 26) and await budget.reserve(
        "acme", DOLLAR, 0.05, 25
    )
    budget.release("acme", 25)
    assert not budget.known_below("acme", DOLLAR, 0.02)  # 25 spent, over a cap of 20
    budget.served("acme", 1000)  # the tenant's traffic grows, and the cap with it (40)
    assert budget.known_below("acme", DOLLAR, 0.02) and await budget.reserve("acme", DOLLAR, 0.02, 15)
    # Tenants are apart; the dollar cap still applies.
    assert not await budget.reserve("globex", DOLLAR, 0.05, 1)
    assert not await budget.reserve("acme", 25, 1.0, 0)


async def test_the_other_replicas_spend_is_read_from_the_ledger(engine: AsyncEngine) -> None:
    now = [NOW]
    budget = EvaluationBudget(engine, refresh_s=5.0, clock=lambda: now[0])
    await ledger_row(engine, "acme", "request", 2000)
    await ledger_row(engine, "acme", "evaluation", 90)
    await ledger_row(engine, "acme", "routing", 10**6)  # domain embeddings are neither
    assert await budget.reserve("acme", DOLLAR, 0.05, 10)  # 90 + 10 <= 5% of 2000
    budget.release("acme", 10)
    assert not await budget.reserve("acme", DOLLAR, 0.05, 11)
    await ledger_row(engine, "acme", "evaluation", 10)  # another replica's call
    assert await budget.spent("acme") == 90  # not re-read before `refresh_s`
    now[0] += 5
    assert await budget.spent("acme") == 100 and not await budget.reserve("acme", DOLLAR, 0.05, 1)


async def test_the_default_share_stops_shadowing_at_five_percent_of_serving_counted() -> None:
    router = respx.Router(assert_all_called=False)
    router.post(TEACHER).mock(return_value=Response(200, json=completion("big", "B")))
    student = router.post(STUDENT).mock(return_value=Response(200, json=completion("small-a", "B")))
    async with gateway(router, config({"evaluation_share": EVALUATION_SHARE})) as (client, _):
        gw = gateway_of(client)
        for _ in range(60):
            assert (await client.post("/v1/chat/completions", json=ask(), headers=AUTH)).status_code == 200
            await gw.learning.shadow.drain()
        await rows(gw)
        evaluated = sum(r.cost_nano for r in await evaluation_ledger(gw))
        served = sum(r.cost_nano for r in await serving_ledger(gw))
        samples = parse_metrics((await client.get("/metrics", headers=AUTH)).text)
    # Every request is drawn (fraction 1); a shadow call costs a tenth of the teacher's answer, so at most
    # one in two can be afforded, and the first ones none (nothing served yet to take 5% of).
    assert 0 < student.call_count < 30 and evaluated <= EVALUATION_SHARE * served
    assert (
        metric(samples, "tiergate_shadow_evaluations_total", outcome="over_budget") == 60 - student.call_count
    )


async def serving_ledger(gw: Any) -> list[Any]:
    table = LedgerEntry.__table__  # type: ignore[attr-defined]
    async with gw.accounting.engine.connect() as conn:
        return list((await conn.execute(select(table).where(table.c.kind == "request"))).all())
