"""The exact response cache in-process: hits, walls between tenants and contexts, opt-outs, replay shapes."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson
import pytest
import respx
from httpx import Response

from tests.gateway.conftest import AUTH, chat, completion, gateway, settings
from tests.support import authenticate_with, gateway_of
from tiergate.gateway.accounting.auth import MASTER, Principal, presented_key
from tiergate.gateway.cache.exact import MemoryBackend, ResponseCache
from tiergate.gateway.errors import Unauthorized

STUDENT = "http://up-a/v1/chat/completions"
DET = {"temperature": 0}


class TenantKeys:
    """Keys `k-<tenant>-<n>` belong to tenant <tenant>; the master key stays the master."""

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        key = presented_key(headers) or ""
        if key.startswith("k-"):
            _, tenant, n = key.split("-")
            return Principal("key", tenant_id=tenant, key_id=f"{tenant}-{n}")
        if key == AUTH["authorization"].removeprefix("Bearer "):
            return MASTER
        raise Unauthorized("invalid API key")


def key(name: str) -> dict[str, str]:
    return {"authorization": f"Bearer {name}"}


async def flush(client: Any) -> None:
    cache = gateway_of(client).caches.exact
    await cache.flush()


def upstream(router: respx.Router) -> respx.Route:
    return router.post(STUDENT).mock(
        side_effect=lambda _: Response(200, json=completion("small-a", "Paris."))
    )


async def test_a_repeated_deterministic_request_is_served_from_the_cache() -> None:
    router = respx.Router()
    route = upstream(router)
    async with gateway(router) as (client, records):
        first = await client.post("/v1/chat/completions", json=chat(**DET), headers=AUTH)
        await flush(client)
        second = await client.post(
            "/v1/chat/completions", json=chat(**DET, user="someone-else"), headers=AUTH
        )
    assert first.headers["x-tiergate-cache"] == "miss" and second.headers["x-tiergate-cache"] == "exact"
    assert second.json() == first.json() and second.headers["x-tiergate-tier"] == "student"
    assert route.call_count == 1
    assert [r.cache for r in records] == ["miss", "exact"]
    assert records[1].cost_nano == 0 and records[0].cost_nano > 0 and records[1].usage_source == "cache"


async def test_sampling_requests_are_not_cached_unless_the_tenant_opts_in() -> None:
    router = respx.Router()
    route = upstream(router)
    async with gateway(router) as (client, _):
        for _ in range(2):
            await client.post("/v1/chat/completions", json=chat(temperature=0.7), headers=AUTH)
            await flush(client)
    assert route.call_count == 2
    router2 = respx.Router()
    route2 = upstream(router2)
    async with gateway(router2, settings(cache={"nondeterministic": True})) as (client, _):
        for _ in range(2):
            r = await client.post("/v1/chat/completions", json=chat(temperature=0.7), headers=AUTH)
            await flush(client)
    assert route2.call_count == 1 and r.headers["x-tiergate-cache"] == "exact"


async def test_tenants_never_share_entries() -> None:
    router = respx.Router()
    route = upstream(router)
    async with gateway(router) as (client, _):
        authenticate_with(gateway_of(client), TenantKeys())
        outcomes = []
        for caller in ("k-acme-1", "k-globex-1", "k-acme-2", "sk-test-master", "k-globex-2"):
            r = await client.post("/v1/chat/completions", json=chat(**DET), headers=key(caller))
            await flush(client)
            outcomes.append(r.headers["x-tiergate-cache"])
    # acme's second key shares acme's entry; globex and the master key each have their own partition.
    assert outcomes == ["miss", "miss", "exact", "miss", "exact"]
    assert route.call_count == 3


async def test_never_across_different_system_prompts_or_earlier_turns() -> None:
    router = respx.Router()
    route = upstream(router)
    question = {"role": "user", "content": "What is the capital?"}
    conversations = [
        [{"role": "system", "content": "You answer about France."}, question],
        [{"role": "system", "content": "You answer about Italy."}, question],
        [question],
        [
            {"role": "user", "content": "Tell me about Spain."},
            {"role": "assistant", "content": "Sure."},
            question,
        ],
    ]
    async with gateway(router) as (client, _):
        for messages in conversations:
            r = await client.post(
                "/v1/chat/completions", json={"model": "auto", "messages": messages, **DET}, headers=AUTH
            )
            await flush(client)
            assert r.headers["x-tiergate-cache"] == "miss"
    assert route.call_count == 4


async def test_answer_changing_fields_and_routes_partition_the_cache() -> None:
    router = respx.Router(assert_all_called=False)
    route = upstream(router)
    teacher = router.post("http://up-t/v1/chat/completions").mock(
        return_value=Response(200, json=completion("big"))
    )
    async with gateway(router) as (client, _):
        for fields in ({}, {"max_tokens": 5}, {"seed": 1}, {"response_format": {"type": "json_object"}}):
            r = await client.post("/v1/chat/completions", json=chat(**DET, **fields), headers=AUTH)
            await flush(client)
            assert r.headers["x-tiergate-cache"] == "miss"
        r = await client.post("/v1/chat/completions", json=chat("teacher", **DET), headers=AUTH)
        assert r.headers["x-tiergate-cache"] == "miss" and teacher.call_count == 1
    assert route.call_count == 4


async def test_a_cached_answer_is_replayed_as_a_stream_with_or_without_usage() -> None:
    router = respx.Router()
    upstream(router)
    async with gateway(router) as (client, records):
        await client.post("/v1/chat/completions", json=chat(**DET), headers=AUTH)
        await flush(client)
        with_usage = await client.post(
            "/v1/chat/completions",
            json=chat(**DET, stream=True, stream_options={"include_usage": True}),
            headers=AUTH,
        )
        plain = await client.post("/v1/chat/completions", json=chat(**DET, stream=True), headers=AUTH)
    for r in (with_usage, plain):
        assert (
            r.headers["content-type"].startswith("text/event-stream")
            and r.headers["x-tiergate-cache"] == "exact"
        )
        assert r.text.endswith("data: [DONE]\n\n")
    events = [orjson.loads(e[6:]) for e in with_usage.text.split("\n\n") if e.startswith("data: {")]
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"]) == "Paris."
    assert events[-1]["usage"]["total_tokens"] == 150 and b'"usage"' not in plain.content
    assert records[1].ttft_s is not None


async def test_a_streamed_answer_is_stored_and_served_to_a_plain_request() -> None:
    router = respx.Router()
    chunks = (
        b"".join(
            b"data: " + orjson.dumps(d) + b"\n\n"
            for d in (
                {
                    "id": "c",
                    "model": "small-a",
                    "choices": [
                        {"index": 0, "delta": {"role": "assistant", "content": "Pa"}, "finish_reason": None}
                    ],
                },
                {
                    "id": "c",
                    "model": "small-a",
                    "choices": [{"index": 0, "delta": {"content": "ris."}, "finish_reason": "stop"}],
                },
                {
                    "id": "c",
                    "model": "small-a",
                    "choices": [],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
                },
            )
        )
        + b"data: [DONE]\n\n"
    )
    route = router.post(STUDENT).mock(return_value=Response(200, content=chunks))
    async with gateway(router) as (client, _):
        await client.post("/v1/chat/completions", json=chat(**DET, stream=True), headers=AUTH)
        await flush(client)
        r = await client.post("/v1/chat/completions", json=chat(**DET), headers=AUTH)
    assert r.headers["x-tiergate-cache"] == "exact" and route.call_count == 1
    assert r.json()["choices"][0]["message"]["content"] == "Paris." and r.json()["usage"]["total_tokens"] == 5


async def test_no_cache_skips_the_lookup_and_no_store_skips_the_write() -> None:
    router = respx.Router()
    route = upstream(router)
    async with gateway(router) as (client, _):
        post = client.post
        await post("/v1/chat/completions", json=chat(**DET), headers={**AUTH, "cache-control": "no-store"})
        await flush(client)
        assert (await post("/v1/chat/completions", json=chat(**DET), headers=AUTH)).headers[
            "x-tiergate-cache"
        ] == "miss"
        await flush(client)
        bypass = await post(
            "/v1/chat/completions", json=chat(**DET), headers={**AUTH, "cache-control": "no-cache"}
        )
        body_bypass = await post(
            "/v1/chat/completions", json=chat(**DET, cache={"no_cache": True}), headers=AUTH
        )
        hit = await post("/v1/chat/completions", json=chat(**DET, cache={"ttl_s": 60}), headers=AUTH)
    assert bypass.headers["x-tiergate-cache"] == body_bypass.headers["x-tiergate-cache"] == "miss"
    assert hit.headers["x-tiergate-cache"] == "exact"
    assert route.call_count == 4
    sent = [orjson.loads(c.request.content) for c in route.calls]
    assert all("cache" not in body for body in sent)  # the option never reaches the upstream


@pytest.mark.parametrize(
    ("headers", "fields", "param"),
    [
        ({"cache-control": "no-cahce"}, {}, "cache-control"),
        ({"cache-control": "max-age=soon"}, {}, "cache-control"),
        ({}, {"cache": {"no_cache": "yes"}}, "cache.no_cache"),
        ({}, {"cache": {"forever": True}}, "cache.forever"),
        ({}, {"cache": "off"}, "cache"),
    ],
)
async def test_bad_cache_options_are_a_400_and_reach_no_upstream(
    headers: dict[str, str], fields: dict[str, Any], param: str
) -> None:
    router = respx.Router(assert_all_called=False)
    route = upstream(router)
    async with gateway(router) as (client, records):
        r = await client.post("/v1/chat/completions", json=chat(**DET, **fields), headers={**AUTH, **headers})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert route.call_count == 0 and records == []


async def test_the_cache_can_be_off_and_per_tenant() -> None:
    router = respx.Router()
    route = upstream(router)
    config = settings(cache={"exact": {"enabled": False}, "tenants": {"acme": {"exact": {"enabled": True}}}})
    async with gateway(router, config) as (client, _):
        authenticate_with(gateway_of(client), TenantKeys())
        seen = []
        for caller in ("sk-test-master", "sk-test-master", "k-acme-1", "k-acme-1"):
            r = await client.post("/v1/chat/completions", json=chat(**DET), headers=key(caller))
            await gateway_of(client).caches.exact.flush()
            seen.append(r.headers["x-tiergate-cache"])
    assert seen == ["miss", "miss", "miss", "exact"] and route.call_count == 3


async def test_incomplete_answers_are_not_stored() -> None:
    router = respx.Router()
    broken = completion("small-a")
    broken["choices"][0]["finish_reason"] = "content_filter"
    route = router.post(STUDENT).mock(return_value=Response(200, json=broken))
    async with gateway(router) as (client, _):
        for _ in range(2):
            await client.post("/v1/chat/completions", json=chat(**DET), headers=AUTH)
            await flush(client)
    assert route.call_count == 2


async def test_memory_backend_is_an_lru_bounded_in_bytes_with_ttl() -> None:
    now = [0.0]
    # An entry holds the key's 32-byte digest (65 bytes as an object, 80 allocated) and the value behind its
    # 8-byte expiry (4041, 4048 allocated); the table adds a few hundred bytes: two entries fit, three do not.
    one = 80 + 4048
    backend = MemoryBackend(max_bytes=10_000, clock=lambda: now[0])
    await backend.set("a", b"x" * 4000, 10)
    await backend.set("b", b"y" * 4000, 10)
    assert await backend.get("a") == b"x" * 4000  # a is now the most recently used
    await backend.set("c", b"z" * 4000, 10)  # over the bound: the least recently used (b) goes
    assert await backend.get("b") is None and await backend.get("a") and await backend.get("c")
    assert len(backend) == 2 and backend.evictions == 1 and 2 * one < backend.size <= 10_000
    await backend.set("huge", b"h" * 10_000, 10)
    assert await backend.get("huge") is None and len(backend) == 2
    now[0] = 10.0
    assert await backend.get("a") is None and one < backend.size < 2 * one and backend.evictions == 1


class SlowBackend(MemoryBackend):
    def __init__(self) -> None:
        super().__init__(1 << 20)
        self.gate = asyncio.Event()

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self.gate.wait()
        await super().set(key, value, ttl_s)


async def test_writes_are_queued_off_the_response_path_and_overflow_is_counted() -> None:
    backend = SlowBackend()
    cache = ResponseCache(backend, queue_size=2)
    entry = {"answer": completion("m"), "tier": "student", "model": "m"}
    results = [cache.put(f"k{i}", entry, 60) for i in range(5)]
    await asyncio.sleep(0)  # the writer takes the first entry and waits on the gate
    results.append(cache.put("k5", entry, 60))
    assert results == [True, True, False, False, False, True] and cache.dropped() == 3 and cache.depth() == 2
    backend.gate.set()
    await cache.flush()
    assert (
        cache.written == 3
        and (await cache.get("k0", None)) is not None
        and await cache.get("k2", None) is None
    )
    await cache.aclose()
