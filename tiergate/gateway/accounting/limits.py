"""Rate limits and budget reservations: the admit and settle steps of a request.

Two implementations share one contract (`Limiter`):
- `LocalLimiter` (no Redis, one process): RPM/TPM windows in memory; budget counters in the database, each
  reservation and settlement one SQL statement (`budget_sql.py`).
- `RedisLimiter` (several replicas): RPM/TPM and budgets together in one Lua script per admission, one per
  settlement (`limits_redis.py`).
A `Ticket` is what admission hands to settlement: what was counted and reserved, so that exactly that is
corrected and released - once, whatever path the request took.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from tiergate.gateway.accounting.keys import Limits
from tiergate.gateway.errors import InsufficientQuota, RateLimited
from tiergate.policies.budget import (
    MAX_BUDGET_NANO,
    Budget,
    period_end,
    period_start,
    seconds_until_renewal,
)
from tiergate.policies.ratelimit import bucket_of, check_window, live


@dataclass(frozen=True, slots=True)
class RateCheck:
    scope: str  # "k:<id>" | "t:<id>"
    unit: str  # "rpm" | "tpm"
    cost: int
    limit: int


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    scope: str
    period_start: int
    period_end: int | None
    limit_nano: int


@dataclass
class Ticket:
    reservation_id: str
    bucket: int  # the window second the TPM estimate was counted in
    tokens_estimate: int
    tpm_scopes: tuple[str, ...]
    budgets: tuple[BudgetCheck, ...]
    reserved_nano: int
    settled: bool = field(default=False)
    # What the reservation was sized on, to size a top-up for an escalation the same way.
    prompt_tokens: int = 0
    max_tokens: int | None = None
    n: int = 1


def rate_checks(limits: Limits, tokens: int) -> list[RateCheck]:
    out = []
    for scope, rpm, tpm in (
        (limits.key_scope, limits.key_rpm, limits.key_tpm),
        (limits.tenant_scope, limits.tenant_rpm, limits.tenant_tpm),
    ):
        if rpm is not None:
            out.append(RateCheck(scope, "rpm", 1, rpm))
        if tpm is not None:
            out.append(RateCheck(scope, "tpm", tokens, tpm))
    return out


def budget_checks(limits: Limits, now_s: float) -> list[BudgetCheck]:
    pairs: list[tuple[str, Budget | None]] = [
        (limits.key_scope, limits.key_budget),
        (limits.tenant_scope, limits.tenant_budget),
    ]
    return [
        BudgetCheck(
            scope,
            period_start(b.period, now_s),
            period_end(b.period, now_s),
            min(b.limit_nano, MAX_BUDGET_NANO),  # a row written past the admin API's bound
        )
        for scope, b in pairs
        if b is not None
    ]


def new_ticket(
    limits: Limits, now_s: float, tokens: int, reserve_nano: int, budgets: list[BudgetCheck]
) -> Ticket:
    return Ticket(
        reservation_id=uuid.uuid4().hex,
        bucket=bucket_of(now_s),
        tokens_estimate=tokens,
        tpm_scopes=tuple(
            s
            for s, t in ((limits.key_scope, limits.key_tpm), (limits.tenant_scope, limits.tenant_tpm))
            if t is not None
        ),
        budgets=tuple(budgets),
        reserved_nano=reserve_nano if budgets else 0,
    )


def rate_refusal(check_: RateCheck, retry_after_s: float) -> RateLimited:
    who = "this key" if check_.scope.startswith("k:") else "this key's tenant"
    unit = "requests" if check_.unit == "rpm" else "tokens"
    if check_.cost > check_.limit:
        message = f"the request needs {check_.cost} {unit}, more than the {check_.limit} {unit} per minute {who} may use"
    else:
        message = f"rate limit reached: {who} may use {check_.limit} {unit} per minute; retry after {retry_after_s:.1f}s"
    return RateLimited(message, retry_after_s=retry_after_s)


def budget_refusal(check_: BudgetCheck, now_s: float, reserve_nano: int) -> InsufficientQuota:
    """The 429 for a budget that cannot hold the request, saying when (and whether) retrying can help.

    `Retry-After` is the time until the period renews; a total budget never does, nor does any budget help
    a request whose largest possible cost exceeds the whole limit, so those say `x-should-retry: false`
    (the OpenAI SDKs then do not retry).
    """
    who = "this key" if check_.scope.startswith("k:") else "this key's tenant"
    reserved = "its largest possible cost is reserved before the call"
    wait_s = seconds_until_renewal(check_.period_end, now_s)
    if reserve_nano > check_.limit_nano:
        return InsufficientQuota(
            f"this request's largest possible cost (${reserve_nano / 1e9:.6f}; {reserved}) is more than "
            f"{who}'s whole budget (${check_.limit_nano / 1e9:.6f}): lower max_tokens or ask an admin for a "
            "larger budget",
            headers={"x-should-retry": "false"},
        )
    if wait_s is None:
        return InsufficientQuota(
            f"{who} has not enough of its total budget left for this request ({reserved}); a total budget "
            "never renews: lower max_tokens or ask an admin to raise the budget",
            headers={"x-should-retry": "false"},
        )
    renews = datetime.fromtimestamp(now_s + wait_s, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    return InsufficientQuota(
        f"{who} has not enough budget left for this request ({reserved}); the budget renews at {renews} "
        f"(in {wait_s} s): lower max_tokens, retry then, or ask an admin for a larger budget",
        headers={"retry-after": str(wait_s)},
    )


def refuse_unreservable(budgets: list[BudgetCheck], reserve_nano: int, now_s: float) -> None:
    """A reservation above the largest budget fits none: refused before any counter is asked (or counted)."""
    if budgets and reserve_nano > MAX_BUDGET_NANO:
        raise budget_refusal(budgets[0], now_s, reserve_nano)


def may_top_up(ticket: Ticket, amount_nano: int) -> bool:
    """Whether a top-up can fit any budget at all (the reservation it grows included)."""
    return ticket.reserved_nano + amount_nano <= MAX_BUDGET_NANO


def counted_cost(cost_nano: int) -> int:
    """The cost a budget counter adds: the actual one, bounded like everything a counter adds."""
    return min(cost_nano, MAX_BUDGET_NANO)


SeedSpend = Callable[[str, int], Awaitable[int]]
"""Spend of a scope since a period start, from the ledger: how counters are rebuilt when they are missing."""


class Limiter(Protocol):
    async def admit(self, limits: Limits, *, now_s: float, tokens: int, reserve_nano: int) -> Ticket:
        """Count the request against every limit and reserve its cost, or raise RateLimited/InsufficientQuota."""
        ...

    async def top_up(self, ticket: Ticket, amount_nano: int, now_s: float) -> bool:
        """Grow the reservation (an escalation to a pricier tier); False when the budget cannot hold it."""
        ...

    async def settle(self, ticket: Ticket, *, tokens: int, cost_nano: int) -> None:
        """Correct the token estimate and turn the reservation into the actual cost. Idempotent."""
        ...

    async def aclose(self) -> None: ...


class BudgetStore(Protocol):
    async def reserve(
        self, reservation_id: str, budgets: tuple[BudgetCheck, ...], amount_nano: int, now_s: float
    ) -> int | None:
        """Reserve on every budget or none; None when all fit, else the index of one that does not."""
        ...

    async def settle(
        self, reservation_id: str, budgets: tuple[BudgetCheck, ...], reserved_nano: int, cost_nano: int
    ) -> None: ...

    async def aclose(self) -> None: ...


def _uncount(checks: list[RateCheck], windows: list[dict[int, int]], bucket: int) -> None:
    for c, window in zip(checks, windows, strict=True):
        window[bucket] -= c.cost


class LocalLimiter:
    """One process: windows in memory (atomic: nothing awaits between check_window and count), budgets in SQL."""

    def __init__(self, budgets: BudgetStore) -> None:
        self._budgets = budgets
        self._windows: dict[tuple[str, str], dict[int, int]] = {}

    def _window(self, scope: str, unit: str, now_bucket: int) -> dict[int, int]:
        window = self._windows.get((scope, unit))
        if window is None:
            window = self._windows[(scope, unit)] = {}
        elif len(window) > 8:
            for b in [b for b in window if not live(b, now_bucket)]:
                del window[b]
        return window

    async def admit(self, limits: Limits, *, now_s: float, tokens: int, reserve_nano: int) -> Ticket:
        budgets = budget_checks(limits, now_s)
        refuse_unreservable(budgets, reserve_nano, now_s)
        now_bucket = bucket_of(now_s)
        checks = rate_checks(limits, tokens)
        windows = [self._window(c.scope, c.unit, now_bucket) for c in checks]
        for c, window in zip(checks, windows, strict=True):
            verdict = check_window(window, now_s, c.cost, c.limit)
            if not verdict.admitted:
                raise rate_refusal(c, verdict.retry_after_s)
        # Counted before the budget is asked (which may await), taken back if it refuses.
        for c, window in zip(checks, windows, strict=True):
            window[now_bucket] = window.get(now_bucket, 0) + c.cost
        ticket = new_ticket(limits, now_s, tokens, reserve_nano, budgets)
        if budgets:
            try:
                refused = await self._budgets.reserve(
                    ticket.reservation_id, ticket.budgets, reserve_nano, now_s
                )
            except BaseException:  # the budget store failed (database away): nothing stays counted
                _uncount(checks, windows, now_bucket)
                raise
            if refused is not None:
                _uncount(checks, windows, now_bucket)
                raise budget_refusal(budgets[refused], now_s, reserve_nano)
        return ticket

    async def top_up(self, ticket: Ticket, amount_nano: int, now_s: float) -> bool:
        if not ticket.budgets or amount_nano <= 0:
            return True
        if not may_top_up(ticket, amount_nano):
            return False
        if await self._budgets.reserve(ticket.reservation_id, ticket.budgets, amount_nano, now_s) is not None:
            return False
        ticket.reserved_nano += amount_nano
        return True

    async def settle(self, ticket: Ticket, *, tokens: int, cost_nano: int) -> None:
        if ticket.settled:
            return
        ticket.settled = True
        delta = tokens - ticket.tokens_estimate
        if delta:
            for scope in ticket.tpm_scopes:
                window = self._windows.get((scope, "tpm"))
                if window is not None and ticket.bucket in window:
                    window[ticket.bucket] += delta
        if ticket.budgets:
            await self._budgets.settle(
                ticket.reservation_id, ticket.budgets, ticket.reserved_nano, counted_cost(cost_nano)
            )

    async def aclose(self) -> None:
        await self._budgets.aclose()
