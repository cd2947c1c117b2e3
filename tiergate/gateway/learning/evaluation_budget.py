"""The daily cap on a tenant's evaluation spend (shadow and judge calls), and how that spend is booked.

Evaluation calls are booked in the ledger as `kind = evaluation` rows: the cost report shows them in their
own column, and they never touch the tenant's request budget (budget counters and their ledger seeds count
`kind = request` only) - a shadow call must not turn a client's next request into a 429. They are capped
instead by `learning.shadow.daily_budget_usd` per tenant per UTC day.

The cap is checked before each shadow call and before the judge is asked. This replica's spend is counted
as it happens; the other replicas' through the ledger, re-read at most every `refresh_s`. So the cap can be
exceeded by the evaluations in flight when it is reached (at most `concurrency` per replica, each one
candidate call and two judge calls) plus what the other replicas spent since the last re-read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tiergate.gateway.db.models import LedgerEntry

_LEDGER = LedgerEntry.__table__.c  # type: ignore[attr-defined]


def utc_day(ts_s: float) -> str:
    return datetime.fromtimestamp(ts_s, tz=UTC).strftime("%Y-%m-%d")


async def evaluation_spend(engine: AsyncEngine, tenant_id: str | None, day: str) -> int:
    """What the ledger holds of a tenant's evaluation spend on a UTC day (nano-USD)."""
    tenant = _LEDGER.tenant_id.is_(None) if tenant_id is None else _LEDGER.tenant_id == tenant_id
    query = select(func.coalesce(func.sum(_LEDGER.cost_nano), 0)).where(
        _LEDGER.kind == "evaluation", _LEDGER.day == day, tenant
    )
    async with engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


class EvaluationBudget:
    def __init__(
        self, engine: AsyncEngine, *, refresh_s: float = 5.0, clock: Callable[[], float] = time.time
    ) -> None:
        self._engine = engine
        self._refresh_s = refresh_s
        self._clock = clock
        self._spent: dict[tuple[str | None, str], int] = {}
        self._read_at: dict[tuple[str | None, str], float] = {}

    async def spent(self, tenant_id: str | None) -> int:
        now = self._clock()
        key = (tenant_id, utc_day(now))
        if now - self._read_at.get(key, float("-inf")) >= self._refresh_s:
            self._read_at[key] = now
            ledger = await evaluation_spend(self._engine, tenant_id, key[1])
            # The ledger lags this replica's own spend by a flush; it leads by the other replicas' spend.
            self._spent[key] = max(self._spent.get(key, 0), ledger)
            for old in [k for k in self._spent if k[1] != key[1]]:
                self._spent.pop(old, None)
                self._read_at.pop(old, None)
        return self._spent.get(key, 0)

    async def allows(self, tenant_id: str | None, cap_nano: int) -> bool:
        return await self.spent(tenant_id) < cap_nano

    def known_below(self, tenant_id: str | None, cap_nano: int) -> bool:
        """`allows` on what this replica last knew, without reading the ledger: for the request path."""
        return self._spent.get((tenant_id, utc_day(self._clock())), 0) < cap_nano

    def add(self, tenant_id: str | None, cost_nano: int) -> None:
        key = (tenant_id, utc_day(self._clock()))
        self._spent[key] = self._spent.get(key, 0) + cost_nano
