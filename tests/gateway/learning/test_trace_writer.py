"""Traces: one row per call (answered, streamed, cached, failed, refused), content per policy, batched off
the response path, overflow and database failures counted and exported."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import orjson
import pytest
import respx
from httpx import ConnectTimeout, Response
from sqlalchemy import select

from tests.gateway.conftest import AUTH, chat, completion, gateway, settings
from tests.gateway.routing.test_routing_strategies import SEEDS
from tests.gateway.upstream.test_relay import STREAM
from tests.support import gateway_of, metric, parse_metrics
from tiergate.gateway.accounting.auth import Principal
from tiergate.gateway.accounting.records import CallRecord
from tiergate.gateway.config.learning import TraceSettings
from tiergate.gateway.db.engine import open_engine
from tiergate.gateway.db.learning import Trace
from tiergate.gateway.db.migrate import upgrade
from tiergate.gateway.learning import trace_writer
from tiergate.gateway.learning.trace_writer import TraceWriter, trace_row
from tiergate.gateway.telemetry.metrics import Metrics

PRIVATE = "mail me at jane.doe@example.com or call +44 20 7946 0958"


def record(content: str | None, **fields: Any) -> CallRecord:
    principal = Principal("key", tenant_id="ten_a", key_id="key_a", trace_content=content)
    out = CallRecord("req_1", "chat", principal, "auto", started_at=1_700_000_000.5, **fields)
    out.request_body = {
        "model": "auto",
        "messages": [{"role": "user", "content": PRIVATE}],
        "temperature": 0,
        "tools": [
            {"type": "function", "function": {"name": "lookup", "description": "jane.doe@example.com"}}
        ],
    }
    out.answer = completion("small-a", f"Noted: {PRIVATE}")
    out.query_vector = np.full(384, 0.05, dtype=np.float32)
    return out


def test_full_content_keeps_everything_and_the_query_embedding() -> None:
    row = trace_row(record("full"), "none")
    assert row["content"] == "full" and row["messages"] == [{"role": "user", "content": PRIVATE}]
    assert row["answer"] == {"role": "assistant", "content": f"Noted: {PRIVATE}"}
    assert row["params"]["temperature"] == 0 and "model" not in row["params"]
    assert np.frombuffer(row["embedding"], dtype=np.float32).shape == (384,)
    assert row["ts_ms"] == 1_700_000_000_500 and row["tenant_id"] == "ten_a" and row["key_id"] == "key_a"
    assert row["finish_reason"] == "stop"


def test_a_front_doors_call_keeps_its_chat_form_messages() -> None:
    for endpoint in ("completions", "messages"):
        call = record("full")
        call.endpoint = endpoint
        assert trace_row(call, "none")["messages"] == [{"role": "user", "content": PRIVATE}]


def test_redacted_content_masks_personal_data_and_drops_the_embedding() -> None:
    row = trace_row(record("redacted"), "full")
    text = str((row["messages"], row["answer"], row["params"]))
    assert "jane.doe" not in text and "7946" not in text
    assert row["messages"] == [{"role": "user", "content": "mail me at [EMAIL] or call [PHONE]"}]
    assert row["params"]["tools"][0]["function"]["description"] == "[EMAIL]"
    assert row["embedding"] is None  # the vector of the unredacted text would carry what was masked


def test_none_keeps_routing_cost_and_timing_only() -> None:
    row = trace_row(record(None, tier="student", cost_nano=42, latency_s=0.25), "none")
    assert row["content"] == "none"
    assert row["messages"] is row["params"] is row["answer"] is row["embedding"] is None
    assert (row["tier"], row["cost_nano"], row["latency_ms"]) == ("student", 42, 250.0)


async def traces_of(gw: Any) -> list[Any]:
    await gw.learning.traces.flush()
    async with gw.accounting.engine.connect() as conn:
        return list((await conn.execute(select(Trace.__table__).order_by(Trace.__table__.c.ts_ms))).all())  # type: ignore[attr-defined]


async def test_every_kind_of_call_is_traced_once_and_a_bad_key_is_not() -> None:
    router = respx.Router(assert_all_called=False)
    student = router.post("http://up-a/v1/chat/completions").mock(
        side_effect=[
            Response(200, json=completion("small-a", "first")),
            Response(200, content=b"".join(STREAM), headers={"content-type": "text/event-stream"}),
            ConnectTimeout("slow"),
            ConnectTimeout("slow"),
        ]
    )  # fmt: skip
    router.post("http://up-b/v1/chat/completions").mock(return_value=Response(500))
    router.post("http://up-t/v1/chat/completions").mock(
        return_value=Response(200, json=completion("big", "rescued"))
    )
    config = settings(learning={"traces": {"content": "full"}})
    async with gateway(router, config) as (client, _):
        gw = gateway_of(client)
        calls = [
            chat("student", temperature=0),
            chat("student", stream=True),
            chat("student", temperature=0),  # the exact cache answers
            chat("auto", messages=[{"role": "user", "content": "escalate me"}]),
            chat("nope"),  # unknown model: refused after authentication
        ]
        statuses = []
        for body in calls:
            statuses.append((await client.post("/v1/chat/completions", json=body, headers=AUTH)).status_code)
            await gw.caches.exact.flush()  # the first answer is in the cache before the third call asks
        bad = await client.post(
            "/v1/chat/completions", json=chat(), headers={"authorization": "Bearer wrong"}
        )
        rows = await traces_of(gw)
    assert statuses == [200, 200, 200, 200, 404] and bad.status_code == 401
    assert student.call_count == 4
    assert len(rows) == 5  # the call with the wrong key is nobody's: no trace
    first, streamed, cached, escalated, refused = rows
    assert (first.status, first.tier, first.cache, first.answer["content"]) == (
        "ok",
        "student",
        "miss",
        "first",
    )
    assert first.prompt_tokens == 100 and first.cost_nano > 0 and first.latency_ms > 0
    assert streamed.stream and streamed.answer["content"] == "Hello" and streamed.ttft_ms is not None
    assert cached.cache == "exact" and cached.cost_nano == 0 and cached.answer["content"] == "first"
    assert escalated.tier == "teacher" and escalated.escalations[0].startswith("student->teacher")
    assert escalated.attempts == 5 and escalated.route_reason == "fixed: student"
    assert (refused.status, refused.status_code, refused.error) == ("refused", 404, "model_not_found")
    assert refused.messages == [{"role": "user", "content": "hi"}]
    assert len({r.request_id for r in rows}) == 5


async def test_traces_carry_the_routed_domain_and_query_vector() -> None:
    router = respx.Router(assert_all_called=False)
    router.post("http://up-a/v1/chat/completions").mock(
        return_value=Response(200, json=completion("small-a"))
    )
    router.post("http://up-t/v1/chat/completions").mock(return_value=Response(200, json=completion("big")))
    config = settings(
        routing={"strategy": "promotion", "route_table": {"billing": "student"}, "domains": {"floor": 0.4, "seed": SEEDS}},
        learning={"traces": {"content": "full"}},
    )  # fmt: skip
    async with gateway(router, config) as (client, _):
        gw = gateway_of(client)
        text = "I was billed twice this month, can you refund me?"
        body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
        assert (await client.post("/v1/chat/completions", json=body, headers=AUTH)).status_code == 200
        plain = await client.post("/v1/chat/completions", json=chat("teacher"), headers=AUTH)
        assert plain.status_code == 200
        rows = await traces_of(gw)
        expected = gw.embedder.encode(text).vector
    routed, aliased = rows
    assert routed.domain == "billing" and routed.tier == "student"
    assert np.allclose(np.frombuffer(routed.embedding, dtype=np.float32), expected)
    assert aliased.domain is None and aliased.embedding is None  # routing needed no domain: none computed


async def test_a_full_queue_drops_traces_and_the_metric_says_how_many() -> None:
    router = respx.Router()
    router.post("http://up-a/v1/chat/completions").mock(
        return_value=Response(200, json=completion("small-a"))
    )
    config = settings(learning={"traces": {"queue_size": 2, "batch_size": 100, "flush_s": 60}})
    async with gateway(router, config) as (client, _):
        gw = gateway_of(client)
        for _ in range(5):
            assert (
                await client.post("/v1/chat/completions", json=chat("student"), headers=AUTH)
            ).status_code == 200
        samples = parse_metrics((await client.get("/metrics", headers=AUTH)).text)
        assert metric(samples, "tiergate_queue_dropped_total", queue="traces") == 3
        assert metric(samples, "tiergate_queue_depth", queue="traces") == 2
        assert len(await traces_of(gw)) == 2


async def test_a_database_that_refuses_the_rows_drops_the_batch_counted(tmp_path: Any) -> None:
    engine = open_engine(f"sqlite:///{tmp_path}/empty.db")  # never migrated: there is no traces table
    writer = TraceWriter(engine, TraceSettings(batch_size=10, flush_s=0.01))
    task = asyncio.ensure_future(writer.run())
    try:
        writer.sink(record("full"))
        writer.sink(record("none"))
        assert writer.pending_tenant("req_1") == (True, "ten_a")
        await writer.flush()
        assert writer.stats.failed == 2 and writer.dropped() == 2 and writer.stats.written == 0
        assert writer.pending_tenant("req_1") == (False, None)
    finally:
        writer.stop()
        await task
        await engine.dispose()


def test_the_sink_only_queues_the_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """The request path pays an append: the row (redaction, serialisation) is built later, by the writer."""

    def not_here(*args: Any) -> None:
        raise AssertionError("a trace row was built on the request path")

    monkeypatch.setattr(trace_writer, "trace_row", not_here)
    writer = TraceWriter(open_engine("sqlite:///unused.db"), TraceSettings(queue_size=10, batch_size=10))
    entry = record("redacted")
    writer.sink(entry)
    assert writer.depth() == 1 and writer.pending_tenant("req_1") == (True, "ten_a")
    assert entry.request_body is not None and entry.request_body["messages"][0]["content"] == PRIVATE


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def traces_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """Either database, migrated, of the test's own."""
    url: str = sqlite_url if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    asyncio.run(upgrade(url))
    return url


async def test_a_poisoned_record_costs_no_other_tenants_trace(
    traces_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = open_engine(traces_url)
    writer = TraceWriter(engine, TraceSettings(batch_size=10, flush_s=60))
    metrics = Metrics(queues=[writer])

    def of(tenant: str, request_id: str) -> CallRecord:
        traced = record("redacted")
        traced.request_id, traced.principal = request_id, Principal("key", tenant_id=tenant, key_id="k")
        return traced

    unstorable = of("ten_a", "req_unstorable")
    unstorable.cost_nano = 2**70  # more than a 64-bit integer column holds: the database refuses the batch
    unbuildable = of("ten_b", "req_unbuildable")
    unbuildable.principal = Principal("key", tenant_id="ten_b", key_id="k", trace_content="full")
    unbuildable.query_vector = ["not", "a", "vector"]  # type: ignore[assignment]  # its row cannot be built
    deep = of("ten_b", "req_deep")  # a body nested past the recursion limit, redacted
    deep.request_body = orjson.loads(b'{"model": "auto", "messages": ' + b"[" * 900 + b"]" * 900 + b"}")
    batch = [of("ten_a", "a1"), unstorable, of("ten_b", "b1"), unbuildable, deep, of("ten_a", "a2")]
    task = asyncio.ensure_future(writer.run())
    try:
        for traced in batch:
            writer.sink(traced)
        await writer.flush()  # one batch of six
    finally:
        writer.stop()
        await task
    async with engine.connect() as conn:
        table = Trace.__table__  # type: ignore[attr-defined]
        rows = (await conn.execute(select(table.c.request_id, table.c.tenant_id))).all()
    await engine.dispose()
    assert sorted(rows) == [("a1", "ten_a"), ("a2", "ten_a"), ("b1", "ten_b"), ("req_deep", "ten_b")]
    assert (writer.stats.written, writer.stats.rejected, writer.dropped()) == (4, 2, 0)
    refused = {
        r.getMessage().split()[3] for r in caplog.records if "the rest of its batch was" in r.getMessage()
    }
    assert refused == {"req_unstorable", "req_unbuildable"}  # logged by request id
    metrics.refresh()
    assert (
        metric(parse_metrics(metrics.render()[0].decode()), "tiergate_queue_rejected_total", queue="traces")
        == 2
    )


@pytest.mark.parametrize("content", ["redacted", "full"])
async def test_a_body_nested_900_deep_is_answered_and_traced_with_the_others(content: str) -> None:
    router = respx.Router()
    router.post("http://up-a/v1/chat/completions").mock(
        return_value=Response(200, json=completion("small-a"))
    )
    # Valid JSON (orjson reads 1024 levels): a message content nested 900 arrays deep.
    deep = b'{"model": "student", "messages": [{"role": "user", "content": %s}]}' % (b"[" * 900 + b"]" * 900)
    async with gateway(router, settings(learning={"traces": {"content": content}})) as (client, _):
        headers = {**AUTH, "content-type": "application/json"}
        before = await client.post("/v1/chat/completions", json=chat("student"), headers=headers)
        nested = await client.post("/v1/chat/completions", content=deep, headers=headers)
        after = await client.post("/v1/chat/completions", json=chat("student"), headers=headers)
        gw = gateway_of(client)
        traces = await traces_of(gw)
    assert [r.status_code for r in (before, nested, after)] == [200] * 3
    assert len(traces) == 3 and gw.learning.traces.stats.rejected == 0
