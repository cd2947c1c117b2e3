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
from tiergate.gateway.accounting.limits import Ticket
from tiergate.gateway.http.bodies import ChatRequest, EmbeddingsRequest
from tiergate.gateway.resources import Resources
from tiergate.policies.budget import reservation_nano
from tiergate.policies.routing import RoutePlan, Target


def ceiling_nano(res: Resources, target: Target, prompt_tokens: int, max_tokens: int | None, n: int) -> int:
    offers = [(d.price, d.max_output_tokens) for d in map(res.settings.deployment, target.deployments)]
    return reservation_nano(
        offers, prompt_tokens, max_tokens, n, res.settings.accounting.default_max_output_tokens
    )


def _embedding_tokens(res: Resources, request: EmbeddingsRequest, model: str) -> int:
    value = request.body["input"]
    items = [value] if isinstance(value, str) else value
    total = 0
    for item in items:
        if isinstance(item, str):
            total += res.tokens.text(item, model)
        elif isinstance(item, list):  # already tokens
            total += len(item)
    return total


async def admit(
    res: Resources, principal: Principal, plan: RoutePlan, request: ChatRequest | EmbeddingsRequest
) -> Ticket | None:
    """The ticket settlement will need, or None when nothing limits this caller; raises 429s."""
    limits = principal.limits
    if limits is None:
        return None
    now = time.time()
    if not limits.counts_tokens:
        return await res.limiter.admit(limits, now_s=now, tokens=0, reserve_nano=0)
    first = plan.targets[0]
    model = res.settings.deployment(first.deployments[0]).model
    await res.tokens.ready(model)
    if isinstance(request, ChatRequest):
        prompt = res.tokens.messages(request.messages, model, request.body.get("tools"))
        max_tokens, n = request.max_tokens, request.n
        # TPM counts what the request may use; the estimate is corrected to the real usage at settlement.
        estimate = prompt + (max_tokens * n if max_tokens is not None else 0)
    else:
        prompt, max_tokens, n = _embedding_tokens(res, request, model), 0, 1
        estimate = prompt
    reserve = ceiling_nano(res, first, prompt, max_tokens, n)
    ticket = await res.limiter.admit(limits, now_s=now, tokens=estimate, reserve_nano=reserve)
    ticket.prompt_tokens, ticket.max_tokens, ticket.n = prompt, max_tokens, n
    return ticket


Guard = Callable[[Target, int], Awaitable[bool]]
"""`guard(target, spent_nano)`: may the call move on to `target`, having already used `spent_nano`?"""


def escalation_guard(res: Resources, ticket: Ticket | None) -> Guard | None:
    """Before an escalation: top the reservation up so it holds what was already spent (discarded cascade
    answers) plus the next tier's ceiling, or refuse to escalate."""
    if ticket is None or not ticket.budgets:
        return None

    async def may_escalate(target: Target, spent_nano: int = 0) -> bool:
        needed = spent_nano + ceiling_nano(res, target, ticket.prompt_tokens, ticket.max_tokens, ticket.n)
        return await res.limiter.top_up(ticket, needed - ticket.reserved_nano, time.time())

    return may_escalate
