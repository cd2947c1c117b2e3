"""What the promote job reads as evidence: shadow verdicts and user feedback, per domain and tier.

    rows = await verdict_rows(engine, tenant_id=..., since_ms=...)     one per judged or agreed comparison
    feed = await feedback_rows(engine, tenant_id=..., since_ms=...)    the newest feedback per request
    count_verdicts(rows)   -> {(domain, candidate tier, served tier): Verdicts(better, same, worse)}
    feedback_stats(feed)   -> {(domain, served tier): FeedbackStats(n, total, total_sq)}

The counts are `policies.promotion_stats.Verdicts` and `FeedbackStats` (agreements found by the cheap
check count as `same`: the candidate said what the incumbent said). Rows are read apart from counting so
that a job that re-assigns domains (`tiergate promote` clusters trace embeddings) can move each row to its
new domain before counting: every row carries its request id, which joins it to its trace. Evaluations without a verdict (a failed candidate
or judge, an unparseable judge reply, a skipped judge) are not evidence and are left out; so are
evaluations of registered models unless asked for (they compare a model that serves nothing yet).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tiergate.gateway.db.learning import Evaluation, Trace
from tiergate.gateway.db.learning import Feedback as FeedbackTable
from tiergate.policies.promotion_stats import FeedbackStats, Verdicts

_E = Evaluation.__table__.c  # type: ignore[attr-defined]
_F = FeedbackTable.__table__.c  # type: ignore[attr-defined]
_T = Trace.__table__.c  # type: ignore[attr-defined]
_SAME = {"as_good": "same", "better": "better", "worse": "worse"}


@dataclass(frozen=True, slots=True)
class VerdictRow:
    request_id: str
    tenant_id: str | None
    domain: str | None
    served_tier: str
    candidate_tier: str
    candidate_deployment_id: str | None
    verdict: str  # better | as_good | worse: the candidate's answer against the served one
    agreed: bool  # settled by the cheap agreement check, no judge asked
    ts_ms: int
    candidate_cost_nano: int = 0  # what the candidate's answer cost: the cheaper tier's price on this request
    judge_cost_nano: int = 0  # what the judge's calls cost (0: settled by the agreement check)


@dataclass(frozen=True, slots=True)
class FeedbackRow:
    request_id: str
    tenant_id: str | None
    domain: str | None
    tier: str  # the tier that served the answer the feedback is about
    score: float
    ts_ms: int


def _scope(c: Any, tenant_id: str | None, since_ms: int | None) -> list[ColumnElement[bool]]:
    """A table's rows of one tenant (None: every tenant) since a time."""
    out: list[ColumnElement[bool]] = []
    if tenant_id is not None:
        out.append(c.tenant_id == tenant_id)
    if since_ms is not None:
        out.append(c.ts_ms >= since_ms)
    return out


async def verdict_rows(
    engine: AsyncEngine,
    *,
    tenant_id: str | None = None,
    since_ms: int | None = None,
    registered: bool = False,
) -> list[VerdictRow]:
    """Evaluations that gave a verdict; `tenant_id` None: every tenant's (the job's global view)."""
    where = [_E.status == "ok", _E.verdict.is_not(None), *_scope(_E, tenant_id, since_ms)]
    if not registered:
        where.append(_E.registered.is_(False))
    statement = select(
        _E.request_id, _E.tenant_id, _E.domain, _E.served_tier, _E.candidate_tier,
        _E.candidate_deployment_id, _E.verdict, _E.agreed, _E.ts_ms, _E.candidate_cost_nano, _E.judge_cost_nano,
    ).where(*where).order_by(_E.ts_ms)  # fmt: skip
    async with engine.connect() as conn:
        rows = (await conn.execute(statement)).all()
    return [VerdictRow(*r[:7], bool(r[7]), r[8], int(r[9] or 0), int(r[10] or 0)) for r in rows]


async def feedback_rows(
    engine: AsyncEngine, *, tenant_id: str | None = None, since_ms: int | None = None
) -> list[FeedbackRow]:
    """The newest feedback on each request, with the domain and tier of the answer it is about."""
    statement = (
        select(_F.request_id, _F.tenant_id, _T.domain, _T.tier, _F.score, _F.ts_ms)
        .join(
            Trace.__table__,  # type: ignore[attr-defined]
            (_T.request_id == _F.request_id)
            & ((_T.tenant_id == _F.tenant_id) | (_T.tenant_id.is_(None) & _F.tenant_id.is_(None))),
        )
        .where(_T.tier.is_not(None), *_scope(_F, tenant_id, since_ms))
        .order_by(_F.ts_ms)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(statement)).all()
    newest: dict[tuple[str | None, str], FeedbackRow] = {}
    for request_id, tenant, domain, tier, score, ts_ms in rows:
        newest[(tenant, request_id)] = FeedbackRow(request_id, tenant, domain, tier, float(score), ts_ms)
    return sorted(newest.values(), key=lambda r: r.ts_ms)


def count_verdicts(rows: Iterable[VerdictRow]) -> dict[tuple[str | None, str, str], Verdicts]:
    """{(domain, candidate tier, served tier): verdict counts}."""
    counts: dict[tuple[str | None, str, str], dict[str, int]] = {}
    for row in rows:
        key = (row.domain, row.candidate_tier, row.served_tier)
        bucket = counts.setdefault(key, {"better": 0, "same": 0, "worse": 0})
        bucket[_SAME[row.verdict]] += 1
    return {k: Verdicts(**v) for k, v in counts.items()}


def feedback_stats(rows: Iterable[FeedbackRow]) -> dict[tuple[str | None, str], FeedbackStats]:
    """{(domain, served tier): count, sum and sum of squares of the scores}."""
    out: dict[tuple[str | None, str], FeedbackStats] = {}
    for row in rows:
        s = out.get((row.domain, row.tier), FeedbackStats())
        out[(row.domain, row.tier)] = s.add(row.score)
    return out
