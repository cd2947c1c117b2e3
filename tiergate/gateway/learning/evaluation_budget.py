"""The two caps on a tenant's evaluation spend (shadow and judge calls), and how that spend is booked.

Evaluation calls are booked in the ledger as `kind = evaluation` rows: the cost report shows them in their
own column, and they never touch the tenant's request budget (budget counters and their ledger seeds count
`kind = request` only) - a shadow call must not turn a client's next request into a 429. They are capped
instead, per tenant per UTC day, twice:

- in dollars, `learning.shadow.daily_budget_usd`;
- as a share of what the tenant's own requests cost that day, `learning.shadow.evaluation_share` (5% by
  default, the share `tiergate replay` caps at: `policies.exploration.EVALUATION_SHARE`), so the learning loop
  can never cost a tenant more than that share of its bill, whatever its traffic.

Both are checked before each shadow call and before the judge is asked (`reserve`). The share cap counts
the call about to be made at an estimate (`upcoming`) and holds it until the call is booked, so this
replica's evaluations in flight are inside the cap, not beside it. This replica's spend (serving and
evaluation) is counted as it happens; the other replicas' through the ledger, re-read at most every
`refresh_s`. So the caps can be exceeded by what an estimate fell short of the call's cost, by the dollar
cap's evaluations in flight when it is reached (at most `concurrency` per replica, each one candidate call
and two judge calls), and by what the other replicas spent since the last re-read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tiergate.gateway.db.models import LedgerEntry
from tiergate.policies.exploration import evaluation_allowed

_LEDGER = LedgerEntry.__table__.c  # type: ignore[attr-defined]
DAY_S = 86_400

Key = tuple[str | None, str]  # (tenant, UTC day)


def utc_day(ts_s: float) -> str:
    return datetime.fromtimestamp(ts_s, tz=UTC).strftime("%Y-%m-%d")


async def spend_by_kind(engine: AsyncEngine, tenant_id: str | None, day: str) -> dict[str, int]:
    """What the ledger holds of a tenant's serving (`request`) and `evaluation` spend on a UTC day (nano-USD)."""
    tenant = _LEDGER.tenant_id.is_(None) if tenant_id is None else _LEDGER.tenant_id == tenant_id
    query = (
        select(_LEDGER.kind, func.coalesce(func.sum(_LEDGER.cost_nano), 0))
        .where(_LEDGER.kind.in_(("request", "evaluation")), _LEDGER.day == day, tenant)
        .group_by(_LEDGER.kind)
    )
    async with engine.connect() as conn:
        return {kind: int(total) for kind, total in (await conn.execute(query)).all()}


class EvaluationBudget:
    def __init__(
        self, engine: AsyncEngine, *, refresh_s: float = 5.0, clock: Callable[[], float] = time.time
    ) -> None:
        self._engine = engine
        self._refresh_s = refresh_s
        self._clock = clock
        self._spent: dict[Key, int] = {}  # evaluation spend
        self._served: dict[Key, int] = {}  # serving spend
        self._held: dict[Key, int] = {}  # estimates of this replica's evaluation calls in flight
        self._read_at: dict[Key, float] = {}
        self._day, self._day_ends = "", float("-inf")

    def _key(self, tenant_id: str | None) -> Key:
        now = self._clock()
        if now >= self._day_ends:  # the date is formatted once a day, not per request
            self._day = utc_day(now)
            self._day_ends = (now // DAY_S + 1) * DAY_S
        return (tenant_id, self._day)

    async def _refresh(self, key: Key) -> None:
        now = self._clock()
        if now - self._read_at.get(key, float("-inf")) < self._refresh_s:
            return
        self._read_at[key] = now
        ledger = await spend_by_kind(self._engine, *key)
        # The ledger lags this replica's own spend by a flush; it leads by the other replicas' spend.
        self._spent[key] = max(self._spent.get(key, 0), ledger.get("evaluation", 0))
        self._served[key] = max(self._served.get(key, 0), ledger.get("request", 0))
        kept = (self._spent, self._served, self._held, self._read_at)
        for old in {k for counts in kept for k in counts if k[1] != key[1]}:
            for counts in kept:
                counts.pop(old, None)

    async def spent(self, tenant_id: str | None) -> int:
        key = self._key(tenant_id)
        await self._refresh(key)
        return self._spent.get(key, 0)

    def _fits(self, key: Key, cap_nano: int, share: float, upcoming: int) -> bool:
        spent = self._spent.get(key, 0)
        held = spent + self._held.get(key, 0)
        return spent < cap_nano and evaluation_allowed(held, upcoming, self._served.get(key, 0), share)

    async def reserve(self, tenant_id: str | None, cap_nano: int, share: float, upcoming: int) -> bool:
        """Whether an evaluation call estimated at `upcoming` fits both caps; if so it is held (counted against
        the share cap) until `release`."""
        key = self._key(tenant_id)
        await self._refresh(key)
        if not self._fits(key, cap_nano, share, upcoming):
            return False
        self._held[key] = self._held.get(key, 0) + upcoming
        return True

    def release(self, tenant_id: str | None, upcoming: int) -> None:
        """The call `reserve` held is done (and booked with `add`, if it was made)."""
        key = self._key(tenant_id)
        left = self._held.get(key, 0) - upcoming
        if left > 0:
            self._held[key] = left
        else:
            self._held.pop(key, None)

    def known_below(self, tenant_id: str | None, cap_nano: int, share: float) -> bool:
        """Whether both caps leave room, on what this replica last knew, without reading the ledger: for the
        request path (`reserve` checks again)."""
        return self._fits(self._key(tenant_id), cap_nano, share, 0)

    def add(self, tenant_id: str | None, cost_nano: int) -> None:
        """An evaluation call's cost, as it is booked."""
        key = self._key(tenant_id)
        self._spent[key] = self._spent.get(key, 0) + cost_nano

    def served(self, tenant_id: str | None, cost_nano: int) -> None:
        """A request's cost, as it is settled: the share cap grows with the tenant's serving spend."""
        key = self._key(tenant_id)
        self._served[key] = self._served.get(key, 0) + cost_nano
