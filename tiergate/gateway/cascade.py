"""The quality cascade: the cheapest candidate answers, a verifier reads the answer, a weak one escalates.

A candidate's answer is always fetched whole (never streamed) because it may be discarded: for a streamed
request that means the client's first byte waits for the candidate's whole answer to be generated and
verified (the TTFT cost of the cascade; `routing.cascade.streams: false` turns it off for streams). The last
candidate has nothing to escalate to, so a streamed request gets its answer streamed live. The logprob
verifier needs token log-probabilities: they are asked for when the client did not, and removed again
before the answer leaves. Discarded answers and judge calls are paid for: their cost is returned so that
the call is billed for everything it used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import orjson

from tiergate.gateway.accounting.records import CallRecord
from tiergate.gateway.admission import Guard
from tiergate.gateway.config.routing import CascadeSettings
from tiergate.gateway.errors import GatewayError
from tiergate.gateway.http.bodies import ChatRequest, with_fields
from tiergate.gateway.upstream.client import Answer, Attempted, UpstreamClient
from tiergate.gateway.upstream.fleet import Fleet
from tiergate.gateway.upstream.tokens import TokenCounter
from tiergate.policies.pricing import cost_nano
from tiergate.policies.routing import RoutePlan, Target
from tiergate.policies.usage import chat_usage
from tiergate.policies.verifiers import (
    Expected,
    VerifierVerdict,
    judge_sampled,
    judge_verdict,
    pass_fail_judge_messages,
    strip_logprobs,
    verify_answer,
)

log = logging.getLogger("tiergate.cascade")


@dataclass
class Cascaded:
    answer: Answer
    doc: dict[str, Any] | None  # the answer to return; None: the last candidate's live stream
    body: bytes = b""  # `doc` serialised: the upstream's own bytes unless logprobs were removed
    spent_nano: int = 0  # what discarded answers and judge calls cost


def candidate_request(request: ChatRequest, logprobs: bool) -> ChatRequest:
    """The request as a verified candidate receives it: not streamed, with logprobs when needed."""
    if not request.stream and not logprobs:
        return request
    if not request.stream:
        body = {**request.body, "logprobs": True}
        return replace(request, raw=with_fields(request.raw, request.body, {"logprobs": True}), body=body)
    # stream_options must go with stream (OpenAI rejects it otherwise): re-serialise this derived body.
    body = {k: v for k, v in request.body.items() if k not in ("stream", "stream_options")}
    if logprobs:
        body["logprobs"] = True
    return replace(request, raw=orjson.dumps(body), body=body, stream=False, include_usage=False)


class Cascade:
    """Runs a verified plan: candidates in order until one's answer passes (`run`)."""

    def __init__(
        self, settings: CascadeSettings, fleet: Fleet, upstream: UpstreamClient, tokens: TokenCounter
    ) -> None:
        self._settings = settings
        self._fleet = fleet
        self._upstream = upstream
        self._tokens = tokens

    async def _cost(self, request: ChatRequest, answer: Answer, doc: Any) -> int:
        usage = chat_usage(doc)
        if usage is not None:
            return cost_nano(answer.deployment.price, *usage)
        model = answer.deployment.model
        await self._tokens.ready(model)
        text = "".join(
            (c.get("message") or {}).get("content") or ""
            for c in doc.get("choices") or ()
            if isinstance(c, dict)
        )
        prompt = self._tokens.messages(request.messages, model, request.body.get("tools"))
        return cost_nano(answer.deployment.price, prompt, self._tokens.text(text, model))

    async def _judge(self, request: ChatRequest, doc: dict[str, Any]) -> tuple[VerifierVerdict | None, int]:
        """The judge tier's verdict on a sampled answer (None: no objection) and what asking it cost."""
        tier = self._settings.judge.tier
        ids = self._fleet.snapshot.catalog.tiers.get(tier or "")
        if tier is None or not ids:
            return None, 0
        messages = pass_fail_judge_messages(request.messages, doc)
        body = {"model": tier, "messages": messages, "temperature": 0, "max_tokens": 5}
        judge = ChatRequest(orjson.dumps(body), body, tier, messages, False, False, 5, 1)
        try:
            answer = await self._upstream.chat(
                RoutePlan((Target(tier, ids),), "judge"), judge, stream=False, trail=Attempted()
            )
            reply = orjson.loads(answer.body)
            text = reply["choices"][0]["message"].get("content") or ""
        except (GatewayError, orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
            log.warning("judge call failed, the answer stands: %s", exc)
            return None, 0
        spent = await self._cost(judge, answer, reply)
        if judge_verdict(text) is False:
            return VerifierVerdict(False, "judge", f"{tier} judged the answer FAIL"), spent
        return None, spent

    async def run(
        self,
        request: ChatRequest,
        plan: RoutePlan,
        trail: Attempted,
        record: CallRecord,
        guard: Guard | None = None,
    ) -> Cascaded:
        """The first answer that passes verification (or the last candidate's), and what the others cost.

        `guard` is the budget's say on each escalation; when it refuses, the unverified answer is returned
        rather than none.
        """
        config = self._settings
        expected = Expected.of(request.body)
        add_logprobs = config.verifiers.wants_logprobs and not request.body.get("logprobs")
        candidate = candidate_request(request, add_logprobs)
        remaining, spent = plan, 0
        while True:
            last = len(remaining.targets) == 1
            if last and request.stream:
                answer = await self._upstream.chat(
                    remaining, request, stream=True, trail=trail, may_escalate=guard
                )
                return Cascaded(answer, None, b"", spent)
            # The last candidate is not verified: it gets the client's request exactly.
            sent = request if last else candidate
            answer = await self._upstream.chat(remaining, sent, stream=False, trail=trail, may_escalate=guard)
            doc = orjson.loads(answer.body)
            position = next(i for i, t in enumerate(remaining.targets) if t.tier == answer.tier)
            rest = remaining.targets[position + 1 :]
            if rest:
                verdict = verify_answer(doc, expected, config.verifiers)
                if verdict.ok and judge_sampled(config.judge.seed, record.request_id, config.judge.fraction):
                    objection, judged = await self._judge(request, doc)
                    spent += judged
                    verdict = objection or verdict
                if not verdict.ok:
                    cost = await self._cost(sent, answer, doc)
                    if guard is None or await guard(rest[0], spent + cost):
                        spent += cost
                        trail.escalations.append(f"{answer.tier}->{rest[0].tier}: {verdict.describe()}")
                        remaining = replace(remaining, targets=rest)
                        continue
                    trail.failures.append(f"escalation to {rest[0].tier} refused: the budget cannot hold it")
            if add_logprobs and sent is candidate:
                doc = strip_logprobs(doc)
                return Cascaded(answer, doc, orjson.dumps(doc), spent)
            return Cascaded(answer, doc, answer.body, spent)
