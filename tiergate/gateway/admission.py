"""The admit step: count a request against its key's and tenant's limits and reserve its largest cost.

The reservation is priced on the first target of the route plan (the most expensive of its deployments,
since fallback may move the call to any of them). An escalation to a pricier tier first tops the
reservation up to that tier's ceiling plus whatever the call already spent (a cascade's discarded answers);
if the budget cannot hold it, the request does not escalate and ends with the failure (or, in a cascade,
the unverified answer) it had. So an admitted request never costs more than it holds reserved (given the
upstream honours the output limit), which is what bounds a budget's overspend.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from tiergate.gateway.accounting.auth import Principal
from tiergate.gateway.accounting.limits import Limiter, Ticket
from tiergate.gateway.http.bodies import (
    UNKNOWN_OUTPUT_LIMIT,
    ChatRequest,
    EmbeddingsRequest,
    check_output_limit,
    embedding_inputs,
)
from tiergate.gateway.upstream.fleet import Fleet
from tiergate.gateway.upstream.tokens import TokenCounter, tokenizer_known
from tiergate.policies.budget import KNOWN_TOKENIZER_MARGIN, reservation_nano
from tiergate.policies.routing import RoutePlan, Target

Guard = Callable[[Target, int], Awaitable[bool]]
"""`guard(target, spent_nano)`: may the call move on to `target`, having already used `spent_nano`?"""


def embedding_tokens(tokens: TokenCounter, request: EmbeddingsRequest, model: str) -> int:
    """The prompt tokens of an embeddings request: its texts counted, its token arrays as they are."""
    return sum(
        len(item) if isinstance(item, list) else tokens.text(item, model)
        for item in embedding_inputs(request.body["input"])
    )


class Admission:
    """Counts requests against the limits and reserves their ceiling, over the deployments of the fleet."""

    def __init__(
        self,
        limiter: Limiter,
        tokens: TokenCounter,
        fleet: Fleet,
        *,
        default_max_output_tokens: int,
        prompt_token_margin: float,
    ) -> None:
        self._limiter = limiter
        self._tokens = tokens
        self._fleet = fleet
        self._default_max_output_tokens = default_max_output_tokens
        self._prompt_token_margin = prompt_token_margin

    def ceiling_nano(self, target: Target, prompt_tokens: int, max_tokens: int | None, n: int) -> int:
        by_id = self._fleet.snapshot.by_id
        offers = [
            (d.price, d.max_output_tokens, self._margin(d.model))
            for d in (by_id[i] for i in target.deployments)
        ]
        return reservation_nano(offers, prompt_tokens, max_tokens, n, self._default_max_output_tokens)

    def _margin(self, model: str) -> float:
        return KNOWN_TOKENIZER_MARGIN if tokenizer_known(model) else self._prompt_token_margin

    def output_limit(self, plan: RoutePlan) -> int:
        """The most completion tokens any deployment of the plan can produce (the config's or the price map's
        limit, filled in at start-up; UNKNOWN_OUTPUT_LIMIT where neither says)."""
        by_id = self._fleet.snapshot.by_id
        return max(
            (by_id[i].max_output_tokens or UNKNOWN_OUTPUT_LIMIT for t in plan.targets for i in t.deployments),
            default=UNKNOWN_OUTPUT_LIMIT,
        )

    async def admit(
        self, principal: Principal, plan: RoutePlan, request: ChatRequest | EmbeddingsRequest
    ) -> Ticket | None:
        """The ticket settlement will need, or None when nothing limits this caller; raises 429s, and a 400
        for a `max_tokens` that no deployment the request can reach could produce (whoever the caller)."""
        if isinstance(request, ChatRequest) and request.max_tokens is not None:
            check_output_limit(request, self.output_limit(plan), request.model)
        limits = principal.limits
        if limits is None:
            return None
        now = time.time()
        if not limits.counts_tokens:
            return await self._limiter.admit(limits, now_s=now, tokens=0, reserve_nano=0)
        first = plan.targets[0]
        model = self._fleet.snapshot.by_id[first.deployments[0]].model
        tokens = self._tokens
        await tokens.ready(model)
        if isinstance(request, ChatRequest):
            prompt = tokens.messages(request.messages, model, request.body.get("tools"))
            max_tokens, n = request.max_tokens, request.n
            # TPM counts what the request may use; the estimate is corrected to the real usage at settlement.
            estimate = prompt + (max_tokens * n if max_tokens is not None else 0)
        else:
            prompt, max_tokens, n = embedding_tokens(tokens, request, model), 0, 1
            estimate = prompt
        reserve = self.ceiling_nano(first, prompt, max_tokens, n)
        ticket = await self._limiter.admit(limits, now_s=now, tokens=estimate, reserve_nano=reserve)
        ticket.prompt_tokens, ticket.max_tokens, ticket.n = prompt, max_tokens, n
        return ticket

    def escalation_guard(self, ticket: Ticket | None) -> Guard | None:
        """Before an escalation: top the reservation up so it holds what was already spent (discarded cascade
        answers) plus the next tier's ceiling, or refuse to escalate."""
        if ticket is None or not ticket.budgets:
            return None

        async def may_escalate(target: Target, spent_nano: int = 0) -> bool:
            needed = spent_nano + self.ceiling_nano(target, ticket.prompt_tokens, ticket.max_tokens, ticket.n)
            return await self._limiter.top_up(ticket, needed - ticket.reserved_nano, time.time())

        return may_escalate
