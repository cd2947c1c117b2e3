"""Shadow evaluation: after a request is answered, the same request goes to a cheaper candidate, in the
background, and the two answers are compared.

    sink (request path: a seeded draw per request and candidate, then one put on a bounded queue; a
          monitoring sample, drawn by routing, is queued with its promoted tier as the candidate)
      -> worker: within the evaluation caps (dollars, share of serving)? -> candidate call -> cheap agreement
         check (normalised final answers; answer embeddings when the embedder is loaded) -> on disagreement,
         caps permitting, the judge tier pairwise, both orders -> one `evaluations` row; every call booked as
         evaluation spend

Nothing here runs before the client has its answer: the sink only queues, and the workers share nothing
with the response. A full queue drops the sample (counted); a failed candidate or judge call is recorded as
such (the row says which), never retried. On shutdown the queued evaluations get `drain_timeout_s` to finish.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from tiergate.gateway.accounting.records import CallRecord
from tiergate.gateway.config.learning import ShadowPolicy, ShadowSettings
from tiergate.gateway.db.learning import Evaluation
from tiergate.gateway.errors import GatewayError
from tiergate.gateway.http.bodies import ChatRequest
from tiergate.gateway.learning.evaluation_calls import EvaluationCalls, Reply, answer_text, shadow_request
from tiergate.gateway.learning.trace_writer import apply_policy, content_policy, first_choice
from tiergate.gateway.routing.local_embeddings import Embedder
from tiergate.gateway.routing.router import Router
from tiergate.gateway.upstream.fleet import Fleet, FleetSnapshot
from tiergate.gateway.upstream.transport import TransportError
from tiergate.policies.agreement import agreement
from tiergate.policies.judge import JUDGE_VERSION, combine, pairwise_judge_messages, parse_winner
from tiergate.policies.shadow import Candidate, candidates, sampled
from tiergate.policies.tiers import TIERS, tier_rank

log = logging.getLogger("tiergate.shadow")
_TABLE = Evaluation.__table__  # type: ignore[attr-defined]
JUDGE_MAX_TOKENS = 300
JUDGE_ESTIMATE = 4.0  # the judge's two calls over the served answer's cost, before any is seen
OUTCOMES = ("agreed", "judged", "no_verdict", "candidate_failed", "judge_failed", "no_judge", "over_budget")


@dataclass(frozen=True, slots=True)
class Job:
    record: CallRecord
    candidate: Candidate
    policy: ShadowPolicy


@dataclass
class ShadowStats:
    sampled: int = 0
    overflowed: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    failed: int = 0  # evaluations that raised unexpectedly or whose row could not be written


def _describe(exc: BaseException) -> str:
    """An error for the logs: gateway errors say what failed; others only their class (their text may quote
    content, e.g. a JSON decoder's)."""
    return exc.message if isinstance(exc, GatewayError) else exc.__class__.__name__


class ShadowEvaluator:
    """Samples answered calls (`sink`) and evaluates them in the background.

    `calls` makes and books the evaluation calls; `fleet` says which tiers and registered candidates exist;
    `router` holds the route table whose shares drive exploration; `embedder` (None: not loaded) lets the
    agreement check compare answer embeddings.
    """

    name = "shadow"  # as metrics.QueueStats

    def __init__(
        self,
        settings: ShadowSettings,
        engine: AsyncEngine,
        calls: EvaluationCalls,
        *,
        fleet: Fleet,
        router: Router,
        embedder: Embedder | None,
        default_content: str,
        count: Callable[[str], None] = lambda outcome: None,
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._calls = calls
        self.budget = calls.budget
        self._fleet = fleet
        self._router = router
        self._embedder = embedder
        self._default_content = default_content
        self._count = count
        self._queue: asyncio.Queue[Job] = asyncio.Queue(settings.queue_size)
        self.stats = ShadowStats()
        self._workers: list[asyncio.Task[None]] = []
        self._cached: dict[tuple[str, str, bool], tuple[Candidate, ...]] = {}
        self._cached_for: FleetSnapshot | None = None
        # An evaluation call's cost over the served answer's, until calls are seen: a cheaper tier answering
        # the same request costs less; the judge is two calls, each reading the request and both answers.
        self._ratios = {"candidate": 1.0, "judge": JUDGE_ESTIMATE}

    def depth(self) -> int:
        return self._queue.qsize()

    def dropped(self) -> int:
        return self.stats.overflowed

    def sink(self, record: CallRecord) -> None:
        """Every answered call: count its cost (the share cap grows with it), sample it per candidate, queue the
        samples. A few µs when sampled, less when not."""
        policy = self._settings.policy_for(record.principal.tenant_id)
        if not policy.active:
            return
        if record.cost_nano:  # every call of a tenant that evaluates, whatever its kind
            self.budget.served(record.principal.tenant_id, record.cost_nano)
        if (
            record.endpoint == "embeddings"  # every other door is a chat call in chat form
            or record.outcome != "ok"
            or record.cache != "miss"
            or record.tier is None
            or not record.request_body
        ):
            return
        if record.monitor is not None:
            # The incumbent served a promoted domain's request: the comparison routing drew it for, and no other
            # (escalated past the incumbent, it would not be the step promotion watches).
            if policy.follows_table and tier_rank(record.tier) > tier_rank(record.monitor):
                self._put(Job(record, Candidate(record.monitor), policy))
            return
        explore = None
        if record.domain is not None and policy.route_table:
            entry = self._router.snapshot.table.sampling.get(record.domain)
            explore = entry.share if entry is not None and entry.incumbent is None else None
        for candidate in self._candidates(record.tier, policy):
            fraction = policy.fraction_for(record.domain, candidate.tier, explore)
            if sampled(self._settings.seed, record.request_id, candidate, fraction):
                self._put(Job(record, candidate, policy))

    def _put(self, job: Job) -> None:
        try:
            self._queue.put_nowait(job)
            self.stats.sampled += 1
        except asyncio.QueueFull:
            self.stats.overflowed += 1

    def monitors(self, tenant_id: str | None) -> bool:
        """Whether routing may draw a monitoring sample for the tenant: it follows the route table and, as far
        as this replica knows without a round trip, has evaluation budget left today (`evaluate` checks again)."""
        policy = self._settings.policy_for(tenant_id)
        return policy.follows_table and self.budget.known_below(
            tenant_id, policy.daily_budget_nano, policy.evaluation_share
        )

    def _candidates(self, served: str, policy: ShadowPolicy) -> tuple[Candidate, ...]:
        """`policies.shadow.candidates`, remembered until the fleet (its tiers, its registered models) changes."""
        fleet = self._fleet.snapshot
        if fleet is not self._cached_for:
            self._cached, self._cached_for = {}, fleet
        key = (served, policy.candidate, policy.registered)
        found = self._cached.get(key)
        if found is None:
            found = self._cached[key] = candidates(
                served,
                fleet.catalog.configured_tiers,
                fleet.candidate_tiers,
                policy.candidate,
                policy.registered,
            )
        return found

    def start(self) -> None:
        self._workers = [asyncio.ensure_future(self._work()) for _ in range(self._settings.concurrency)]

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                await self.evaluate(job)
            except Exception:  # one evaluation's failure must not end the worker
                self.stats.failed += 1
                log.exception("shadow evaluation of request %s failed", job.record.request_id)
            finally:
                self._queue.task_done()

    async def drain(self) -> None:
        """Wait until every queued evaluation is done."""
        await self._queue.join()

    async def aclose(self, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(self.drain(), timeout_s)
        except TimeoutError:
            log.warning("shadow: %d evaluations still queued at shutdown were dropped", self._queue.qsize())
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    def _done(self, outcome: str) -> None:
        self.stats.outcomes[outcome] += 1
        self._count(outcome)

    # --- one evaluation --------------------------------------------------------------------------------

    async def evaluate(self, job: Job) -> None:
        record, candidate, policy = job.record, job.candidate, job.policy
        tenant = record.principal.tenant_id
        upcoming = self._estimate(record, "candidate")
        if not await self.budget.reserve(tenant, policy.daily_budget_nano, policy.evaluation_share, upcoming):
            self._done("over_budget")
            return
        assert record.request_body is not None and record.tier is not None
        request = shadow_request(record.request_body)
        row = self._row(record, candidate)
        try:
            reply = await self._calls.call(record, candidate, request, self._calls.candidate(candidate))
            self._learn(record, "candidate", reply.cost_nano)
        except (GatewayError, TransportError, orjson.JSONDecodeError) as exc:
            log.info(
                "shadow candidate %s failed for %s: %s", candidate.key, record.request_id, _describe(exc)
            )
            self._done("candidate_failed")
            await self._insert({**row, "status": "candidate_failed"})
            return
        finally:
            self.budget.release(tenant, upcoming)
        served, _ = first_choice(record.answer)
        offered, _ = first_choice(reply.doc)
        policy_name = row["content"]
        row |= {
            "candidate_deployment_id": reply.deployment.id,
            "candidate_model": reply.deployment.model,
            "candidate_answer": apply_policy(offered, policy_name),
            "candidate_cost_nano": reply.cost_nano,
        }
        served_text, offered_text = answer_text(served), answer_text(offered)
        check = agreement(served_text, offered_text, await self._similarity(served_text, offered_text))
        row |= {"agreement": check.kind, "agreed": check.agree}
        if check.agree:
            self._done("agreed")
            await self._insert({**row, "status": "ok", "verdict": "as_good", "score": 0.5})
            return
        judge_tier = self._judge_tier(policy)
        if judge_tier is None:
            self._done("no_judge")
            await self._insert({**row, "status": "no_judge"})
            return
        upcoming = self._estimate(record, "judge")
        if not await self.budget.reserve(tenant, policy.daily_budget_nano, policy.evaluation_share, upcoming):
            self._done("over_budget")
            await self._insert({**row, "status": "over_budget"})
            return
        try:
            await self._judge(record, judge_tier, served_text, offered_text, row)
        finally:
            self.budget.release(tenant, upcoming)

    def _estimate(self, record: CallRecord, kind: str) -> int:
        """What an evaluation call of `kind` will cost, for the share cap to hold before it is made: the served
        answer's cost times the largest recent ratio of such a call's cost to it (`_learn`)."""
        return int(record.cost_nano * self._ratios[kind]) + 1

    def _learn(self, record: CallRecord, kind: str, cost_nano: int) -> None:
        """Rises at once to a dearer call's ratio, comes down halfway towards a cheaper one's."""
        if record.cost_nano > 0:
            seen = cost_nano / record.cost_nano
            self._ratios[kind] = max(seen, (self._ratios[kind] + seen) / 2)

    def _row(self, record: CallRecord, candidate: Candidate) -> dict[str, Any]:
        return {
            "id": uuid.uuid4().hex,
            "request_id": record.request_id,
            "tenant_id": record.principal.tenant_id,
            "key_id": record.principal.key_id,
            "ts_ms": int(time.time() * 1000),
            "domain": record.domain[:200] if record.domain else None,
            "served_tier": record.tier,
            "served_deployment_id": record.deployment_id,
            "served_model": record.model,
            "candidate_tier": candidate.tier,
            "candidate_deployment_id": candidate.deployment_id,
            "candidate_model": None,
            "registered": candidate.deployment_id is not None,
            "status": "ok",
            "agreement": None,
            "agreed": None,
            "verdict": None,
            "score": None,
            "rationale": None,
            "judge_version": None,
            "judge_model": None,
            "content": content_policy(record, self._default_content),
            "candidate_answer": None,
            "candidate_cost_nano": 0,
            "judge_cost_nano": 0,
        }

    async def _judge(
        self, record: CallRecord, tier: str, served: str, offered: str, row: dict[str, Any]
    ) -> None:
        assert record.request_body is not None
        conversation = record.request_body["messages"]
        # The candidate is answer A in the first call and answer B in the second: position bias cancels.
        orders = (
            pairwise_judge_messages(conversation, offered, served),
            pairwise_judge_messages(conversation, served, offered),
        )
        send = self._calls.tier(tier)
        calls = [
            self._calls.call(record, Candidate(tier), self._judge_request(tier, messages), send)
            for messages in orders
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
        replies = [r for r in results if isinstance(r, Reply)]
        row |= {
            "judge_version": JUDGE_VERSION,
            "judge_model": replies[0].deployment.model if replies else None,
            "judge_cost_nano": sum(r.cost_nano for r in replies),
        }
        if len(replies) == len(calls):
            self._learn(record, "judge", row["judge_cost_nano"])
        failures = [r for r in results if not isinstance(r, Reply)]
        if failures:
            for failure in failures:
                if not isinstance(failure, GatewayError | TransportError | orjson.JSONDecodeError):
                    raise failure
            log.info("shadow judge failed for %s: %s", record.request_id, _describe(failures[0]))
            self._done("judge_failed")
            await self._insert({**row, "status": "judge_failed"})
            return
        first, second = (parse_winner(answer_text(first_choice(r.doc)[0])) for r in replies)
        if first is None or second is None:
            self._done("no_verdict")
            await self._insert({**row, "status": "no_verdict"})
            return
        reasons = [reason for _, reason in (first, second) if reason]
        verdict = combine(first[0], second[0], " / ".join(dict.fromkeys(reasons)))
        self._done("judged")
        await self._insert(
            {
                **row,
                "status": "ok",
                "verdict": verdict.verdict,
                "score": verdict.score,
                "rationale": apply_policy(verdict.rationale or None, row["content"]),
            }
        )

    def _judge_tier(self, policy: ShadowPolicy) -> str | None:
        tiers = self._fleet.snapshot.catalog.tiers
        if tiers.get(policy.judge_tier):
            return policy.judge_tier
        configured = [t for t in TIERS if tiers.get(t)]
        return configured[-1] if configured else None

    @staticmethod
    def _judge_request(tier: str, messages: list[dict[str, str]]) -> ChatRequest:
        body = {"model": tier, "messages": messages, "temperature": 0, "max_tokens": JUDGE_MAX_TOKENS}
        return ChatRequest(orjson.dumps(body), body, tier, messages, False, False, JUDGE_MAX_TOKENS, 1)

    async def _similarity(self, a: str, b: str) -> float | None:
        embedder = self._embedder
        if embedder is None or not a or not b:
            return None
        vectors = await embedder.aembed([a, b])
        return float(np.dot(vectors[0], vectors[1]))

    async def _insert(self, row: dict[str, Any]) -> None:
        try:
            async with self._engine.begin() as conn:
                await conn.execute(insert(_TABLE), [row])
        except Exception as exc:  # counted and logged; the spend is in the ledger already
            self.stats.failed += 1
            log.error("evaluation of request %s could not be stored: %s", row["request_id"], _describe(exc))
