"""The order of a call, written down once.

    authenticate -> parse -> route -> admit (rate limits, budget reservation) -> [cache]
      -> upstream (retry, fallback, escalate) -> settle (usage, cost, release the reservation) -> sinks (ledger)

Routing precedes admission because the reservation is priced on the deployments the plan may use; routing is
a lookup in memory. Every admitted request is settled exactly once - answered, failed or cancelled - so its
reservation is released and the ledger gets one row for it.

Each step is a function with explicit arguments so that tests can drive it without a server; `app.py` only
reads the request, calls `chat_completion` or `embeddings`, and turns errors into OpenAI-shaped responses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response

from tiergate.gateway.admission import admit, escalation_guard
from tiergate.gateway.auth import Principal
from tiergate.gateway.errors import GatewayError, NotFound, PermissionDenied, ServiceUnavailable
from tiergate.gateway.jsonbody import ChatRequest, parse_chat, parse_embeddings
from tiergate.gateway.records import CallRecord
from tiergate.gateway.resources import Resources
from tiergate.gateway.settings import Deployment
from tiergate.gateway.streaming import RelayResponse, SSEAccumulator, StreamOutcome
from tiergate.gateway.upstream import Answer, Attempted
from tiergate.policies.pricing import cost_nano
from tiergate.policies.routing import RoutePlan, resolve, restrict, visible_models

JSON = "application/json"


def _allowed(res: Resources, principal: Principal, plan: RoutePlan, model: str) -> RoutePlan | None:
    allowed = restrict(plan, model, res.catalog, principal.allowed_models)
    if allowed is not None and principal.tenant_allowed_models is not None:
        allowed = restrict(allowed, model, res.catalog, principal.tenant_allowed_models)
    return allowed


def route(res: Resources, principal: Principal, model: str) -> RoutePlan:
    plan = resolve(model, res.catalog, res.settings.escalation)
    if plan is None:
        if not res.catalog.names:
            raise ServiceUnavailable(
                "no upstream model is configured: set OPENAI_API_KEY or start tiergate with --config FILE",
                code="no_upstream_configured",
            )
        raise NotFound(
            f"the model '{model}' does not exist; GET /v1/models lists the models you can use", param="model"
        )
    allowed = _allowed(res, principal, plan, model)
    if allowed is None:
        raise PermissionDenied(f"this key may not use the model '{model}'", param="model")
    return allowed


def _usage(doc: Any) -> tuple[int, int] | None:
    usage = doc.get("usage") if isinstance(doc, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens", 0)
    if isinstance(prompt, int) and isinstance(completion, int):
        return prompt, completion
    return None


def answer_headers(request_id: str, answer: Answer, trail: Attempted, content_type: str) -> dict[str, str]:
    headers = {
        "content-type": content_type,
        "x-request-id": request_id,
        "x-tiergate-tier": answer.tier or "none",
        "x-tiergate-model": answer.deployment.model,
    }
    if trail.escalations:
        headers["x-tiergate-escalations"] = str(len(trail.escalations))
    return headers


def _record_answer(record: CallRecord, answer: Answer, trail: Attempted, plan: RoutePlan) -> None:
    record.tier = answer.tier
    record.deployment_id = answer.deployment.id
    record.model = answer.deployment.model
    record.attempts = trail.attempts
    record.escalations = tuple(trail.escalations)
    record.route_reason = plan.reason


async def settle(
    res: Resources, record: CallRecord, deployment: Deployment, usage: tuple[int, int] | None, count: Any
) -> None:
    """Fix tokens and cost, settle the reservation, and hand the record to every sink.

    `count` computes (prompt, completion) tokens locally when the upstream reported no usage (a client that
    disconnected before the usage chunk, a server that never sends one).
    """
    if usage is None:
        usage = count()
        record.usage_source = "counted"
    record.prompt_tokens, record.completion_tokens = usage
    record.cost_nano = cost_nano(deployment.price, *usage)
    await _finish(res, record)


async def _finish(res: Resources, record: CallRecord) -> None:
    record.latency_s = time.perf_counter() - record.started_perf
    if record.ticket is not None:
        await res.limiter.settle(
            record.ticket, tokens=record.prompt_tokens + record.completion_tokens, cost_nano=record.cost_nano
        )
    for sink in res.sinks:
        sink(record)


async def settle_failed(res: Resources, record: CallRecord, error: GatewayError) -> None:
    """An admitted request that got no answer: nothing spent, the reservation released, one ledger row."""
    record.outcome, record.status_code, record.error = "error", error.status, error.message
    await _finish(res, record)


async def _ask_upstream(
    res: Resources, record: CallRecord, plan: RoutePlan, send: Any, *, stream: bool, trail: Attempted
) -> Answer:
    try:
        return await res.upstream.call(
            plan, send, stream=stream, trail=trail, may_escalate=escalation_guard(res, record.ticket)
        )
    except GatewayError as error:
        _trail(record, trail)
        await settle_failed(res, record, error)
        raise
    except asyncio.CancelledError:
        # The server is stopping: settle in a task of its own, which this cancellation cannot reach.
        _trail(record, trail)
        pending = asyncio.ensure_future(settle_failed(res, record, ServiceUnavailable("the gateway stopped")))
        res.accounting.settling.add(pending)
        pending.add_done_callback(res.accounting.settling.discard)
        raise


def _trail(record: CallRecord, trail: Attempted) -> None:
    record.attempts, record.escalations, record.upstream_s = (
        trail.attempts,
        tuple(trail.escalations),
        trail.upstream_wait_s,
    )


async def chat_completion(
    res: Resources, headers: Mapping[str, str], raw: bytes, record: CallRecord
) -> Response | RelayResponse:
    principal = await res.auth.authenticate(headers)
    record.principal = principal
    request = parse_chat(raw)
    record.requested_model, record.stream = request.model, request.stream
    plan = route(res, principal, request.model)
    record.ticket = await admit(res, principal, plan, request)
    trail = Attempted()
    answer = await _ask_upstream(
        res,
        record,
        plan,
        lambda d: res.provider(d).chat(d, request, want_usage_chunk=True),
        stream=request.stream,
        trail=trail,
    )
    _trail(record, trail)
    _record_answer(record, answer, trail, plan)
    if request.stream:
        return _relay(res, request, answer, trail, record)
    doc = orjson.loads(answer.body)
    record.answer = doc
    await settle(
        res,
        record,
        answer.deployment,
        _usage(doc),
        lambda: _count_answer(res, request, answer.deployment, doc),
    )
    return Response(answer.body, headers=answer_headers(record.request_id, answer, trail, JSON))


def _count_answer(res: Resources, request: ChatRequest, deployment: Deployment, doc: Any) -> tuple[int, int]:
    text = ""
    for choice in doc.get("choices") or () if isinstance(doc, dict) else ():
        message = choice.get("message") or {}
        text += message.get("content") or ""
        text += orjson.dumps(message["tool_calls"]).decode() if message.get("tool_calls") else ""
    model = deployment.model
    return res.tokens.messages(request.messages, model, request.body.get("tools")), res.tokens.text(
        text, model
    )


def _relay(
    res: Resources, request: ChatRequest, answer: Answer, trail: Attempted, record: CallRecord
) -> RelayResponse:
    accumulator = SSEAccumulator(strip_usage_chunk=not request.include_usage)
    headers = answer_headers(record.request_id, answer, trail, "text/event-stream")
    headers["cache-control"] = "no-cache"

    async def finish(outcome: StreamOutcome) -> None:
        record.outcome = outcome.status
        record.error = outcome.error
        record.ttft_s = outcome.ttft_s
        record.upstream_s = trail.upstream_wait_s + outcome.upstream_wait_s
        record.answer = accumulator.assembled()
        model = answer.deployment.model

        def count() -> tuple[int, int]:
            completion = res.tokens.text(accumulator.text + accumulator.tool_arguments(), model)
            return res.tokens.messages(request.messages, model, request.body.get("tools")), completion

        await settle(res, record, answer.deployment, _usage({"usage": accumulator.usage}), count)

    return RelayResponse(
        headers=[(k.encode(), v.encode()) for k, v in headers.items()],
        first_chunk=answer.first_chunk,
        chunks=answer.response.chunks(),
        close_upstream=answer.response.aclose,
        accumulator=accumulator,
        started=record.started_perf,
        upstream_wait_s=0.0,
        finish=finish,
    )


async def embeddings(res: Resources, headers: Mapping[str, str], raw: bytes, record: CallRecord) -> Response:
    principal = await res.auth.authenticate(headers)
    record.principal = principal
    request = parse_embeddings(raw)
    record.requested_model = request.model
    record.endpoint = "embeddings"
    plan = route(res, principal, request.model)
    record.ticket = await admit(res, principal, plan, request)
    trail = Attempted()
    answer = await _ask_upstream(
        res, record, plan, lambda d: res.provider(d).embeddings(d, request), stream=False, trail=trail
    )
    _trail(record, trail)
    _record_answer(record, answer, trail, plan)
    doc = orjson.loads(answer.body)
    usage = _usage(doc)

    def count() -> tuple[int, int]:
        value = request.body["input"]
        texts = [value] if isinstance(value, str) else [v for v in value if isinstance(v, str)]
        return sum(res.tokens.text(t, answer.deployment.model) for t in texts), 0

    await settle(res, record, answer.deployment, (usage[0], 0) if usage else None, count)
    return Response(answer.body, headers=answer_headers(record.request_id, answer, trail, JSON))


def models(res: Resources, principal: Principal) -> Response:
    """`GET /v1/models`: `auto`, the tier aliases and the deployment names this caller may use."""
    names = [
        m
        for m in visible_models(res.catalog)
        if (principal.allowed_models is None and principal.tenant_allowed_models is None)
        or _may_use(res, principal, m)
    ]
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "tiergate"} for name in names]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type=JSON)


def _may_use(res: Resources, principal: Principal, model: str) -> bool:
    plan = resolve(model, res.catalog, res.settings.escalation)
    return plan is not None and _allowed(res, principal, plan, model) is not None
