"""OpenTelemetry spans of a call (in-memory exporter), OTLP export from the environment, and no cost when off."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import respx
from httpx import Response
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.gateway.conftest import AUTH, completion, gateway_app, settings, sse
from tests.support import ROOT
from tiergate.gateway.telemetry.hooks import tracing_wanted
from tiergate.gateway.telemetry.otel import Tracing

PROMPT = "PROMPT-TEXT-5150 in no span"


@asynccontextmanager
async def traced(router: respx.Router) -> AsyncIterator[tuple[httpx.AsyncClient, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider, settings())
    async with gateway_app(httpx.MockTransport(router.handler)) as (app, client, _):
        gw = app.state.gateway
        gw.sinks.append(tracing.sink)
        gw.refusals.append(tracing.refusal)
        yield client, exporter
    provider.shutdown()


def _by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans}


def _body(**extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": PROMPT}], **extra}


async def test_a_call_is_a_server_span_with_a_child_per_phase_and_genai_attributes() -> None:
    router = respx.Router()
    router.post("http://up-a/v1/chat/completions").mock(
        return_value=Response(200, json=completion("small-a"))
    )
    async with traced(router) as (client, exporter):
        r = await client.post("/v1/chat/completions", json=_body(), headers=AUTH)
    assert r.status_code == 200
    spans = _by_name(exporter.get_finished_spans())
    assert set(spans) == {"POST /v1/chat/completions", "tiergate.auth", "tiergate.route", "chat small-a"}
    root, upstream = spans["POST /v1/chat/completions"], spans["chat small-a"]
    assert root.kind == SpanKind.SERVER and root.parent is None
    assert root.attributes is not None and upstream.attributes is not None
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["tiergate.request_id"] == r.headers["x-request-id"]
    assert root.attributes["tiergate.tier"] == "student" and root.attributes["tiergate.cache"] == "miss"
    for child in ("tiergate.auth", "tiergate.route", "chat small-a"):
        span = spans[child]
        assert span.parent is not None and span.parent.span_id == root.context.span_id
        assert span.context.trace_id == root.context.trace_id
        assert root.start_time <= span.start_time <= span.end_time <= root.end_time  # type: ignore[operator]
    assert upstream.kind == SpanKind.CLIENT
    assert dict(upstream.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "openai",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "small-a",
        "gen_ai.response.model": "small-a",
        "gen_ai.response.id": "chatcmpl-1",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": 100,
        "gen_ai.usage.output_tokens": 50,
        "server.address": "up-a",
        "server.port": 80,
        "tiergate.deployment.id": "student/small-a#0",
        "tiergate.tier": "student",
        "tiergate.attempts": 1,
    }
    assert spans["tiergate.auth"].start_time < spans["tiergate.route"].start_time < upstream.start_time  # type: ignore[operator]


async def test_a_front_door_call_is_named_after_its_own_route() -> None:
    router = respx.Router()
    router.post("http://up-a/v1/chat/completions").mock(
        return_value=Response(200, json=completion("small-a"))
    )
    async with traced(router) as (client, exporter):
        r = await client.post("/responses", json={"model": "auto", "input": PROMPT}, headers=AUTH)
    assert r.status_code == 200
    spans = _by_name(exporter.get_finished_spans())
    assert {"POST /v1/responses", "chat small-a"} <= set(spans)
    assert spans["chat small-a"].attributes["gen_ai.operation.name"] == "chat"  # type: ignore[index]


async def test_refusals_and_failures_end_in_error_spans() -> None:
    router = respx.Router(assert_all_called=False)
    router.post("http://up-a/v1/chat/completions").mock(return_value=Response(500))
    async with traced(router) as (client, exporter):
        await client.post("/v1/chat/completions", json=_body(), headers={"authorization": "Bearer sk-wrong"})
        refused = _by_name(exporter.get_finished_spans())
        exporter.clear()
        await client.post("/v1/chat/completions", json=_body(model="small-a"), headers=AUTH)
        failed = _by_name(exporter.get_finished_spans())
    assert set(refused) == {"POST /v1/chat/completions", "tiergate.auth"}
    assert refused["tiergate.auth"].status.status_code == StatusCode.ERROR
    root = refused["POST /v1/chat/completions"]
    assert root.status.status_code == StatusCode.ERROR and root.attributes is not None
    assert (root.attributes["http.response.status_code"], root.attributes["error.type"]) == (
        401,
        "invalid_api_key",
    )
    upstream = failed["chat"]  # no deployment answered, so no response model to name the span by
    assert upstream.status.status_code == StatusCode.ERROR and upstream.attributes is not None
    assert upstream.attributes["error.type"] == "upstream_failed"
    assert "gen_ai.usage.input_tokens" not in upstream.attributes


async def test_a_streams_upstream_span_lasts_until_the_last_chunk() -> None:
    router = respx.Router()
    router.post("http://up-a/v1/chat/completions").mock(
        return_value=Response(
            200, content=sse(completion("small-a")), headers={"content-type": "text/event-stream"}
        )
    )
    async with traced(router) as (client, exporter):
        await client.post("/v1/chat/completions", json=_body(stream=True), headers=AUTH)
    spans = _by_name(exporter.get_finished_spans())
    assert spans["chat small-a"].end_time == spans["POST /v1/chat/completions"].end_time


async def test_no_prompt_or_key_in_any_span() -> None:
    router = respx.Router()
    router.post("http://up-a/v1/chat/completions").mock(
        return_value=Response(200, json=completion("small-a", PROMPT))
    )
    async with traced(router) as (client, exporter):
        await client.post("/v1/chat/completions", json=_body(), headers=AUTH)
    text = repr([(s.name, dict(s.attributes or {}), s.events) for s in exporter.get_finished_spans()])
    assert "PROMPT-TEXT-5150" not in text and AUTH["authorization"].split()[1] not in text


def test_tracing_is_wanted_only_with_an_otlp_endpoint() -> None:
    assert not tracing_wanted({})
    assert tracing_wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing_wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"})
    assert not tracing_wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"})
    assert not tracing_wanted(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}
    )


# Runs the app in a fresh interpreter, makes one call and reports which OpenTelemetry modules got loaded.
_ONE_CALL = """
import asyncio, sys, respx
from httpx import Response
from tests.gateway.conftest import AUTH, chat, completion, gateway

async def main():
    router = respx.Router()
    router.post("http://up-a/v1/chat/completions").mock(return_value=Response(200, json=completion("small-a")))
    async with gateway(router) as (client, _):
        assert (await client.post("/v1/chat/completions", json=chat(), headers=AUTH)).status_code == 200

asyncio.run(main())
# redis-py imports OpenTelemetry's *metrics* SDK whenever it is installed; tracing is what tiergate owns.
traced = ("opentelemetry.sdk.trace", "opentelemetry.exporter", "tiergate.gateway.telemetry.otel")
print(sorted(m for m in sys.modules if m.startswith(traced)))
"""


def _run_one_call(env: dict[str, str], cwd: Path) -> str:
    """In `cwd`, since the app keeps its default SQLite file in the working directory."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", _ONE_CALL],
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_without_an_endpoint_opentelemetry_tracing_is_never_imported(tmp_path: Path) -> None:
    assert _run_one_call({}, tmp_path) == "[]"


class _Collector(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, bytes]]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.received.append((self.path, body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """A stand-in OTLP/HTTP collector on localhost that keeps what it receives."""
    received: list[tuple[str, bytes]] = []
    handler = type("Collector", (_Collector,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def test_spans_are_exported_by_otlp_when_an_endpoint_is_set(
    collector: tuple[str, list[tuple[str, bytes]]], tmp_path: Path
) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    url, received = collector
    loaded = _run_one_call({"OTEL_EXPORTER_OTLP_ENDPOINT": url}, tmp_path)
    assert "tiergate.gateway.telemetry.otel" in loaded
    assert received and {path for path, _ in received} == {"/v1/traces"}
    names, services = [], set()
    for _, body in received:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            services |= {
                a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"
            }
            names += [s.name for scope in resource_spans.scope_spans for s in scope.spans]
    assert services == {"tiergate"}
    assert sorted(names) == sorted(
        ["POST /v1/chat/completions", "tiergate.auth", "tiergate.route", "chat small-a"]
    )
