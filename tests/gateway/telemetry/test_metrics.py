"""GET /metrics after real calls through the in-process app: answered calls, refusals, upstream failures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx
import pytest
import respx
from httpx import ConnectTimeout, Response

from tests.gateway.conftest import AUTH, chat, completion, gateway, gateway_app, settings, sse
from tests.support import Samples, authenticate_with, free_port, metric, parse_metrics
from tiergate.gateway.accounting.auth import Principal
from tiergate.gateway.accounting.records import CallRecord
from tiergate.gateway.errors import InsufficientQuota
from tiergate.gateway.telemetry.metrics import Metrics


async def scrape(client: httpx.AsyncClient) -> Samples:
    r = await client.get("/metrics", headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return parse_metrics(r.text)


async def test_answered_calls_are_counted_with_tokens_cost_latency_and_overhead() -> None:
    router = respx.Router()
    router.post("http://up-a/v1/chat/completions").mock(
        return_value=Response(200, json=completion("small-a"))
    )
    async with gateway(router) as (client, records):
        for _ in range(3):
            assert (await client.post("/v1/chat/completions", json=chat(), headers=AUTH)).status_code == 200
        m = await scrape(client)
    answered = {"endpoint": "chat", "tier": "student", "model": "small-a"}
    assert metric(m, "tiergate_requests_total", **answered, status="200", outcome="ok", tenant="") == 3
    assert metric(m, "tiergate_tokens_total", tier="student", model="small-a", type="input") == 300
    assert metric(m, "tiergate_tokens_total", tier="student", model="small-a", type="output") == 150
    assert metric(m, "tiergate_cost_usd_total", model="small-a") == pytest.approx(3 * 0.0002)
    assert metric(m, "tiergate_request_duration_seconds_count", **answered) == 3
    assert metric(m, "tiergate_request_duration_seconds_sum", **answered) == pytest.approx(
        sum(r.latency_s for r in records)
    )
    assert metric(m, "tiergate_gateway_overhead_seconds_count", endpoint="chat") == 3
    # Measured from the call's arrival in the app to its response handed over: at least the handler's share.
    overhead = metric(m, "tiergate_gateway_overhead_seconds_sum", endpoint="chat")
    assert sum(r.overhead_s for r in records) <= overhead < sum(r.latency_s for r in records) + 0.5
    assert metric(m, "tiergate_cache_lookups_total", endpoint="chat", result="miss") == 3
    assert metric(m, "tiergate_refusals_total") == 0


async def test_refusals_are_counted_though_they_produce_no_record() -> None:
    router = respx.Router(assert_all_called=False)
    async with gateway(router) as (client, records):
        await client.post("/v1/chat/completions", json=chat())
        await client.post("/v1/chat/completions", json=chat(), headers={"authorization": "Bearer sk-wrong"})
        await client.post("/v1/chat/completions", json=chat(model="gpt-from-a-caller-42"), headers=AUTH)
        await client.post("/v1/chat/completions", content=b"{not json", headers=AUTH)
        await client.post("/v1/embeddings", json={"model": "embedder"}, headers=AUTH)
        r = await client.get("/metrics", headers=AUTH)
    assert records == []
    m = parse_metrics(r.text)
    assert metric(m, "tiergate_refusals_total", reason="invalid_api_key") == 2
    assert metric(m, "tiergate_refusals_total", reason="model_not_found") == 1
    assert metric(m, "tiergate_refusals_total", reason="invalid_request_error") == 2
    assert metric(m, "tiergate_requests_total", endpoint="chat", status="401", outcome="refused") == 2
    assert metric(m, "tiergate_requests_total", endpoint="embeddings", status="400") == 1
    # What a caller asks for is not a label: it would let any client create series without bound.
    assert "gpt-from-a-caller-42" not in r.text


async def test_upstream_errors_escalations_and_the_circuit_breaker() -> None:
    router = respx.Router(assert_all_called=False)
    router.post("http://up-a/v1/chat/completions").mock(return_value=Response(503))
    router.post("http://up-b/v1/chat/completions").mock(side_effect=ConnectTimeout("slow"))
    router.post("http://up-t/v1/chat/completions").mock(return_value=Response(200, json=completion("big")))
    async with gateway(router) as (client, _):
        before = await scrape(client)
        escalated = await client.post("/v1/chat/completions", json=chat("auto"), headers=AUTH)
        failed = await client.post("/v1/chat/completions", json=chat("small-a"), headers=AUTH)
        m = await scrape(client)
    assert escalated.status_code == 200 and failed.status_code == 502
    assert metric(before, "tiergate_upstream_circuit_open", deployment="student/small-a#0") == 0
    assert metric(m, "tiergate_escalations_total", from_tier="student", to_tier="teacher") == 1
    # Two attempts on each student deployment for the escalated call, then the rest of small-a's allowance.
    assert metric(m, "tiergate_upstream_errors_total", deployment="student/small-a#0", kind="503") == 3
    assert metric(m, "tiergate_upstream_errors_total", deployment="student/small-b#1", kind="timeout") == 2
    assert metric(m, "tiergate_upstream_circuit_open", deployment="student/small-a#0") == 1  # 3 failures
    assert metric(m, "tiergate_upstream_circuit_open", deployment="teacher/big#2") == 0
    assert metric(m, "tiergate_requests_total", model="small-a", status="502", outcome="error") == 0
    assert metric(m, "tiergate_requests_total", status="502", outcome="error") == 1
    assert metric(m, "tiergate_refusals_total") == 0  # the upstream was tried: an error, not a refusal


async def test_streams_count_time_to_first_token() -> None:
    router = respx.Router()
    chunk = {"id": "c", "model": "small-a", "choices": [{"index": 0, "delta": {"content": "hi"}}]}
    usage = {
        "id": "c",
        "model": "small-a",
        "choices": [],
        "usage": {"prompt_tokens": 7, "completion_tokens": 1},
    }
    router.post("http://up-a/v1/chat/completions").mock(
        return_value=Response(200, content=sse(chunk, usage), headers={"content-type": "text/event-stream"})
    )
    async with gateway(router) as (client, records):
        r = await client.post("/v1/chat/completions", json=chat(stream=True), headers=AUTH)
        assert r.status_code == 200 and b"[DONE]" in r.content
        m = await scrape(client)
    assert metric(m, "tiergate_time_to_first_token_seconds_count", tier="student", model="small-a") == 1
    assert metric(m, "tiergate_time_to_first_token_seconds_sum") == pytest.approx(records[0].ttft_s)
    assert metric(m, "tiergate_tokens_total", type="input") == 7


@dataclass
class FakeQueue:
    name: str
    waiting: int = 0
    refused: int = 0

    def depth(self) -> int:
        return self.waiting

    def dropped(self) -> int:
        return self.refused


async def test_background_queues_report_depth_and_drops() -> None:
    queue = FakeQueue("ledger")
    async with gateway_app(httpx.MockTransport(respx.Router().handler)) as (app, client, _):
        app.state.gateway.queues.append(queue)
        first = await scrape(client)
        queue.waiting, queue.refused = 17, 4
        second = await scrape(client)
        queue.waiting, queue.refused = 2, 9
        third = await scrape(client)
    assert metric(first, "tiergate_queue_depth", queue="ledger") == 0
    assert ("tiergate_queue_dropped_total", frozenset({("queue", "ledger")})) in first
    assert metric(second, "tiergate_queue_depth", queue="ledger") == 17
    assert metric(second, "tiergate_queue_dropped_total", queue="ledger") == 4
    assert metric(third, "tiergate_queue_depth", queue="ledger") == 2
    assert metric(third, "tiergate_queue_dropped_total", queue="ledger") == 9


async def test_metrics_need_the_master_key() -> None:
    async with gateway(respx.Router()) as (client, _):
        missing = await client.get("/metrics")
        wrong = await client.get("/metrics", headers={"authorization": "Bearer sk-not-it"})
    assert missing.status_code == 401 and wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_api_key"


class TenantKeys:
    """Stands in for the tenants' authenticator: every key belongs to a tenant."""

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        return Principal("key", tenant_id="acme", key_id="key_1")


async def test_a_tenant_key_may_not_read_the_metrics() -> None:
    async with gateway_app(httpx.MockTransport(respx.Router().handler)) as (app, client, _):
        authenticate_with(app.state.gateway, TenantKeys())
        r = await client.get("/metrics", headers={"authorization": "Bearer sk-tenant"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "master_key_required"


async def test_the_metrics_port_serves_without_a_key_and_closes_with_the_app() -> None:
    port = free_port()
    router = respx.Router()
    router.post("http://up-a/v1/chat/completions").mock(
        return_value=Response(200, json=completion("small-a"))
    )
    async with gateway(router, settings(metrics_port=port)) as (client, _):
        await client.post("/v1/chat/completions", json=chat(), headers=AUTH)
        r = await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port}/metrics")
    assert r.status_code == 200
    assert metric(parse_metrics(r.text), "tiergate_requests_total", status="200") == 1
    with pytest.raises(httpx.ConnectError):
        await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port}/metrics")


def _record(tenant: str | None, **fields: object) -> CallRecord:
    record = CallRecord(
        request_id="r", endpoint="chat", principal=Principal("key", tenant_id=tenant, key_id="k1"),
        requested_model="auto", started_at=time.time(), tier="ta", model="m", deployment_id="ta/m#0",
        prompt_tokens=10, completion_tokens=5, cost_nano=1500, latency_s=0.5, upstream_s=0.499,
    )  # fmt: skip
    for name, value in fields.items():
        setattr(record, name, value)
    return record


def test_tenants_are_a_label_unless_switched_off() -> None:
    with_tenants, without = Metrics(), Metrics(tenant_label=False)
    for metrics in (with_tenants, without):
        metrics.sink(_record("acme"))
        metrics.sink(_record("globex"))
        metrics.refusal(_record("acme", status_code=429, outcome="refused"), InsufficientQuota("no budget"))
    on = parse_metrics(with_tenants.render()[0].decode())
    off = parse_metrics(without.render()[0].decode())
    assert metric(on, "tiergate_requests_total", tenant="acme", status="200") == 1
    assert metric(on, "tiergate_cost_usd_total", tenant="globex") == pytest.approx(1.5e-6)
    assert metric(on, "tiergate_refusals_total", tenant="acme", reason="insufficient_quota") == 1
    assert metric(off, "tiergate_requests_total", status="200") == 2
    assert metric(off, "tiergate_refusals_total", reason="insufficient_quota") == 1
    assert not any(("tenant", "acme") in labels for _, labels in off)


def test_a_broken_stream_counts_as_an_upstream_error_of_its_deployment() -> None:
    metrics = Metrics()
    metrics.sink(_record(None, outcome="upstream_broken", stream=True, ttft_s=0.1))
    m = parse_metrics(metrics.render()[0].decode())
    assert metric(m, "tiergate_upstream_errors_total", deployment="ta/m#0", kind="stream_broken") == 1
    assert metric(m, "tiergate_requests_total", outcome="upstream_broken") == 1


async def test_overhead_header_excludes_the_upstream_wait() -> None:
    delay = 0.3

    async def slow_upstream(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(delay)
        return httpx.Response(200, json=completion("small-a"))

    async with gateway_app(httpx.MockTransport(slow_upstream)) as (_, client, records):
        r = await client.post("/v1/chat/completions", json=chat(), headers=AUTH)
    (record,) = records
    overhead_ms = float(r.headers["x-tiergate-overhead-ms"])
    assert record.upstream_s >= delay  # the wait was counted as upstream time...
    assert 0 < overhead_ms < record.latency_s * 1000 - delay * 1000 + 50  # ...and left out of the overhead
    assert overhead_ms >= record.overhead_s * 1000  # the header is taken last, after the sinks ran


async def test_overhead_header_on_streams_and_errors() -> None:
    router = respx.Router(assert_all_called=False)
    router.post("http://up-a/v1/chat/completions").mock(
        return_value=Response(
            200, content=sse(completion("small-a")), headers={"content-type": "text/event-stream"}
        )
    )
    async with gateway(router) as (client, _):
        stream = await client.post("/v1/chat/completions", json=chat(stream=True), headers=AUTH)
        refused = await client.post("/v1/chat/completions", json=chat())
        embeddings_missing = await client.post(
            "/v1/embeddings", json={"model": "nope", "input": "x"}, headers=AUTH
        )
    for r in (stream, refused, embeddings_missing):
        assert float(r.headers["x-tiergate-overhead-ms"]) >= 0
    assert (stream.status_code, refused.status_code, embeddings_missing.status_code) == (200, 401, 404)


async def test_the_settlement_round_trip_counts_in_latency_and_overhead(sqlite_url: str) -> None:
    """The caller waits for the reservation to be settled, so the histograms (and the header) include it."""
    from tests.admin.conftest import config, serve

    async with serve(config(sqlite_url)) as s:
        records: list[CallRecord] = []
        s.gateway.sinks.append(records.append)
        key = await s.new_key((await s.new_tenant())["id"], budget_usd=1.0)
        settle = s.gateway.accounting.limiter.settle

        async def slow_settle(*args: object, **kwargs: object) -> None:
            await asyncio.sleep(0.2)
            await settle(*args, **kwargs)  # type: ignore[arg-type]

        s.gateway.accounting.limiter.settle = slow_settle  # type: ignore[method-assign]
        r = await s.chat(key["key"])
    (record,) = records
    assert record.overhead_s >= 0.2
    assert float(r.headers["x-tiergate-overhead-ms"]) >= record.overhead_s * 1000
