"""What one `tiergate promote` run decides on: domains re-discovered from trace embeddings, and per domain
its traffic, cost per tier, verdicts per step and feedback per tier.

Reading (I/O) and building (pure, run in a worker thread) are separate: `load` reads the window's rows,
`build` turns them into `DomainEvidence` with the same `tiergate.policies` functions `tiergate replay`
uses (`domains.discover` and `assign`, `fill_costs`, `estimate_quality`).

Domains. The previous version's centroids and `names` are the previous `DomainSet`: re-clustering starts
from them and keeps the ids (and names) of clusters that persist. Every request of the window is assigned
afresh: by its trace's embedding when it has one, else by the domain its trace (or evaluation) recorded
when that domain is still live, else `general`. Verdicts and feedback join their request through its
(tenant, request id), so they count for the domain the request belongs to now.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from tiergate.admin.evidence import (
    FeedbackRow,
    VerdictRow,
    count_verdicts,
    feedback_rows,
    feedback_stats,
    verdict_rows,
)
from tiergate.gateway.db.learning import Trace
from tiergate.gateway.routing.query import split_last_user
from tiergate.policies import domains as dom
from tiergate.policies.exploration import JUDGE_COST, judge_cost
from tiergate.policies.pricing import usd
from tiergate.policies.promotion import (
    DomainEvidence,
    Quality,
    estimate_quality,
    fill_costs,
)
from tiergate.policies.promotion_stats import ladder_steps
from tiergate.policies.route_table import RouteTableDoc
from tiergate.policies.tiers import tier_rank

_T = Trace.__table__.c  # type: ignore[attr-defined]
_ID = re.compile(r"^d(\d+)$")


@dataclass(frozen=True, slots=True)
class TraceRow:
    tenant_id: str | None
    request_id: str
    domain: str | None  # as routed at the time
    tier: str
    cost_nano: int
    text: str  # the last user message (empty without content)
    vector: np.ndarray | None  # the query embedding (content policy `full` only)
    ts_ms: int = 0


@dataclass(frozen=True, slots=True)
class Window:
    """The rows of one run's evidence window."""

    since_ms: int
    traces: list[TraceRow]
    verdicts: list[VerdictRow]
    feedback: list[FeedbackRow]


async def load(engine: AsyncEngine, since_ms: int, max_traces: int) -> Window:
    """The newest `max_traces` answered chat traces since `since_ms`, and every verdict and feedback since."""
    statement = (
        select(
            _T.tenant_id, _T.request_id, _T.domain, _T.tier, _T.cost_nano, _T.messages, _T.embedding, _T.ts_ms
        )
        .where(
            _T.ts_ms >= since_ms,
            _T.endpoint != "embeddings",  # chat calls from every front door
            _T.status == "ok",
            _T.cache == "miss",
            _T.tier.is_not(None),
        )
        .order_by(_T.ts_ms.desc(), _T.trace_id.desc())
        .limit(max_traces)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(statement)).all()
    traces = [
        TraceRow(
            tenant,
            request_id,
            domain,
            tier,
            int(cost or 0),
            split_last_user(messages)[0] if isinstance(messages, list) else "",
            np.frombuffer(embedding, dtype=np.float32) if embedding else None,
            int(ts_ms),
        )
        for tenant, request_id, domain, tier, cost, messages, embedding, ts_ms in reversed(rows)
    ]
    return Window(
        since_ms,
        traces,
        await verdict_rows(engine, since_ms=since_ms),
        await feedback_rows(engine, since_ms=since_ms),
    )


@dataclass(frozen=True, slots=True)
class Built:
    """One run's inputs to `plan`, and what the report shows beside the decisions."""

    domain_set: dom.DomainSet
    evidence: list[DomainEvidence]
    quality: Quality
    new_domains: tuple[str, ...]  # ids first seen in this run
    retired: tuple[str, ...]  # ids of the previous version no cluster kept
    names: dict[str, str] = field(default_factory=dict)  # every id ever issued -> its name
    counts: dict[str, int] = field(default_factory=dict)  # rows read, for the report
    judge_cost: float = JUDGE_COST  # a judged verdict's cost per baseline request (`exploration.judge_cost`)
    unpriced: tuple[str, ...] = ()  # tiers of the ladder no call in the window priced
    first_ms: int | None = None  # the oldest trace's time: the window's traffic arrived since


def previous_domains(doc: RouteTableDoc | None, floor: float) -> dom.DomainSet:
    """The domains of a stored version: its centroids, named by its `names` (ids never reused)."""
    if doc is None:
        return dom.DomainSet((), floor)
    issued = [int(m.group(1)) for k in (*doc.names, *doc.centroids, *doc.routes) if (m := _ID.match(k))]
    domains = tuple(
        dom.Domain(d, doc.names.get(d, d), np.asarray(vector, dtype=np.float32), 0)
        for d, vector in sorted(doc.centroids.items())
    )
    return dom.DomainSet(domains, floor, max(issued, default=0) + 1)


def ladder_of(configured: Sequence[str], baseline: str) -> list[str]:
    """The configured tiers up to the baseline (the tier the gateway routes unknown domains to)."""
    return [t for t in configured if tier_rank(t) <= tier_rank(baseline)]


def _tier_in(ladder: Sequence[str], tier: str | None) -> str:
    """Where a route's tier sits on the ladder: itself, else the nearest above it (as the gateway serves)."""
    if tier is None:
        return ladder[-1]
    return next((t for t in ladder if tier_rank(t) >= tier_rank(tier)), ladder[-1])


def build(
    window: Window,
    previous: RouteTableDoc | None,
    ladder: Sequence[str],
    *,
    floor: float,
    clusters: int | None,
    seed: int,
    quality: float | None,
    alpha: float,
) -> Built:
    """Re-discover the domains and gather each one's evidence (pure: no I/O, seeded)."""
    before = previous_domains(previous, floor)
    embedded = [t for t in window.traces if t.vector is not None]
    domain_set = before
    if embedded:
        domain_set = dom.discover(
            np.stack([t.vector for t in embedded if t.vector is not None]),
            [t.text for t in embedded],
            previous=before if before.domains else None,
            k=clusters,
            floor=floor,
            seed=seed,
        )
    live = {d.id for d in domain_set.domains}

    def recorded(domain: str | None) -> str:
        return domain if domain in live else dom.GENERAL

    assigned = iter(
        dom.assign(domain_set, np.stack([t.vector for t in embedded if t.vector is not None]))
        if embedded
        else []
    )
    domain_of: dict[tuple[str | None, str], str] = {}
    for t in window.traces:
        domain_of[(t.tenant_id, t.request_id)] = (
            next(assigned) if t.vector is not None else recorded(t.domain)
        )

    def of(tenant: str | None, request_id: str, domain: str | None) -> str:
        return domain_of.get((tenant, request_id)) or recorded(domain)

    requests: dict[str, set[tuple[str | None, str]]] = {}
    spent: dict[tuple[str, str], list[int]] = {}
    for t in window.traces:
        d = domain_of[(t.tenant_id, t.request_id)]
        requests.setdefault(d, set()).add((t.tenant_id, t.request_id))
        spent.setdefault((d, t.tier), []).append(t.cost_nano)
    judged = []  # the verdicts, each in the domain its request belongs to now
    for v in window.verdicts:
        d = of(v.tenant_id, v.request_id, v.domain)
        requests.setdefault(d, set()).add((v.tenant_id, v.request_id))
        spent.setdefault((d, v.candidate_tier), []).append(v.candidate_cost_nano)
        judged.append(replace(v, domain=d))
    steps = set(ladder_steps(ladder))
    verdicts = {k: n for k, n in count_verdicts(judged).items() if (k[1], k[2]) in steps}
    feedback = feedback_stats(
        replace(f, domain=of(f.tenant_id, f.request_id, f.domain)) for f in window.feedback
    )

    def mean_usd(costs: list[int] | None) -> float | None:
        return usd(sum(costs)) / len(costs) if costs else None

    overall = {
        tier: mean_usd([c for (_, t), costs in spent.items() if t == tier for c in costs]) for tier in ladder
    }
    # The judge's price as replay measures it: judge spend over the baseline's cost on the requests judged.
    served = {(t.tenant_id, t.request_id): t for t in window.traces if t.tier == ladder[-1]}
    paid = [(v.judge_cost_nano, s.cost_nano) for v in window.verdicts
            if v.judge_cost_nano > 0 and (s := served.get((v.tenant_id, v.request_id))) is not None]  # fmt: skip
    routes = previous.routes if previous is not None else {}
    evidence = []
    for d in sorted(live | set(requests) | ({dom.GENERAL} & set(routes))):
        evidence.append(
            DomainEvidence(
                domain=d,
                name=domain_set.by_id()[d].name if d in live else d,
                tier=_tier_in(ladder, routes.get(d)),
                traffic=float(len(requests.get(d, ()))),
                costs=fill_costs(ladder, {t: mean_usd(spent.get((d, t))) for t in ladder}, overall),
                verdicts={(c, s): n for (dd, c, s), n in verdicts.items() if dd == d},
                feedback={t: f for (dd, t), f in feedback.items() if dd == d},
            )
        )
    old = {d.id for d in before.domains}
    names = dict(previous.names) if previous is not None else {}
    names.update({d.id: d.name for d in domain_set.domains})
    return Built(
        domain_set=domain_set,
        evidence=evidence,
        quality=incumbent_quality(window.feedback, ladder[-1], quality, alpha),
        new_domains=tuple(sorted(live - old, key=_order)),
        retired=tuple(sorted(old - live, key=_order)),
        names=names,
        counts={
            "traces": len(window.traces),
            "embedded": len(embedded),
            "verdicts": len(window.verdicts),
            "feedback": len(window.feedback),
        },
        judge_cost=judge_cost(usd(sum(j for j, _ in paid)), usd(sum(b for _, b in paid))),
        unpriced=tuple(t for t in ladder if overall[t] is None),
        first_ms=min((t.ts_ms for t in window.traces), default=None),
    )


def _order(domain_id: str) -> tuple[int, str]:
    m = _ID.match(domain_id)
    return (int(m.group(1)) if m else 0, domain_id)


def incumbent_quality(
    feedback: Sequence[FeedbackRow], baseline: str, configured: float | None, alpha: float
) -> Quality:
    """The baseline tier's quality: as configured, else from the feedback on the answers it served.

    Live judging is pairwise and reveals no absolute score; feedback on the incumbent's answers does. Each
    such answer is a judged sample of the incumbent (`estimate_quality` with every sample calibrated), so the
    budget's lower bound widens when there is little of it, and is 0 (only moves to a better tier fit) when
    there is none.
    """
    if configured is not None:
        return Quality(configured, configured, 0)
    scores = [f.score for f in feedback if f.tier == baseline]
    return estimate_quality(len(scores), len(scores), sum(scores), 0, 0.0, alpha)


def summarize(
    built: Built, gaps: Mapping[tuple[str, str, str], Any], fractions: Mapping[str, float]
) -> list[dict[str, Any]]:
    """Per domain: what the report prints and `--json` returns as evidence."""
    out = []
    for e in built.evidence:
        steps = []
        for (cand, inc), v in sorted(e.verdicts.items(), key=lambda kv: tier_rank(kv[0][0])):
            gap = gaps.get((e.domain, cand, inc))
            steps.append(
                {
                    "candidate": cand,
                    "incumbent": inc,
                    "better": v.better,
                    "same": v.same,
                    "worse": v.worse,
                    "gap": None if gap is None else round(gap.mean, 4),
                    "bound": None if gap is None else round(gap.bound, 4),
                }
            )
        out.append(
            {
                "domain": e.domain,
                "name": e.name,
                "tier": e.tier,
                "traffic": int(e.traffic),
                "costs_usd": {t: round(c, 8) for t, c in e.costs.items()},
                "steps": steps,
                "feedback": {t: {"n": f.n, "mean": round(f.mean, 4)} for t, f in e.feedback.items()},
                "shadow_fraction": fractions.get(e.domain),
            }
        )
    return out
