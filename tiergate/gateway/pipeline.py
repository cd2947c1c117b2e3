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

Each step is a method or function with explicit arguments; `ChatPipeline` is built once by the lifespan with
the parts it uses, and `app.py` only reads the request, calls `ChatPipeline.chat_completion` (or
`endpoints.Embeddings.embeddings`), and turns errors into OpenAI-shaped responses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import orjson
from starlette.responses import Response

from tiergate.gateway.accounting.auth import Authenticator, Principal
from tiergate.gateway.accounting.books import Accounting
from tiergate.gateway.accounting.records import CallRecord
from tiergate.gateway.admission import Admission
from tiergate.gateway.cache.exact import CachedAnswer
from tiergate.gateway.cache.use import ResponseCaches
from tiergate.gateway.cascade import Cascade
from tiergate.gateway.config.settings import Deployment
from tiergate.gateway.doors.door import Door
from tiergate.gateway.errors import BadRequest, NotFound, PermissionDenied, ServiceUnavailable
from tiergate.gateway.http.bodies import ChatRequest, parse_chat
from tiergate.gateway.http.sse import sse_chunks
from tiergate.gateway.routing.domain_embeddings import UpstreamEmbedder
from tiergate.gateway.routing.local_embeddings import Embedder
from tiergate.gateway.routing.query import ChatQuery
from tiergate.gateway.routing.router import Router
from tiergate.gateway.settlement import Settlement, record_trail
from tiergate.gateway.upstream.client import Answer, Attempted, UpstreamClient
from tiergate.gateway.upstream.fleet import Fleet
from tiergate.gateway.upstream.relay import RelayResponse, SSEAccumulator, StreamOutcome
from tiergate.gateway.upstream.tokens import TokenCounter
from tiergate.policies.cache import (
    CACHE_FIELD,
    CacheControlError,
    CacheRequest,
    parse_cache_request,
)
from tiergate.policies.routing import EscalationPolicy, RoutePlan, resolve, restrict
from tiergate.policies.usage import chat_usage

JSON = "application/json"


class ModelAccess:
    """Which models a caller may ask for, resolved over the fleet's catalog in force."""

    def __init__(self, fleet: Fleet, escalation: EscalationPolicy) -> None:
        self._fleet = fleet
        self._escalation = escalation

    def route(self, principal: Principal, model: str) -> RoutePlan:
        """The plan for a model named directly (not routed by the policy), within what the caller may use."""
        return self.checked(principal, model, resolve(model, self._fleet.snapshot.catalog, self._escalation))

    def checked(self, principal: Principal, model: str, plan: RoutePlan | None) -> RoutePlan:
        if plan is None:
            if not self._fleet.snapshot.catalog.names:
                raise ServiceUnavailable(
                    "no upstream model is configured: set OPENAI_API_KEY or start tiergate with --config FILE",
                    code="no_upstream_configured",
                )
            raise NotFound(
                f"the model '{model}' does not exist; GET /v1/models lists the models you can use",
                param="model",
            )
        allowed = self.allowed(principal, plan, model)
        if allowed is None:
            raise PermissionDenied(f"this key may not use the model '{model}'", param="model")
        return allowed

    def allowed(self, principal: Principal, plan: RoutePlan, model: str) -> RoutePlan | None:
        """The plan within both the key's and its tenant's `allowed_models`."""
        catalog = self._fleet.snapshot.catalog
        allowed = restrict(plan, model, catalog, principal.allowed_models)
        if allowed is not None and principal.tenant_allowed_models is not None:
            allowed = restrict(allowed, model, catalog, principal.tenant_allowed_models)
        return allowed

    def may_use(self, principal: Principal, model: str) -> bool:
        plan = resolve(model, self._fleet.snapshot.catalog, self._escalation)
        return plan is not None and self.allowed(principal, plan, model) is not None


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


class ChatPipeline:
    """`POST /v1/chat/completions` in the order of the module docstring, over the parts it is given."""

    def __init__(
        self,
        *,
        auth: Authenticator,
        access: ModelAccess,
        router: Router,
        upstream: UpstreamClient,
        accounting: Accounting,
        admission: Admission,
        caches: ResponseCaches,
        cascade: Cascade,
        settlement: Settlement,
        tokens: TokenCounter,
        embedder: Embedder | None,
        domain_embedder: UpstreamEmbedder | None,
        cascade_streams: bool,
    ) -> None:
        self._auth = auth
        self._access = access
        self._router = router
        self._upstream = upstream
        self._accounting = accounting
        self._admission = admission
        self._caches = caches
        self._cascade = cascade
        self._settlement = settlement
        self._tokens = tokens
        # The local embedder (None: no feature needs one) and the domain deployment's (None: domains by the
        # local one): what a query embeds with.
        self.embedder = embedder
        self._domain_embedder = domain_embedder
        self._cascade_streams = cascade_streams  # `routing.cascade.streams`

    async def route_chat(
        self,
        principal: Principal,
        request: ChatRequest,
        headers: Mapping[str, str],
        query: ChatQuery,
        request_id: str,
    ) -> RoutePlan:
        router, health, tokens = self._router, self._upstream.health, self._tokens
        plan = await router.plan(principal, request, headers, query, tokens, health, request_id)
        if plan is not None and plan.monitor is not None:
            allowed = self._access.allowed(principal, plan, request.model)
            if allowed is None or allowed.targets[0] != plan.targets[0]:
                # The key may not use the incumbent: its requests are not monitoring samples.
                plan = await router.plan(
                    principal, request, headers, query, tokens, health, request_id, monitoring=False
                )
        return self._access.checked(principal, request.model, plan)

    async def _replay(
        self,
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
        await self._settlement.finish(record, 0)
        return Response(body, headers=headers)

    async def prompt_tokens(
        self, headers: Mapping[str, str], raw: bytes, to_chat: Callable[[bytes], bytes]
    ) -> int:
        """The prompt tokens of a request `raw` that `to_chat` turns into a chat body, counted as a call would
        count them (no upstream call, nothing admitted or booked); the caller is authenticated first."""
        await self._auth.authenticate(headers)
        request = parse_chat(to_chat(raw))
        await self._tokens.ready(request.model)
        return self._tokens.messages(request.messages, request.model, request.body.get("tools"))

    async def chat_completion(
        self, headers: Mapping[str, str], raw: bytes, record: CallRecord, door: Door | None = None
    ) -> Response | RelayResponse:
        """A chat completion; `door`: the front door whose request `raw` is, translated once the caller is known."""
        with record.phase("auth"):
            principal = await self._auth.authenticate(headers)
        record.principal = principal
        if door is not None:
            raw = await door.chat_body(principal, headers, raw)
        request = parse_chat(raw)
        record.requested_model, record.stream = request.model, request.stream
        wants, request = cache_options(headers, request)
        record.request_body = request.body
        domains = self._domain_embedder
        query = ChatQuery(
            request.messages,
            self.embedder,
            domains.bound(principal, record.request_id) if domains is not None else None,
        )
        with record.phase("route"):
            plan = await self.route_chat(principal, request, headers, query, record.request_id)
        record.route_reason, record.domain, record.query_vector = plan.reason, plan.domain, query.vector()
        record.monitor = plan.monitor
        admission = self._admission
        record.ticket = await admission.admit(principal, plan, request)
        self._accounting.admitted(record)
        caches = self._caches
        use = caches.use(principal, request, plan, wants, query)
        if use is not None and wants.lookup:
            with record.phase("cache"):
                found = await caches.lookup(use, wants, query, plan.domain)
            if found is not None:
                hit, kind, extra = found
                return await self._replay(request, hit, record, kind, extra)
        trail = Attempted()
        use_cascade = plan.verify and (not request.stream or self._cascade_streams)
        if plan.verify and not use_cascade:
            plan = replace(plan, reason=plan.reason + "; cascade off for streams", verify=False)
        guard = admission.escalation_guard(record.ticket)
        doc, body, spent = None, b"", 0
        settlement = self._settlement
        with record.phase("upstream"):
            if use_cascade:
                outcome = await settlement.ask_upstream(
                    record, trail, self._cascade.run(request, plan, trail, record, guard)
                )
                answer, doc, body, spent = outcome.answer, outcome.doc, outcome.body, outcome.spent_nano
            else:
                answer = await settlement.ask_upstream(
                    record,
                    trail,
                    self._upstream.chat(
                        plan, request, stream=request.stream, trail=trail, may_escalate=guard
                    ),
                )
        record_trail(record, trail)
        record_answer(record, answer, trail, plan)
        store = caches.writer(use, wants, query, answer)
        if request.stream and doc is None:
            return self._relay(request, answer, trail, record, store, spent)
        if doc is None:
            doc, body = orjson.loads(answer.body), answer.body
        record.answer = doc
        await settlement.settle(
            record,
            answer.deployment,
            chat_usage(doc),
            lambda: self._count_answer(request, answer.deployment, doc),
            spent,
        )
        if store is not None:
            store(doc)
        if request.stream:
            # A cascade answer, buffered until verified, now sent as the stream it would have been.
            replayed = sse_chunks(doc, include_usage=request.include_usage)
            record.ttft_s = time.perf_counter() - record.started_perf
            return Response(
                replayed, headers=answer_headers(record.request_id, answer, trail, "text/event-stream")
            )
        return Response(body, headers=answer_headers(record.request_id, answer, trail, JSON))

    def _count_answer(self, request: ChatRequest, deployment: Deployment, doc: Any) -> tuple[int, int]:
        text = ""
        for choice in doc.get("choices") or () if isinstance(doc, dict) else ():
            message = choice.get("message") or {}
            text += message.get("content") or ""
            text += orjson.dumps(message["tool_calls"]).decode() if message.get("tool_calls") else ""
        model = deployment.model
        return self._tokens.messages(request.messages, model, request.body.get("tools")), self._tokens.text(
            text, model
        )

    def _relay(
        self,
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
        tokens, settlement = self._tokens, self._settlement

        async def finish(outcome: StreamOutcome) -> None:
            record.outcome = outcome.status
            record.error = outcome.error
            record.ttft_s = outcome.ttft_s
            record.upstream_s = trail.upstream_wait_s + outcome.upstream_wait_s
            record.defer_answer(accumulator.assembled)
            model = answer.deployment.model

            def count() -> tuple[int, int]:
                completion = tokens.text(accumulator.text + accumulator.tool_arguments(), model)
                return tokens.messages(request.messages, model, request.body.get("tools")), completion

            await settlement.settle(
                record, answer.deployment, chat_usage({"usage": accumulator.usage}), count, spent
            )
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
