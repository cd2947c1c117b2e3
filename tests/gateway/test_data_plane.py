"""The data plane in-process: routing, rewriting, retries, fallback, escalation, errors, accounting."""

from __future__ import annotations

import orjson
import pytest
import respx
from httpx import ConnectTimeout, Request, Response

from tests.gateway.cache.test_response_cache import flush
from tests.gateway.conftest import AUTH, MASTER, chat, completion, gateway, settings, sse


def _json(request: Request) -> dict:  # type: ignore[type-arg]
    return orjson.loads(request.content)  # type: ignore[no-any-return]


async def test_auto_goes_to_the_cheapest_tier_with_the_model_rewritten_and_fields_passed_through() -> None:
    router = respx.Router(assert_all_called=False)
    route = router.post("http://up-a/v1/chat/completions").mock(
        return_value=Response(200, json=completion("small-a"))
    )
    async with gateway(router) as (client, records):
        r = await client.post(
            "/v1/chat/completions", json=chat(seed=3, user="u1", my_vendor_flag={"x": [1, 2]}), headers=AUTH
        )
    assert r.status_code == 200
    assert r.headers["x-tiergate-tier"] == "student" and r.headers["x-tiergate-model"] == "small-a"
    assert r.headers["x-request-id"].startswith("req_")
    sent = _json(route.calls.last.request)
    assert sent["model"] == "small-a" and sent["my_vendor_flag"] == {"x": [1, 2]} and sent["seed"] == 3
    assert route.calls.last.request.headers["authorization"] == "Bearer key-a"
    (record,) = records
    assert (record.prompt_tokens, record.completion_tokens, record.usage_source) == (100, 50, "upstream")
    assert record.cost_nano == 100 * 1 * 1000 + 50 * 2 * 1000  # $1/$2 per Mtok
    assert record.outcome == "ok" and record.tier == "student" and record.attempts == 1


async def test_client_request_id_is_echoed_when_sane() -> None:
    router = respx.Router()
    router.post("http://up-a/v1/chat/completions").mock(
        return_value=Response(200, json=completion("small-a"))
    )
    async with gateway(router) as (client, _):
        r = await client.post(
            "/v1/chat/completions", json=chat(), headers={**AUTH, "x-request-id": "abc-123"}
        )
        bad = await client.post(
            "/v1/chat/completions", json=chat(model="nope"), headers={**AUTH, "x-request-id": "a b\n"}
        )
    assert r.headers["x-request-id"] == "abc-123"
    assert bad.headers["x-request-id"].startswith("req_")


async def test_retry_then_fallback_to_the_second_deployment_of_the_tier() -> None:
    router = respx.Router()
    a = router.post("http://up-a/v1/chat/completions").mock(
        return_value=Response(503, json={"error": {"message": "busy"}})
    )
    b = router.post("http://up-b/v1/chat/completions").mock(
        return_value=Response(200, json=completion("small-b"))
    )
    async with gateway(router) as (client, records):
        r = await client.post("/v1/chat/completions", json=chat("student"), headers=AUTH)
    assert r.status_code == 200 and r.headers["x-tiergate-model"] == "small-b"
    assert a.call_count == 2  # first attempt + max_retries=1
    assert b.call_count == 1
    assert records[0].attempts == 3 and records[0].escalations == ()


async def test_escalates_to_the_next_tier_when_a_whole_tier_fails() -> None:
    router = respx.Router()
    router.post("http://up-a/v1/chat/completions").mock(side_effect=ConnectTimeout("slow"))
    router.post("http://up-b/v1/chat/completions").mock(return_value=Response(500))
    teacher = router.post("http://up-t/v1/chat/completions").mock(
        return_value=Response(200, json=completion("big"))
    )
    async with gateway(router) as (client, records):
        r = await client.post("/v1/chat/completions", json=chat("auto"), headers=AUTH)
    assert r.status_code == 200
    assert r.headers["x-tiergate-tier"] == "teacher" and r.headers["x-tiergate-escalations"] == "1"
    assert _json(teacher.calls.last.request)["model"] == "big"
    assert records[0].escalations[0].startswith("student->teacher")
    assert records[0].cost_nano == 100 * 10 * 1000 + 50 * 20 * 1000  # billed at the teacher's price


async def test_explicit_deployment_does_not_escalate_by_default() -> None:
    router = respx.Router(assert_all_called=False)
    router.post("http://up-a/v1/chat/completions").mock(return_value=Response(500))
    teacher = router.post("http://up-t/v1/chat/completions").mock(
        return_value=Response(200, json=completion("big"))
    )
    async with gateway(router) as (client, _):
        r = await client.post("/v1/chat/completions", json=chat("small-a"), headers=AUTH)
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "upstream_failed"
    assert teacher.call_count == 0


async def test_explicit_deployment_escalates_when_configured() -> None:
    router = respx.Router(assert_all_called=False)
    router.post("http://up-a/v1/chat/completions").mock(return_value=Response(500))
    router.post("http://up-t/v1/chat/completions").mock(return_value=Response(200, json=completion("big")))
    async with gateway(router, settings(escalation={"deployments": True})) as (client, _):
        r = await client.post("/v1/chat/completions", json=chat("small-a"), headers=AUTH)
    assert r.status_code == 200 and r.headers["x-tiergate-tier"] == "teacher"


async def test_a_bad_request_is_not_retried_and_keeps_the_upstreams_words() -> None:
    router = respx.Router(assert_all_called=False)
    error = {
        "error": {
            "message": "context length exceeded",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }
    a = router.post("http://up-a/v1/chat/completions").mock(return_value=Response(400, json=error))
    b = router.post("http://up-b/v1/chat/completions").mock(
        return_value=Response(200, json=completion("small-b"))
    )
    async with gateway(router) as (client, records):
        r = await client.post("/v1/chat/completions", json=chat("student"), headers=AUTH)
    assert r.status_code == 400 and r.json() == error
    assert a.call_count == 1 and b.call_count == 0
    assert records == []  # nothing answered: the sinks of answered calls hear nothing (the ledger does)


async def test_a_misconfigured_deployment_hands_over_to_the_next_one() -> None:
    router = respx.Router()
    router.post("http://up-a/v1/chat/completions").mock(
        return_value=Response(401, json={"error": {"message": "bad key"}})
    )
    router.post("http://up-b/v1/chat/completions").mock(
        return_value=Response(200, json=completion("small-b"))
    )
    async with gateway(router) as (client, _):
        r = await client.post("/v1/chat/completions", json=chat("student"), headers=AUTH)
    assert r.status_code == 200 and r.headers["x-tiergate-model"] == "small-b"


async def test_429_retry_after_is_honoured_then_succeeds() -> None:
    router = respx.Router()
    router.post("http://up-a/v1/chat/completions").mock(
        side_effect=[Response(429, headers={"retry-after": "0"}), Response(200, json=completion("small-a"))]
    )
    async with gateway(router) as (client, records):
        r = await client.post("/v1/chat/completions", json=chat("small-a"), headers=AUTH)
    assert r.status_code == 200 and records[0].attempts == 2


async def test_everything_timing_out_is_a_504() -> None:
    router = respx.Router()
    for host in ("up-a", "up-b", "up-t"):
        router.post(f"http://{host}/v1/chat/completions").mock(side_effect=ConnectTimeout("slow"))
    async with gateway(router) as (client, _):
        r = await client.post("/v1/chat/completions", json=chat(), headers=AUTH)
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"


async def test_a_failing_deployment_is_cooled_down_and_tried_last() -> None:
    router = respx.Router()
    a = router.post("http://up-a/v1/chat/completions").mock(return_value=Response(500))
    router.post("http://up-b/v1/chat/completions").mock(
        return_value=Response(200, json=completion("small-b"))
    )
    async with gateway(router) as (client, _):
        for _ in range(4):
            r = await client.post("/v1/chat/completions", json=chat("student"), headers=AUTH)
            assert r.status_code == 200
    # 3 consecutive failures (cooldown_failures=3) put small-a to rest for 60 s: later requests go to small-b first.
    assert a.call_count == 3


async def test_round_robin_shares_the_load_between_deployments_of_a_tier() -> None:
    router = respx.Router()
    a = router.post("http://up-a/v1/chat/completions").mock(
        return_value=Response(200, json=completion("small-a"))
    )
    b = router.post("http://up-b/v1/chat/completions").mock(
        return_value=Response(200, json=completion("small-b"))
    )
    config = settings(upstream={"load_balance": "round_robin"})
    async with gateway(router, config) as (client, _):
        for _ in range(6):
            assert (
                await client.post("/v1/chat/completions", json=chat("student"), headers=AUTH)
            ).status_code == 200
    assert a.call_count == b.call_count == 3


async def test_usage_is_counted_when_the_upstream_reports_none() -> None:
    router = respx.Router()
    router.post("http://up-a/v1/chat/completions").mock(
        return_value=Response(200, json=completion("small-a", "hello world", usage=False))
    )
    async with gateway(router) as (client, records):
        r = await client.post("/v1/chat/completions", json=chat("small-a"), headers=AUTH)
    assert r.status_code == 200
    assert records[0].usage_source == "counted"
    assert records[0].completion_tokens == 2 and records[0].prompt_tokens > 0


async def test_a_negative_usage_is_not_a_refund_but_counted() -> None:
    doc = {**completion("small-a", "hello world"), "usage": {"prompt_tokens": -1000, "completion_tokens": 2}}
    router = respx.Router()
    router.post("http://up-a/v1/chat/completions").mock(return_value=Response(200, json=doc))
    async with gateway(router) as (client, records):
        r = await client.post("/v1/chat/completions", json=chat("small-a"), headers=AUTH)
    assert r.status_code == 200
    assert records[0].usage_source == "counted" and records[0].prompt_tokens > 0 and records[0].cost_nano > 0


async def test_stream_asks_for_usage_and_strips_it_when_the_client_did_not() -> None:
    router = respx.Router()
    chunks = [
        {
            "id": "c",
            "model": "small-a",
            "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}],
        },
        {"id": "c", "model": "small-a", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {"id": "c", "model": "small-a", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 1}},
    ]
    route = router.post("http://up-a/v1/chat/completions").mock(
        return_value=Response(200, content=sse(*chunks), headers={"content-type": "text/event-stream"})
    )
    async with gateway(router) as (client, records):
        plain = await client.post("/v1/chat/completions", json=chat(stream=True), headers=AUTH)
        with_usage = await client.post(
            "/v1/chat/completions",
            json=chat(stream=True, stream_options={"include_usage": True}),
            headers=AUTH,
        )
    assert _json(route.calls[0].request)["stream_options"] == {"include_usage": True}
    assert plain.headers["content-type"].startswith("text/event-stream")
    assert b'"usage"' not in plain.content and plain.content.endswith(b"data: [DONE]\n\n")
    assert b'"usage"' in with_usage.content
    assert [(r.prompt_tokens, r.completion_tokens, r.outcome) for r in records] == [(9, 1, "ok")] * 2


async def test_a_stream_that_fails_before_its_first_byte_is_retried() -> None:
    router = respx.Router()
    good = sse(
        {
            "id": "c",
            "model": "small-b",
            "choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}],
        }
    )
    router.post("http://up-a/v1/chat/completions").mock(return_value=Response(200, content=b""))
    router.post("http://up-b/v1/chat/completions").mock(return_value=Response(200, content=good))
    async with gateway(router) as (client, _):
        r = await client.post("/v1/chat/completions", json=chat("student", stream=True), headers=AUTH)
    assert r.status_code == 200 and r.headers["x-tiergate-model"] == "small-b"


async def test_embeddings_and_models() -> None:
    router = respx.Router()
    emb = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1]}],
        "usage": {"prompt_tokens": 4, "total_tokens": 4},
    }
    router.post("http://up-e/v1/embeddings").mock(return_value=Response(200, json=emb))
    async with gateway(router) as (client, records):
        r = await client.post("/v1/embeddings", json={"model": "embedder", "input": "hello"}, headers=AUTH)
        models = await client.get("/v1/models", headers=AUTH)
    assert r.status_code == 200 and r.json() == emb
    assert records[0].endpoint == "embeddings" and records[0].prompt_tokens == 4
    assert [m["id"] for m in models.json()["data"]] == [
        "auto",
        "student",
        "teacher",
        "small-a",
        "small-b",
        "big",
        "embedder",
    ]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"authorization": "Bearer wrong"}, 401),
        ({"authorization": "Basic abc"}, 401),
        ({"api-key": MASTER}, 200),
    ],
)
async def test_authentication(headers: dict[str, str], status: int) -> None:
    router = respx.Router(assert_all_called=False)
    router.post("http://up-a/v1/chat/completions").mock(
        return_value=Response(200, json=completion("small-a"))
    )
    async with gateway(router) as (client, _):
        r = await client.post("/v1/chat/completions", json=chat(), headers=headers)
        models = await client.get("/v1/models", headers=headers)
    assert r.status_code == status and models.status_code == status
    if status == 401:
        assert r.json()["error"]["code"] == "invalid_api_key"
        assert "wrong" not in r.text  # the presented key is never echoed


@pytest.mark.parametrize(
    ("path", "method", "content", "status", "code"),
    [
        ("/v1/chat/completions", "POST", b"{oops", 400, None),
        ("/v1/chat/completions", "POST", b'{"model": "auto"}', 400, None),
        ("/v1/chat/completions", "POST", orjson.dumps(chat("gpt-9")), 404, "model_not_found"),
        ("/v1/chat/completions", "POST", orjson.dumps(chat(extra="x" * 2048)), 413, "request_too_large"),
        ("/v1/chat/completions", "GET", b"", 405, "method_not_allowed"),
        ("/v1/nothing", "POST", b"{}", 404, "not_found"),
    ],
)
async def test_bad_input_gets_an_openai_error_and_reaches_no_upstream(
    path: str, method: str, content: bytes, status: int, code: str | None
) -> None:
    router = respx.Router(assert_all_called=False)
    upstream = router.post("http://up-a/v1/chat/completions").mock(
        return_value=Response(200, json=completion("small-a"))
    )
    async with gateway(router, settings(max_body_bytes=2048)) as (client, records):
        r = await client.request(method, path, content=content, headers=AUTH)
    assert r.status_code == status
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code:
        assert error["code"] == code
    if status == 405:
        assert r.headers["allow"] == "POST"
    assert upstream.call_count == 0 and records == []


async def test_health_and_readiness() -> None:
    async with gateway(respx.Router()) as (client, _):
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


async def test_nothing_configured_is_a_clear_503() -> None:
    async with gateway(respx.Router(), settings(tiers={}, models=[])) as (client, _):
        r = await client.post("/v1/chat/completions", json=chat(), headers=AUTH)
    assert r.status_code == 503 and "OPENAI_API_KEY" in r.json()["error"]["message"]


async def test_every_deployment_throttling_is_a_429_with_retry_after() -> None:
    router = respx.Router()
    router.post("http://up-a/v1/chat/completions").mock(
        return_value=Response(429, headers={"retry-after": "7"})
    )
    async with gateway(router) as (client, _):
        r = await client.post("/v1/chat/completions", json=chat("small-a"), headers=AUTH)
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    assert r.json()["error"]["code"] == "rate_limit_exceeded"


async def test_the_deployment_that_answered_is_named_even_between_two_of_one_model() -> None:
    router = respx.Router()
    for host in ("up-a", "up-b"):
        router.post(f"http://{host}/v1/chat/completions").mock(
            side_effect=lambda request, host=host: Response(
                200,
                content=sse(
                    {"id": "c", "model": "small", "choices": [{"index": 0, "delta": {"content": host}}]}
                )
                if _json(request).get("stream")
                else orjson.dumps(completion("small", content=host)),
            )
        )
    router.post("http://up-e/v1/embeddings").mock(
        return_value=Response(200, json={"object": "list", "data": [], "usage": {"prompt_tokens": 1}})
    )
    same = {"model": "small", "input_cost_per_mtok": 1, "output_cost_per_mtok": 2}
    config = settings(
        tiers={"student": [{**same, "api_base": "http://up-a/v1"}, {**same, "api_base": "http://up-b/v1"}]},
        upstream={"load_balance": "round_robin", "max_retries": 0},
        cache={"exact": {"enabled": False}},
    )
    async with gateway(router, config) as (client, _):
        first = await client.post("/v1/chat/completions", json=chat("student"), headers=AUTH)
        second = await client.post("/v1/chat/completions", json=chat("student", stream=True), headers=AUTH)
        embedded = await client.post("/v1/embeddings", json={"model": "embedder", "input": "x"}, headers=AUTH)
    answered = {("up-a" if "up-a" in r.text else "up-b"): r.headers for r in (first, second)}
    assert answered["up-a"]["x-tiergate-deployment"] == "student/small#0"
    assert answered["up-b"]["x-tiergate-deployment"] == "student/small#1"
    assert all(
        h["x-tiergate-model"] == "small" and h["x-tiergate-tier"] == "student" for h in answered.values()
    )
    assert embedded.headers["x-tiergate-deployment"] == "untiered/embedder#2"


async def test_cache_hits_name_no_deployment_and_models_carry_a_request_id() -> None:
    router = respx.Router()
    router.post("http://up-a/v1/chat/completions").mock(
        return_value=Response(200, json=completion("small-a"))
    )
    config = settings(cache={"exact": {"enabled": True}})
    async with gateway(router, config) as (client, _):
        answered = await client.post("/v1/chat/completions", json=chat("student", seed=1), headers=AUTH)
        await flush(client)
        hit = await client.post("/v1/chat/completions", json=chat("student", seed=1), headers=AUTH)
        listed = await client.get("/v1/models", headers={**AUTH, "x-request-id": "req-models-1"})
        fresh = await client.get("/v1/models", headers=AUTH)
        refused = await client.get("/v1/models")
    assert answered.headers["x-tiergate-deployment"] == "student/small-a#0"
    assert hit.headers["x-tiergate-cache"] == "exact" and "x-tiergate-deployment" not in hit.headers
    assert listed.status_code == 200 and listed.headers["x-request-id"] == "req-models-1"
    assert fresh.headers["x-request-id"] and refused.status_code == 401 and refused.headers["x-request-id"]
