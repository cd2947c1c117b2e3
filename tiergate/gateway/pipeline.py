"""The order of a call, written down once.

    authenticate -> parse -> cache options -> route (domain: embedding only when needed)
      -> admit (rate limits, budget reservation) -> cache lookup (exact, then semantic)
      -> upstream (retry, fallback, escalate; cascade: verify and escalate weak answers)
      -> settle (usage, cost, release the reservation) -> sinks (ledger, metrics, ...) -> cache store (queued)

Routing precedes admission because the reservation is priced on the deployments the plan may use; routing is
a lookup in memory (plus, for domain routing, one embedding in a worker thread). Admission precedes the cache
so that rate limits also bound cache hits. Every admitted request is settled exactly once - answered, served
from the cache, failed or cancelled - so its reservation is released and the ledger gets one row for it
(`Accounting.settle` enforces once; an admitted request is registered, so a shutdown settles it even if its
own path never gets there).

Each step is a function with explicit arguments so that tests can drive it without a server; `app.py` only
reads the request, calls `chat_completion` (or `endpoints.embeddings`), and turns errors into OpenAI-shaped
responses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

import orjson
from starlette.responses import Response

from tiergate.gateway import cascade
from tiergate.gateway.accounting.auth import Principal
from tiergate.gateway.accounting.records import CallRecord
from tiergate.gateway.admission import admit, escalation_guard
from tiergate.gateway.cache.exact import CachedAnswer
from tiergate.gateway.cache.use import cache_use, cache_writer, lookup
from tiergate.gateway.config.settings import Deployment
from tiergate.gateway.errors import BadRequest, GatewayError, NotFound, PermissionDenied, ServiceUnavailable
from tiergate.gateway.http.bodies import ChatRequest, parse_chat
from tiergate.gateway.http.sse import sse_chunks
from tiergate.gateway.resources import Resources
from tiergate.gateway.routing.query import ChatQuery
from tiergate.gateway.upstream.client import Answer, Attempted
from tiergate.gateway.upstream.relay import RelayResponse, SSEAccumulator, StreamOutcome
from tiergate.policies.cache import (
    CACHE_FIELD,
    CacheControlError,
    CacheRequest,
    parse_cache_request,
)
from tiergate.policies.pricing import cost_nano
from tiergate.policies.routing import RoutePlan, resolve, restrict
from tiergate.policies.usage import chat_usage

JSON = "application/json"
T = TypeVar("T")


def route(res: Resources, principal: Principal, model: str) -> RoutePlan:
    return _checked(res, principal, model, resolve(model, res.catalog, res.settings.escalation))


def _checked(res: Resources, principal: Principal, model: str, plan: RoutePlan | None) -> RoutePlan:
    if plan is None:
        if not res.catalog.names:
            raise ServiceUnavailable(
                "no upstream model is configured: set OPENAI_API_KEY or start tiergate with --config FILE",
                code="no_upstream_configured",
            )
        raise NotFound(
            f"the model '{model}' does not exist; GET /v1/models lists the models you can use", param="model"
        )
    allowed = allowed_plan(res, principal, plan, model)
    if allowed is None:
        raise PermissionDenied(f"this key may not use the model '{model}'", param="model")
    return allowed


def allowed_plan(res: Resources, principal: Principal, plan: RoutePlan, model: str) -> RoutePlan | None:
    """The plan within both the key's and its tenant's `allowed_models`."""
    allowed = restrict(plan, model, res.catalog, principal.allowed_models)
    if allowed is not None and principal.tenant_allowed_models is not None:
        allowed = restrict(allowed, model, res.catalog, principal.tenant_allowed_models)
    return allowed


def answer_headers(request_id: str, answer: Answer, trail: Attempted, content_type: str) -> dict[str, str]:
    headers = {
        "content-type": content_type,
        "x-request-id": request_id,
        "x-tiergate-tier": answer.tier or "none",
        "x-tiergate-model": answer.deployment.model,
        # The model alone does not say which of two deployments of it answered (e.g. two regions).
        "x-tiergate-deployment": answer.deployment.id,
        "x-tiergate-cache": "miss",
    }
    if trail.escalations:
        headers["x-tiergate-escalations"] = str(len(trail.escalations))
    return headers


def record_answer(record: CallRecord, answer: Answer, trail: Attempted, plan: RoutePlan) -> None:
    record.tier = answer.tier
    record.deployment_id = answer.deployment.id
    record.model = answer.deployment.model
    record.attempts = trail.attempts
    record.escalations = tuple(trail.escalations)
    record.route_reason = plan.reason


async def settle(
    res: Resources,
    record: CallRecord,
    deployment: Deployment,
    usage: tuple[int, int] | None,
    count: Any,
    extra_nano: int = 0,
) -> None:
    """Fix tokens and cost, settle the reservation, and hand the record to every sink.

    `count` computes (prompt, completion) tokens locally when the upstream reported no usage (a client that
    disconnected before the usage chunk, a server that never sends one). `extra_nano` is what else the call
    used: cascade answers that were verified and discarded, judge calls.
    """
    if usage is None:
        await res.tokens.ready(deployment.model)
        usage = count()
        record.usage_source = "counted"
    record.prompt_tokens, record.completion_tokens = usage
    record.cost_nano = cost_nano(deployment.price, *usage) + extra_nano
    await _finish(res, record, record.prompt_tokens + record.completion_tokens)


def shutting_down() -> ServiceUnavailable:
    return ServiceUnavailable(
        "the gateway is shutting down and stopped this request before it was answered; retry it",
        code="shutting_down",
    )


async def _finish(res: Resources, record: CallRecord, tokens: int) -> None:
    """Release the reservation against what was used (`tokens` upstream, `record.cost_nano`); record it."""
    await res.accounting.settle(record, tokens, res.sinks)


async def settle_failed(res: Resources, record: CallRecord, error: GatewayError) -> None:
    """An admitted request that got no answer: nothing spent, the reservation released, one ledger row.

    Nothing happens for a request that was not admitted or is already settled.
    """
    await res.accounting.settle_failed(record, error)


async def ask_upstream(
    res: Resources, record: CallRecord, trail: Attempted, call: Callable[[], Awaitable[T]]
) -> T:
    """`call()`, settling the request as failed when it raises (so its reservation is never left held).

    A cancellation (the server stopping after its drain timeout) is settled too: the settlement runs in a
    task of its own, which the cancellation cannot reach, and the app's shutdown waits for it.
    """
    try:
        return await call()
    except (GatewayError, asyncio.CancelledError) as exc:
        record_trail(record, trail)
        await settle_failed(res, record, exc if isinstance(exc, GatewayError) else shutting_down())
        raise


def record_trail(record: CallRecord, trail: Attempted) -> None:
    record.attempts, record.escalations, record.upstream_s = (
        trail.attempts,
        tuple(trail.escalations),
        trail.upstream_wait_s,
    )


def cache_options(headers: Mapping[str, str], request: ChatRequest) -> tuple[CacheRequest, ChatRequest]:
    """The request's cache options, and the request without its `cache` field (never sent upstream)."""
    try:
        wants = parse_cache_request(headers.get("cache-control"), request.body.get(CACHE_FIELD))
    except CacheControlError as exc:
        raise BadRequest(str(exc), param=exc.param) from None
    if CACHE_FIELD in request.body:
        body = {k: v for k, v in request.body.items() if k != CACHE_FIELD}
        request = replace(request, raw=orjson.dumps(body), body=body)
    return wants, request


async def route_chat(
    res: Resources,
    principal: Principal,
    request: ChatRequest,
    headers: Mapping[str, str],
    query: ChatQuery,
    request_id: str,
) -> RoutePlan:
    router, health = res.router, res.upstream.health
    plan = await router.plan(principal, request, headers, query, res.tokens, health, request_id)
    if plan is not None and plan.monitor is not None:
        allowed = allowed_plan(res, principal, plan, request.model)
        if allowed is None or allowed.targets[0] != plan.targets[0]:
            # The key may not use the incumbent: its requests are not monitoring samples.
            plan = await router.plan(
                principal, request, headers, query, res.tokens, health, request_id, monitoring=False
            )
    return _checked(res, principal, request.model, plan)


async def _replay(
    res: Resources,
    request: ChatRequest,
    hit: CachedAnswer,
    record: CallRecord,
    kind: str = "exact",
    extra: Mapping[str, str] | None = None,
) -> Response:
    """A cache hit, in the shape the client asked for; billed at zero upstream cost."""
    record.cache = kind
    record.tier, record.model, record.answer = hit.tier, hit.model, hit.answer
    record.prompt_tokens, record.completion_tokens = chat_usage(hit.answer) or (0, 0)
    record.usage_source = "cache"
    record.cost_nano = 0
    headers = {
        "x-request-id": record.request_id,
        "x-tiergate-tier": hit.tier or "none",
        "x-tiergate-model": hit.model or "",
        "x-tiergate-cache": kind,
        **(extra or {}),
    }
    if request.stream:
        body, headers["content-type"] = (
            sse_chunks(hit.answer, include_usage=request.include_usage),
            "text/event-stream",
        )
        record.ttft_s = time.perf_counter() - record.started_perf
    else:
        body, headers["content-type"] = orjson.dumps(hit.answer), JSON
    # No upstream tokens were used: the hit counts as a request for RPM, not against TPM or the budget.
    await _finish(res, record, 0)
    return Response(body, headers=headers)


async def chat_completion(
    res: Resources, headers: Mapping[str, str], raw: bytes, record: CallRecord
) -> Response | RelayResponse:
    with record.phase("auth"):
        principal = await res.auth.authenticate(headers)
    record.principal = principal
    request = parse_chat(raw)
    record.requested_model, record.stream = request.model, request.stream
    wants, request = cache_options(headers, request)
    record.request_body = request.body
    domains = res.domain_embedder
    query = ChatQuery(
        request.messages,
        res.embedder,
        domains.bound(principal, record.request_id) if domains is not None else None,
    )
    with record.phase("route"):
        plan = await route_chat(res, principal, request, headers, query, record.request_id)
    record.route_reason, record.domain, record.query_vector = plan.reason, plan.domain, query.vector()
    record.monitor = plan.monitor
    record.ticket = await admit(res, principal, plan, request)
    res.accounting.admitted(record)
    use = cache_use(res, principal, request, plan, wants, query)
    if use is not None and wants.lookup:
        with record.phase("cache"):
            found = await lookup(res, use, wants, query, plan.domain)
        if found is not None:
            hit, kind, extra = found
            return await _replay(res, request, hit, record, kind, extra)
    trail = Attempted()
    use_cascade = plan.verify and (not request.stream or res.settings.routing.cascade.streams)
    if plan.verify and not use_cascade:
        plan = replace(plan, reason=plan.reason + "; cascade off for streams", verify=False)
    guard = escalation_guard(res, record.ticket)
    doc, body, spent = None, b"", 0
    with record.phase("upstream"):
        if use_cascade:
            outcome = await ask_upstream(
                res, record, trail, lambda: cascade.run(res, request, plan, trail, record, guard)
            )
            answer, doc, body, spent = outcome.answer, outcome.doc, outcome.body, outcome.spent_nano
        else:
            answer = await ask_upstream(
                res,
                record,
                trail,
                lambda: res.upstream.call(
                    plan,
                    lambda d: res.provider(d).chat(d, request, want_usage_chunk=True),
                    stream=request.stream,
                    trail=trail,
                    may_escalate=guard,
                ),
            )
    record_trail(record, trail)
    record_answer(record, answer, trail, plan)
    store = cache_writer(res, use, wants, query, answer)
    if request.stream and doc is None:
        return _relay(res, request, answer, trail, record, store, spent)
    if doc is None:
        doc, body = orjson.loads(answer.body), answer.body
    record.answer = doc
    await settle(
        res,
        record,
        answer.deployment,
        chat_usage(doc),
        lambda: _count_answer(res, request, answer.deployment, doc),
        spent,
    )
    if store is not None:
        store(doc)
    if request.stream:  # a cascade answer, buffered until verified, now sent as the stream it would have been
        replayed = sse_chunks(doc, include_usage=request.include_usage)
        record.ttft_s = time.perf_counter() - record.started_perf
        return Response(
            replayed, headers=answer_headers(record.request_id, answer, trail, "text/event-stream")
        )
    return Response(body, headers=answer_headers(record.request_id, answer, trail, JSON))


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
    res: Resources,
    request: ChatRequest,
    answer: Answer,
    trail: Attempted,
    record: CallRecord,
    store: Callable[[dict[str, Any]], None] | None = None,
    spent: int = 0,
) -> RelayResponse:
    accumulator = SSEAccumulator(strip_usage_chunk=not request.include_usage)
    headers = answer_headers(record.request_id, answer, trail, "text/event-stream")
    headers["cache-control"] = "no-cache"

    async def finish(outcome: StreamOutcome) -> None:
        record.outcome = outcome.status
        record.error = outcome.error
        record.ttft_s = outcome.ttft_s
        record.upstream_s = trail.upstream_wait_s + outcome.upstream_wait_s
        record.defer_answer(accumulator.assembled)
        model = answer.deployment.model

        def count() -> tuple[int, int]:
            completion = res.tokens.text(accumulator.text + accumulator.tool_arguments(), model)
            return res.tokens.messages(request.messages, model, request.body.get("tools")), completion

        await settle(res, record, answer.deployment, chat_usage({"usage": accumulator.usage}), count, spent)
        if store is not None and outcome.status == "ok":
            store(accumulator.assembled())

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
