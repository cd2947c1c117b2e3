"""The learning loop's own upstream calls (shadow candidates, the judge): sent, priced and booked.

Each call is booked in the ledger as evaluation spend (`kind="evaluation"`) and counted against the
tenant's daily evaluation budget; it never touches the client's request or its record.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from tiergate.gateway.accounting.records import CallRecord, Sink
from tiergate.gateway.config.settings import Deployment
from tiergate.gateway.errors import UpstreamFailed
from tiergate.gateway.http.bodies import ChatRequest
from tiergate.gateway.learning.evaluation_budget import EvaluationBudget
from tiergate.gateway.learning.trace_writer import first_choice
from tiergate.gateway.upstream.client import Attempted, UpstreamClient
from tiergate.gateway.upstream.fleet import Fleet
from tiergate.gateway.upstream.tokens import TokenCounter
from tiergate.policies.messages import content_text
from tiergate.policies.pricing import cost_nano
from tiergate.policies.routing import RoutePlan, Target
from tiergate.policies.shadow import Candidate
from tiergate.policies.usage import chat_usage

Send = Callable[[ChatRequest], Awaitable[tuple[Deployment, bytes]]]
"""Sends one evaluation request; returns the deployment that answered and its body."""


@dataclass(frozen=True, slots=True)
class Reply:
    """One evaluation call's answer and what it cost."""

    deployment: Deployment
    doc: dict[str, Any]
    cost_nano: int


def answer_text(message: dict[str, Any] | None) -> str:
    """What an answer says, as text: its content, then its tool calls (their names and arguments)."""
    if not message:
        return ""
    text = content_text(message.get("content"))
    if message.get("tool_calls"):
        text += ("\n" if text else "") + orjson.dumps(message["tool_calls"]).decode()
    return text


def shadow_request(body: dict[str, Any]) -> ChatRequest:
    """The client's request as a candidate or judge receives it: the same body, never streamed."""
    body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    n = body.get("n")
    return ChatRequest(
        orjson.dumps(body), body, str(body.get("model", "")), body["messages"], False, False,
        max_tokens if isinstance(max_tokens, int) else None, n if isinstance(n, int) else 1,
    )  # fmt: skip


class EvaluationCalls:
    """Sends for a candidate (a tier, or a registered model called directly) or the judge tier, and `call`.

    `ledger` books each call as evaluation spend; `budget` counts it against the tenant's daily cap.
    """

    def __init__(
        self,
        upstream: UpstreamClient,
        fleet: Fleet,
        tokens: TokenCounter,
        ledger: Sink,
        budget: EvaluationBudget,
    ) -> None:
        self._upstream = upstream
        self._fleet = fleet
        self._tokens = tokens
        self._ledger = ledger
        self.budget = budget

    def candidate(self, candidate: Candidate) -> Send:
        if candidate.deployment_id is None:
            return self.tier(candidate.tier)
        deployment = self._fleet.snapshot.candidates.get(candidate.deployment_id)

        async def send(request: ChatRequest) -> tuple[Deployment, bytes]:
            if deployment is None:
                raise UpstreamFailed(f"the registered model {candidate.deployment_id} was removed")
            return deployment, await self._upstream.chat_once(deployment, request)

        return send

    def tier(self, tier: str) -> Send:
        async def send(request: ChatRequest) -> tuple[Deployment, bytes]:
            ids = self._fleet.snapshot.catalog.tiers.get(tier)
            if not ids:
                raise UpstreamFailed(f"no deployment serves the tier {tier}")
            answer = await self._upstream.chat(
                RoutePlan((Target(tier, ids),), "shadow evaluation"),
                request,
                stream=False,
                trail=Attempted(),
                want_usage_chunk=False,
            )
            return answer.deployment, answer.body

        return send

    async def call(self, record: CallRecord, candidate: Candidate, request: ChatRequest, send: Send) -> Reply:
        """One evaluation call, booked in the ledger as evaluation spend and counted against the daily cap."""
        started = time.perf_counter()
        deployment, body = await send(request)
        doc = orjson.loads(body)
        if not isinstance(doc, dict):
            raise orjson.JSONDecodeError("the answer is not a JSON object", body.decode(errors="replace"), 0)
        usage = chat_usage(doc)
        if usage is None:
            model = deployment.model
            await self._tokens.ready(model)  # no usage: count locally, the encoding loaded off the loop
            prompt = self._tokens.messages(request.messages, model, request.body.get("tools"))
            completion = self._tokens.text(answer_text(first_choice(doc)[0]), model)
        else:
            prompt, completion = usage
        cost = cost_nano(deployment.price, prompt, completion)
        booked = CallRecord(
            request_id=record.request_id, endpoint="chat", principal=record.principal,
            requested_model=candidate.tier, started_at=time.time(), kind="evaluation", tier=candidate.tier,
            deployment_id=deployment.id, model=deployment.model, prompt_tokens=prompt,
            completion_tokens=completion, cost_nano=cost, latency_s=time.perf_counter() - started,
        )  # fmt: skip
        self._ledger(booked)
        self.budget.add(record.principal.tenant_id, cost)
        return Reply(deployment, doc, cost)
