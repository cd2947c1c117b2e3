"""Shadow evaluation in-process: the candidate is asked after the client has its answer, the cheap check
settles agreements, the judge is asked both ways round, every call is booked as evaluation spend within the
daily cap, and nothing of it reaches the client's response."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import respx
from httpx import Response
from sqlalchemy import select

from tests.gateway.conftest import AUTH, completion, gateway, gateway_app, settings
from tests.support import gateway_of, metric, parse_metrics
from tiergate.gateway.db.learning import Evaluation
from tiergate.gateway.db.models import LedgerEntry
from tiergate.policies.judge import JUDGE_VERSION

STUDENT, TEACHER, JUDGE = (
    "http://up-a/v1/chat/completions",
    "http://up-t/v1/chat/completions",
    "http://up-j/v1/chat/completions",
)
QUESTION = "Which planet is largest? (A) Mars (B) Jupiter (C) Venus"


def config(shadow: dict[str, Any] | None = None, **learning: Any) -> Any:
    price = {"input_cost_per_mtok": 1, "output_cost_per_mtok": 2}
    tiers = {
        "student": [{"model": "small-a", "api_base": "http://up-a/v1", **price}],
        "teacher": [{"model": "big", "api_base": "http://up-t/v1", "input_cost_per_mtok": 10, "output_cost_per_mtok": 20}],
        "supervisor": [{"model": "judge", "api_base": "http://up-j/v1", "input_cost_per_mtok": 30, "output_cost_per_mtok": 60}],
    }  # fmt: skip
    return settings(
        tiers=tiers,
        upstream={"max_retries": 0, "backoff_base_s": 0.001, "backoff_max_s": 0.002},
        # Every request shadowed, the share cap far above the spend (its own tests set it): each test sees
        # its calls.
        learning={
            "shadow": {"fraction": 1.0, "evaluation_share": 1000, **(shadow or {})},
            "traces": {"content": "full"},
            **learning,
        },
        accounting={"ledger_flush_s": 0.01},
    )


def ask(text: str = QUESTION) -> dict[str, Any]:
    return {"model": "teacher", "messages": [{"role": "user", "content": text}]}


def judge_prefers(served: str) -> Any:
    """A judge that prefers the served answer wherever it stands (an unbiased judge)."""

    def handle(request: httpx.Request) -> Response:
        prompt = json.loads(request.content)["messages"][1]["content"]
        winner = "A" if prompt.split("Answer A:\n<<<\n", 1)[1].startswith(served) else "B"
        reply = json.dumps({"winner": winner, "reason": "the served answer names Jupiter"})
        return Response(200, json=completion("judge", reply))

    return handle


async def rows(gw: Any) -> list[Any]:
    await gw.learning.shadow.drain()
    await gw.accounting.ledger.flush()
    async with gw.accounting.engine.connect() as conn:
        return list((await conn.execute(select(Evaluation.__table__))).all())  # type: ignore[attr-defined]


async def evaluation_ledger(gw: Any) -> list[Any]:
    table = LedgerEntry.__table__  # type: ignore[attr-defined]
    async with gw.accounting.engine.connect() as conn:
        return list((await conn.execute(select(table).where(table.c.kind == "evaluation"))).all())


async def test_an_agreement_found_by_the_cheap_check_costs_no_judge_call() -> None:
    router = respx.Router(assert_all_called=False)
    router.post(TEACHER).mock(
        return_value=Response(200, json=completion("big", "The answer is (B) Jupiter."))
    )
    student = router.post(STUDENT).mock(return_value=Response(200, json=completion("small-a", "B")))
    judge = router.post(JUDGE).mock(return_value=Response(500))
    async with gateway(router, config()) as (client, records):
        gw = gateway_of(client)
        r = await client.post("/v1/chat/completions", json=ask(), headers=AUTH)
        (row,) = await rows(gw)
        ledger = await evaluation_ledger(gw)
    assert (
        r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "The answer is (B) Jupiter."
    )
    assert student.call_count == 1 and judge.call_count == 0
    sent = json.loads(student.calls.last.request.content)
    assert sent["model"] == "small-a" and sent["messages"] == ask()["messages"] and "stream" not in sent
    assert (row.served_tier, row.candidate_tier, row.candidate_model) == ("teacher", "student", "small-a")
    assert (row.status, row.agreement, row.agreed, row.verdict, row.score) == (
        "ok",
        "choice",
        True,
        "as_good",
        0.5,
    )
    assert row.request_id == records[0].request_id and row.candidate_answer["content"] == "B"
    # One ledger row for the shadow call, at the student's price, as evaluation spend.
    (booked,) = ledger
    assert (booked.tier, booked.request_id, booked.cost_nano) == (
        "student",
        row.request_id,
        100 * 1000 + 50 * 2000,
    )
    assert row.candidate_cost_nano == booked.cost_nano and row.judge_cost_nano == 0
    assert records[0].cost_nano == 100 * 10_000 + 50 * 20_000  # the client pays for its own answer only


async def test_a_disagreement_is_judged_in_both_orders() -> None:
    router = respx.Router(assert_all_called=False)
    router.post(TEACHER).mock(return_value=Response(200, json=completion("big", "Jupiter, answer B")))
    router.post(STUDENT).mock(return_value=Response(200, json=completion("small-a", "Venus, answer C")))
    judge = router.post(JUDGE).mock(side_effect=judge_prefers("Jupiter"))
    async with gateway(router, config()) as (client, _):
        gw = gateway_of(client)
        assert (await client.post("/v1/chat/completions", json=ask(), headers=AUTH)).status_code == 200
        (row,) = await rows(gw)
        ledger = await evaluation_ledger(gw)
    assert judge.call_count == 2
    first, second = (json.loads(c.request.content)["messages"][1]["content"] for c in judge.calls)
    assert "Answer A:\n<<<\nVenus" in first and "Answer A:\n<<<\nJupiter" in second  # positions swapped
    assert (row.agreement, row.agreed, row.verdict, row.score) == ("choice", False, "worse", 0.0)
    assert row.rationale == "the served answer names Jupiter" and row.judge_version == JUDGE_VERSION
    assert row.judge_model == "judge"
    assert sorted(b.tier for b in ledger) == ["student", "supervisor", "supervisor"]
    assert row.judge_cost_nano == sum(b.cost_nano for b in ledger if b.tier == "supervisor") > 0


async def test_a_judge_biased_to_one_position_gives_as_good() -> None:
    router = respx.Router(assert_all_called=False)
    router.post(TEACHER).mock(return_value=Response(200, json=completion("big", "Jupiter, answer B")))
    router.post(STUDENT).mock(return_value=Response(200, json=completion("small-a", "Venus, answer C")))
    always_a = json.dumps({"winner": "A", "reason": "first is best"})
    router.post(JUDGE).mock(return_value=Response(200, json=completion("judge", always_a)))
    async with gateway(router, config()) as (client, _):
        gw = gateway_of(client)
        assert (await client.post("/v1/chat/completions", json=ask(), headers=AUTH)).status_code == 200
        (row,) = await rows(gw)
    assert (row.verdict, row.score) == ("as_good", 0.5)


async def test_a_slow_candidate_does_not_delay_the_client() -> None:
    """The candidate is held until the test releases it; the client has its answer meanwhile."""
    started, release = asyncio.Event(), asyncio.Event()

    async def held(request: httpx.Request) -> Response:
        started.set()
        await release.wait()
        return Response(200, json=completion("small-a", "B"))

    router = respx.Router(assert_all_called=False)
    router.post(TEACHER).mock(return_value=Response(200, json=completion("big", "B")))
    router.post(STUDENT).mock(side_effect=held)
    async with gateway_app(httpx.MockTransport(router.async_handler), config()) as (app, client, records):
        gw = app.state.gateway
        r = await client.post("/v1/chat/completions", json=ask(), headers=AUTH)
        assert r.status_code == 200 and records[0].latency_s > 0
        await asyncio.wait_for(started.wait(), 10)  # the candidate call is in flight ...
        assert not release.is_set() and gw.learning.shadow.depth() == 0  # ... and the client was answered
        release.set()
        (row,) = await rows(gw)
    assert row.agreed and row.status == "ok"


async def test_the_daily_evaluation_budget_stops_shadowing_counted() -> None:
    router = respx.Router(assert_all_called=False)
    router.post(TEACHER).mock(return_value=Response(200, json=completion("big", "B")))
    student = router.post(STUDENT).mock(return_value=Response(200, json=completion("small-a", "B")))
    # The first shadow call costs 200,000 nano-USD; the cap is 100,000.
    async with gateway(router, config({"daily_budget_usd": 0.0001})) as (client, _):
        gw = gateway_of(client)
        for _ in range(3):
            assert (await client.post("/v1/chat/completions", json=ask(), headers=AUTH)).status_code == 200
            await gw.learning.shadow.drain()
        evaluated = await rows(gw)
        samples = parse_metrics((await client.get("/metrics", headers=AUTH)).text)
    assert student.call_count == 1 and len(evaluated) == 1
    assert metric(samples, "tiergate_shadow_evaluations_total", outcome="over_budget") == 2
    assert metric(samples, "tiergate_shadow_evaluations_total", outcome="agreed") == 1


async def test_a_failed_candidate_is_recorded_and_a_full_queue_counted() -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def failing(request: httpx.Request) -> Response:
        started.set()
        await release.wait()
        return Response(500)

    router = respx.Router(assert_all_called=False)
    router.post(TEACHER).mock(return_value=Response(200, json=completion("big", "B")))
    router.post(STUDENT).mock(side_effect=failing)
    shadow = config({"queue_size": 1, "concurrency": 1})
    async with gateway_app(httpx.MockTransport(router.async_handler), shadow) as (app, client, _):
        gw = app.state.gateway
        await client.post("/v1/chat/completions", json=ask(), headers=AUTH)
        await asyncio.wait_for(started.wait(), 10)  # the worker holds the first; the queue is empty
        for _ in range(2):  # the second waits in the queue, the third finds it full
            assert (await client.post("/v1/chat/completions", json=ask(), headers=AUTH)).status_code == 200
        samples = parse_metrics((await client.get("/metrics", headers=AUTH)).text)
        release.set()
        failed = await rows(gw)
    assert metric(samples, "tiergate_queue_dropped_total", queue="shadow") == 1
    assert [r.status for r in failed] == ["candidate_failed", "candidate_failed"]
    assert all(r.verdict is None and r.candidate_cost_nano == 0 for r in failed)


async def test_candidate_answers_and_rationales_follow_the_content_policy() -> None:
    router = respx.Router(assert_all_called=False)
    router.post(TEACHER).mock(return_value=Response(200, json=completion("big", "Jupiter, answer B")))
    router.post(STUDENT).mock(
        return_value=Response(200, json=completion("small-a", "Write to bob@example.com, C"))
    )
    reply = json.dumps({"winner": "B", "reason": "A asks to mail bob@example.com"})
    router.post(JUDGE).mock(return_value=Response(200, json=completion("judge", reply)))
    for content, answer, rationale in (
        ("redacted", "Write to [EMAIL], C", "A asks to mail [EMAIL]"),
        ("none", None, None),
    ):
        async with gateway(router, config(traces={"content": content})) as (client, _):
            gw = gateway_of(client)
            assert (await client.post("/v1/chat/completions", json=ask(), headers=AUTH)).status_code == 200
            row = (await rows(gw))[-1]
        assert row.content == content and row.verdict is not None
        assert (row.candidate_answer or {}).get("content") == answer and row.rationale == rationale


async def test_a_candidate_that_reports_no_usage_is_billed_on_counted_tokens() -> None:
    router = respx.Router(assert_all_called=False)
    router.post(TEACHER).mock(return_value=Response(200, json=completion("big", "B")))
    router.post(STUDENT).mock(return_value=Response(200, json=completion("small-a", "B", usage=False)))
    async with gateway(router, config()) as (client, _):
        gw = gateway_of(client)
        assert (await client.post("/v1/chat/completions", json=ask(), headers=AUTH)).status_code == 200
        (row,) = await rows(gw)
        (booked,) = await evaluation_ledger(gw)
    # Counted locally: the prompt's tokens (with OpenAI's framing) and one for "B", at $1 and $2 per Mtok.
    assert booked.prompt_tokens > 10 and booked.completion_tokens == 1
    assert row.candidate_cost_nano == booked.cost_nano == booked.prompt_tokens * 1000 + 2000


async def test_a_call_through_the_messages_door_is_shadowed_in_its_chat_form() -> None:
    router = respx.Router(assert_all_called=False)
    router.post(TEACHER).mock(
        return_value=Response(200, json=completion("big", "The answer is (B) Jupiter."))
    )
    student = router.post(STUDENT).mock(return_value=Response(200, json=completion("small-a", "B")))
    async with gateway(router, config()) as (client, records):
        gw = gateway_of(client)
        r = await client.post("/v1/messages", json={**ask(), "max_tokens": 50}, headers=AUTH)
        (row,) = await rows(gw)
    assert r.status_code == 200 and r.json()["content"][0]["text"] == "The answer is (B) Jupiter."
    sent = json.loads(student.calls.last.request.content)
    assert sent["messages"] == ask()["messages"] and sent["max_tokens"] == 50
    assert (row.served_tier, row.candidate_tier, row.verdict) == ("teacher", "student", "as_good")
    assert records[0].endpoint == "messages" and row.request_id == records[0].request_id
