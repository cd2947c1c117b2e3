"""The cascade in-process: weak answers of the student escalate to the teacher, with the reason recorded."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import respx
from httpx import Request, Response

from tests.gateway.conftest import AUTH, chat, completion, gateway, settings, sse

STUDENT, TEACHER, JUDGE = (
    "http://up-a/v1/chat/completions",
    "http://up-t/v1/chat/completions",
    "http://up-j/v1/chat/completions",
)


def cascade_settings(**cascade: Any) -> Any:
    config = settings(routing={"strategy": "cascade", "cascade": cascade})
    return config


def answer(content: str | None = "Paris.", finish: str = "stop", **message: Any) -> dict[str, Any]:
    doc = completion("small-a", "")
    doc["choices"][0] = {
        "index": 0,
        "message": {"role": "assistant", "content": content, **message},
        "finish_reason": finish,
    }
    return doc


def body(request: Request) -> dict[str, Any]:
    return orjson.loads(request.content)  # type: ignore[no-any-return]


JSON_MODE = {"response_format": {"type": "json_object"}}
TOOLS = {"tools": [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]}


@pytest.mark.parametrize(
    ("student", "fields", "verifier"),
    [
        (answer("The capital of", finish="length"), {}, "truncated"),
        (answer(""), {}, "truncated"),
        (answer("I'm sorry, but I can't help with that."), {}, "refusal"),
        (answer("{'answer': 4"), JSON_MODE, "json"),
        (
            answer(
                None,
                finish="tool_calls",
                tool_calls=[
                    {"id": "c", "type": "function", "function": {"name": "add", "arguments": '{"a": 1,'}}
                ],
            ),
            TOOLS,
            "tool_args",
        ),
    ],
)
async def test_a_weak_answer_escalates_to_the_next_tier(
    student: dict[str, Any], fields: dict[str, Any], verifier: str
) -> None:
    router = respx.Router()
    small = router.post(STUDENT).mock(return_value=Response(200, json=student))
    good = '{"answer": 4}' if fields == JSON_MODE else "Paris."
    big = router.post(TEACHER).mock(return_value=Response(200, json=answer(good)))
    async with gateway(router, cascade_settings()) as (client, records):
        r = await client.post("/v1/chat/completions", json=chat(**fields), headers=AUTH)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == good
    assert r.headers["x-tiergate-tier"] == "teacher" and r.headers["x-tiergate-escalations"] == "1"
    assert small.call_count == 1 and big.call_count == 1
    (record,) = records
    assert record.escalations[0].startswith(f"student->teacher: {verifier}:")
    assert record.route_reason.startswith("cascade: student -> teacher")
    # Billed for both: the student's discarded answer ($1/$2 per Mtok) and the teacher's ($10/$20).
    assert record.cost_nano == (100 * 1 + 50 * 2) * 1000 + (100 * 10 + 50 * 20) * 1000


async def test_a_good_answer_stays_with_the_student() -> None:
    router = respx.Router(assert_all_called=False)
    router.post(STUDENT).mock(return_value=Response(200, json=answer("Paris.")))
    big = router.post(TEACHER).mock(return_value=Response(200, json=answer()))
    async with gateway(router, cascade_settings()) as (client, records):
        r = await client.post("/v1/chat/completions", json=chat(), headers=AUTH)
    assert r.headers["x-tiergate-tier"] == "student" and "x-tiergate-escalations" not in r.headers
    assert big.call_count == 0 and records[0].escalations == ()
    assert records[0].cost_nano == (100 * 1 + 50 * 2) * 1000


async def test_the_last_tier_is_returned_as_it_is() -> None:
    router = respx.Router()
    router.post(STUDENT).mock(return_value=Response(200, json=answer("", finish="length")))
    router.post(TEACHER).mock(return_value=Response(200, json=answer("", finish="length")))
    async with gateway(router, cascade_settings()) as (client, _):
        r = await client.post("/v1/chat/completions", json=chat(), headers=AUTH)
    assert r.status_code == 200 and r.headers["x-tiergate-tier"] == "teacher"
    assert r.json()["choices"][0]["finish_reason"] == "length"


def with_logprobs(doc: dict[str, Any], *values: float) -> dict[str, Any]:
    doc["choices"][0]["logprobs"] = {
        "content": [{"token": "t", "logprob": v, "bytes": None, "top_logprobs": []} for v in values]
    }
    return doc


async def test_logprobs_are_asked_for_verified_and_stripped_again() -> None:
    router = respx.Router()
    small = router.post(STUDENT).mock(
        side_effect=[
            Response(200, json=with_logprobs(answer("sure"), -0.1, -0.2)),
            Response(200, json=with_logprobs(answer("unsure"), -2.5, -3.0)),
            Response(200, json=with_logprobs(answer("sure"), -0.1)),
        ]
    )
    big = router.post(TEACHER).mock(return_value=Response(200, json=answer("Paris.")))
    config = cascade_settings(verifiers=["truncated", "logprob"], min_mean_logprob=-1.0)
    async with gateway(router, config) as (client, records):
        confident = await client.post("/v1/chat/completions", json=chat(), headers=AUTH)
        unsure = await client.post("/v1/chat/completions", json=chat(), headers=AUTH)
        asked = await client.post("/v1/chat/completions", json=chat(logprobs=True), headers=AUTH)
    assert body(small.calls[0].request)["logprobs"] is True
    assert confident.headers["x-tiergate-tier"] == "student"
    assert confident.json()["choices"][0]["logprobs"] is None  # the client did not ask for them
    assert unsure.headers["x-tiergate-tier"] == "teacher" and "logprob" in records[1].escalations[0]
    assert "logprobs" not in body(big.calls[0].request)  # the last tier is not verified: nothing added
    assert asked.json()["choices"][0]["logprobs"]["content"][0]["logprob"] == -0.1  # asked: kept


async def test_streamed_request_buffers_the_candidate_and_replays_it() -> None:
    router = respx.Router(assert_all_called=False)
    small = router.post(STUDENT).mock(return_value=Response(200, json=answer("Paris is the capital.")))
    router.post(TEACHER).mock(return_value=Response(200, json=answer()))
    async with gateway(router, cascade_settings()) as (client, records):
        r = await client.post(
            "/v1/chat/completions",
            json=chat(stream=True, stream_options={"include_usage": True}),
            headers=AUTH,
        )
        plain = await client.post("/v1/chat/completions", json=chat(stream=True), headers=AUTH)
    sent = body(small.calls[0].request)
    assert "stream" not in sent and "stream_options" not in sent  # fetched whole, to verify it
    assert (
        r.headers["content-type"].startswith("text/event-stream")
        and r.headers["x-tiergate-tier"] == "student"
    )
    events = [orjson.loads(line[6:]) for line in r.text.split("\n\n") if line.startswith("data: {")]
    assert (
        "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
        == "Paris is the capital."
    )
    assert events[-1]["usage"]["completion_tokens"] == 50 and r.text.endswith("data: [DONE]\n\n")
    assert b'"usage"' not in plain.content
    assert records[0].ttft_s is not None and records[0].cost_nano == (100 * 1 + 50 * 2) * 1000


async def test_streamed_request_escalates_and_the_last_tier_streams_live() -> None:
    router = respx.Router()
    router.post(STUDENT).mock(return_value=Response(200, json=answer("The", finish="length")))
    chunks = [
        {
            "id": "c",
            "model": "big",
            "choices": [{"index": 0, "delta": {"content": "Paris."}, "finish_reason": "stop"}],
        }
    ]
    big = router.post(TEACHER).mock(
        return_value=Response(200, content=sse(*chunks), headers={"content-type": "text/event-stream"})
    )
    async with gateway(router, cascade_settings()) as (client, records):
        r = await client.post("/v1/chat/completions", json=chat(stream=True), headers=AUTH)
    assert body(big.calls[0].request)["stream"] is True
    assert r.headers["x-tiergate-tier"] == "teacher" and r.headers["x-tiergate-escalations"] == "1"
    assert "Paris." in r.text and records[0].escalations[0].startswith("student->teacher: truncated")


async def test_cascade_can_be_off_for_streams() -> None:
    router = respx.Router(assert_all_called=False)
    chunks = [
        {
            "id": "c",
            "model": "small-a",
            "choices": [{"index": 0, "delta": {"content": "The"}, "finish_reason": "length"}],
        }
    ]
    small = router.post(STUDENT).mock(return_value=Response(200, content=sse(*chunks)))
    big = router.post(TEACHER).mock(return_value=Response(200, json=answer()))
    async with gateway(router, cascade_settings(streams=False)) as (client, records):
        r = await client.post("/v1/chat/completions", json=chat(stream=True), headers=AUTH)
    assert body(small.calls[0].request)["stream"] is True and big.call_count == 0
    assert r.headers["x-tiergate-tier"] == "student" and "cascade off for streams" in records[0].route_reason


@pytest.mark.parametrize(
    ("verdict", "tier"), [("FAIL", "teacher"), ("PASS", "student"), ("dunno", "student")]
)
async def test_the_judge_on_a_sampled_fraction(verdict: str, tier: str) -> None:
    router = respx.Router(assert_all_called=False)
    router.post(STUDENT).mock(return_value=Response(200, json=answer("Lyon.")))
    router.post(TEACHER).mock(return_value=Response(200, json=answer("Paris.")))
    judge = router.post(JUDGE).mock(return_value=Response(200, json=answer(verdict)))
    config = settings(
        tiers={
            "student": [
                {
                    "model": "small-a",
                    "api_base": "http://up-a/v1",
                    "input_cost_per_mtok": 1,
                    "output_cost_per_mtok": 2,
                }
            ],
            "teacher": [
                {
                    "model": "big",
                    "api_base": "http://up-t/v1",
                    "input_cost_per_mtok": 10,
                    "output_cost_per_mtok": 20,
                }
            ],
            "supervisor": [
                {
                    "model": "judge",
                    "api_base": "http://up-j/v1",
                    "input_cost_per_mtok": 100,
                    "output_cost_per_mtok": 0,
                }
            ],
        },
        routing={
            "strategy": "cascade",
            "cascade": {"tiers": ["student", "teacher"], "judge": {"tier": "supervisor", "fraction": 1.0}},
        },
    )
    async with gateway(router, config) as (client, records):
        r = await client.post("/v1/chat/completions", json=chat(), headers=AUTH)
    assert r.headers["x-tiergate-tier"] == tier and judge.call_count == 1
    prompt = body(judge.calls[0].request)["messages"][1]["content"]
    assert "hi" in prompt and "Lyon." in prompt
    judged = 100 * 100 * 1000  # the judge's prompt tokens at $100/Mtok
    student = (100 * 1 + 50 * 2) * 1000
    teacher = (100 * 10 + 50 * 20) * 1000
    assert records[0].cost_nano == (judged + student + teacher if tier == "teacher" else judged + student)
    if tier == "teacher":
        assert "judge: supervisor judged the answer FAIL" in records[0].escalations[0]


async def test_explicit_tier_requests_are_not_cascaded() -> None:
    router = respx.Router(assert_all_called=False)
    router.post(STUDENT).mock(return_value=Response(200, json=answer("", finish="length")))
    big = router.post(TEACHER).mock(return_value=Response(200, json=answer()))
    async with gateway(router, cascade_settings()) as (client, _):
        r = await client.post("/v1/chat/completions", json=chat("student"), headers=AUTH)
    assert r.headers["x-tiergate-tier"] == "student" and big.call_count == 0
