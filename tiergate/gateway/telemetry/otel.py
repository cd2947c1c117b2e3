"""OpenTelemetry spans for each call, built from its record once the call is over.

Imported only when tracing is switched on (`telemetry.tracing_wanted`): with no OTLP endpoint configured,
no OpenTelemetry module is loaded and the request path does no tracing work at all. The call's phases
(`CallRecord.phases`: auth, cache, route, upstream) were timed as it ran; here they become a server span with
one child per phase, back-dated to when they happened. The upstream child follows the GenAI semantic
conventions (`gen_ai.*`). Prompt and answer text never go into a span.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from tiergate._version import __version__
from tiergate.gateway.accounting.records import CallRecord, Phase
from tiergate.gateway.config.settings import Deployment, Settings
from tiergate.gateway.errors import GatewayError

_ROUTES = {"chat": "/v1/chat/completions", "completions": "/v1/completions", "messages": "/v1/messages",
           "responses": "/v1/responses", "embeddings": "/v1/embeddings"}  # fmt: skip
_OPERATIONS = {"chat": "chat", "completions": "text_completion", "messages": "chat", "responses": "chat",
               "embeddings": "embeddings"}  # fmt: skip


class Tracing:
    """Turns finished calls into spans on `provider`; `sink` and `refusal` are the request path's hooks."""

    def __init__(self, provider: TracerProvider, settings: Settings) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("tiergate", __version__)
        self._deployments = {d.id: d for d in settings.deployments}

    def sink(self, record: CallRecord) -> None:
        self._emit(record, None)

    def refusal(self, record: CallRecord, error: GatewayError) -> None:
        self._emit(record, error)

    def shutdown(self) -> None:
        self.provider.shutdown()  # flushes what the batch processor still holds

    def _emit(self, record: CallRecord, error: GatewayError | None) -> None:
        offset = record.started_at - record.started_perf  # perf_counter() value -> epoch seconds

        def ns(perf: float) -> int:
            return int((offset + perf) * 1e9)

        end = record.started_perf + record.latency_s
        route = _ROUTES.get(record.endpoint, record.endpoint)
        root = self._tracer.start_span(
            f"POST {route}",
            kind=SpanKind.SERVER,
            start_time=ns(record.started_perf),
            attributes=_drop_none(
                {
                    "http.request.method": "POST",
                    "http.route": route,
                    "http.response.status_code": record.status_code,
                    "tiergate.request_id": record.request_id,
                    "tiergate.tenant_id": record.principal.tenant_id,
                    "tiergate.requested_model": record.requested_model,
                    "tiergate.tier": record.tier,
                    "tiergate.route_reason": record.route_reason or None,
                    "tiergate.cache": record.cache,
                    "tiergate.outcome": record.outcome,
                    "tiergate.cost_usd": record.cost_nano / 1e9 if error is None else None,
                    "tiergate.overhead_ms": record.overhead_s * 1000 if error is None else None,
                }
            ),
        )
        context = trace.set_span_in_context(root)
        for phase in record.phases:
            if phase.name == "upstream":
                self._upstream(record, phase, error, context, ns, end)
                continue
            span = self._tracer.start_span(
                f"tiergate.{phase.name}", context=context, start_time=ns(phase.start)
            )
            if phase.failed:
                span.set_status(Status(StatusCode.ERROR))
                if error is not None:
                    span.set_attribute("error.type", error.code or error.type)
            span.end(end_time=ns(phase.end or end))
        if error is not None:
            root.set_attribute("error.type", error.code or error.type)
            root.set_status(Status(StatusCode.ERROR, error.message))
        elif record.outcome != "ok":
            root.set_attribute("error.type", record.outcome)
            root.set_status(Status(StatusCode.ERROR, record.error or record.outcome))
        root.end(end_time=ns(end))

    def _upstream(
        self, record: CallRecord, phase: Phase, error: GatewayError | None, context: Any, ns: Any, end: float
    ) -> None:
        operation = _OPERATIONS.get(record.endpoint, record.endpoint)
        deployment = self._deployments.get(record.deployment_id or "")
        answer = record.answer or {}
        finish_reasons = [
            c["finish_reason"]
            for c in answer.get("choices") or ()
            if isinstance(c, dict) and c.get("finish_reason")
        ]
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": record.model,
            "gen_ai.response.model": answer.get("model") or record.model,
            "gen_ai.response.id": answer.get("id"),
            "gen_ai.response.finish_reasons": finish_reasons or None,
            "tiergate.deployment.id": record.deployment_id,
            "tiergate.tier": record.tier,
            "tiergate.attempts": record.attempts,
            "tiergate.escalations": list(record.escalations) or None,
        }
        if error is None:
            attributes["gen_ai.usage.input_tokens"] = record.prompt_tokens
            attributes["gen_ai.usage.output_tokens"] = record.completion_tokens
        if deployment is not None:
            attributes.update(_provider_attributes(deployment))
        span = self._tracer.start_span(
            f"{operation} {record.model}" if record.model else operation,
            context=context,
            kind=SpanKind.CLIENT,
            start_time=ns(phase.start),
            attributes=_drop_none(attributes),
        )
        if phase.failed or record.outcome == "upstream_broken":
            kind = error.code if error is not None and error.code else record.outcome
            span.set_attribute("error.type", kind or "error")
            span.set_status(Status(StatusCode.ERROR))
        # A stream keeps the upstream connection until its last chunk: the span lasts as long.
        span.end(end_time=ns(end if record.stream and error is None else phase.end or end))


def _provider_attributes(deployment: Deployment) -> dict[str, Any]:
    url = urlsplit(deployment.api_base)
    return {
        # gen_ai.system is the name older conventions (and most backends today) use; provider.name the newer.
        "gen_ai.system": deployment.provider,
        "gen_ai.provider.name": deployment.provider,
        "server.address": url.hostname,
        "server.port": url.port or (443 if url.scheme == "https" else 80),
    }


def _drop_none(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if v is not None}


def provider_from_environment(env: Mapping[str, str], exporter: SpanExporter | None = None) -> TracerProvider:
    """A provider exporting by OTLP as the standard OTEL_* variables say (endpoint, headers, protocol)."""
    attributes = {} if env.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: "tiergate"}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(exporter or _otlp_exporter(env)))
    return provider


def _otlp_exporter(env: Mapping[str, str]) -> SpanExporter:
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
        except ImportError as exc:
            raise RuntimeError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs `pip install opentelemetry-exporter-otlp-proto-grpc`"
            ) from exc
        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()
