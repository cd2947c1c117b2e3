"""`tiergate replay`: the whole learning loop on recorded outcomes instead of live models.

The stream starts with every request on the teacher (or the most capable tier below it when a file has no
teacher). For each request, in order:

1. its domain is inferred from the prompt's embedding (nearest centroid above the floor, else `general`) or
   taken from the file's `domain` field, and the route table gives its tier;
2. a shadow evaluation may run: on an unpromoted domain the next cheaper tier is shadowed at the share the
   last promotion run computed (`policies.exploration.sampling`, value of information; none before the
   first run); on a promoted domain a monitoring share is served by the tier above and the serving tier is
   shadowed, so promoted traffic keeps producing fresh verdicts. An evaluation is made only if its shadow
   and judge calls fit within `evaluation_budget` (default 5%) of the serving spend so far;
3. the verdict is derived from the recorded scores (better / as good / worse); equal scores are an agreement
   found by the cheap check and cost nothing more, any other pair costs a judge call at the top tier's
   recorded cost. A small share of agreements is judged anyway (also at the judge's cost) so the incumbent's
   absolute quality, which scales the budget, can be estimated;
4. every shadow call costs the candidate's recorded cost; everything but the served answer is evaluation
   spend.

Every `interval` requests a promotion run re-discovers the domains from the embeddings seen so far (ids kept
stable), rebuilds the evidence from the stored traces and calls `tiergate.policies.promotion.plan`, exactly
as the live job does over stored traces. Nothing a decision uses comes from outcomes the protocol did not
reveal; the true scores of unserved tiers are read only to report the figures (and false promotions).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tiergate.admin.jobs.outcomes import Record
from tiergate.admin.jobs.replay_config import ReplayConfig, shares
from tiergate.policies import domains as dom
from tiergate.policies.exploration import evaluation_allowed, judge_cost
from tiergate.policies.promotion import (
    DomainEvidence,
    PromotionDecision,
    Verdicts,
    changelog,
    estimate_quality,
    fill_costs,
    plan,
)
from tiergate.policies.route_table import Sampling

Progress = Callable[[int, int], None]


@dataclass(slots=True)
class PromotionEvent:
    request: int  # requests served before the run that made it
    decision: PromotionDecision
    true_gap: float  # the domain's true gap at that step over the whole file (for reporting only)
    false: bool


@dataclass(slots=True)
class ReplayResult:
    metrics: dict[str, Any]
    cumulative_cost: np.ndarray  # serving + evaluation, per request served
    cumulative_teacher_cost: np.ndarray
    cumulative_quality: np.ndarray
    cumulative_teacher_quality: np.ndarray
    events: list[PromotionEvent]
    changelogs: list[str]


@dataclass(slots=True)
class _Traces:
    """What the gateway would have stored: per request, and per evaluated request its verdict."""

    served: np.ndarray  # tier index served
    cost: dict[int, np.ndarray]  # tier index -> recorded cost where that tier was called, else nan
    step: np.ndarray  # candidate tier index of an evaluation, -1 if none
    verdict: np.ndarray  # incumbent score - candidate score sign: +1 worse, 0 same, -1 better
    calibrated: np.ndarray  # incumbent's score revealed (judge called), nan otherwise


def _mean(values: np.ndarray) -> float | None:
    """Mean of the finite entries (the calls made), None when there are none."""
    return float(np.nanmean(values)) if np.isfinite(values).any() else None


def _embedding_domains(vectors: np.ndarray, domain_set: dom.DomainSet) -> list[str]:
    return dom.assign(domain_set, vectors)


class _Replay:
    def __init__(self, records: Sequence[Record], vectors: np.ndarray | None, config: ReplayConfig) -> None:
        self.config = config
        self.records = records
        self.vectors = vectors
        self.tiers = tuple(records[0].outcomes)  # cheapest first
        self.start = self.tiers.index("teacher") if "teacher" in self.tiers else len(self.tiers) - 1
        if self.start == 0:
            raise ValueError("replay needs a tier cheaper than the one it starts on")
        self.ladder = self.tiers[: self.start + 1]
        self.top = len(self.tiers) - 1
        n = len(records)
        self.score = np.array([[r.outcomes[t].score for t in self.tiers] for r in records])
        self.price = np.array([[r.outcomes[t].cost for t in self.tiers] for r in records])
        self.given = [r.domain for r in records] if records[0].domain is not None else None
        self.rng = np.random.default_rng(config.seed)
        self.traces = _Traces(
            served=np.full(n, -1),
            cost={t: np.full(n, np.nan) for t in range(len(self.tiers))},
            step=np.full(n, -1),
            verdict=np.zeros(n, dtype=np.int8),
            calibrated=np.full(n, np.nan),
        )
        self.domain_set = dom.DomainSet((), config.floor)
        self.routes: dict[str, int] = {}
        self.domain_of = (
            np.array([dom.GENERAL] * n, dtype=object) if self.given is None else np.array(self.given)
        )
        self.calibrations = 0
        self.shares: dict[str, Sampling] = {}
        self.evaluation_by_tier: dict[str, float] = {}
        self.evaluation_by_kind = {"shadow": 0.0, "judge": 0.0}
        self.judged_baseline = 0.0  # the baseline's cost on the requests the judge was paid for
        self.spent_serving = 0.0
        self.spent_evaluation = 0.0
        self.events: list[PromotionEvent] = []
        self.changelogs: list[str] = []

    # -- serving -------------------------------------------------------------------------------------
    def serve(self, i: int) -> tuple[int, float, float]:
        """Serve request i; returns (tier served, serving cost, evaluation cost)."""
        c = self.config
        domain = str(self.domain_of[i])
        tier = self.routes.get(domain, self.start)
        served, shadow = tier, -1
        share = self.shares.get(domain)
        if tier < self.start:
            # Monitoring: the incumbent answers, the promoted tier is shadowed.
            if self.rng.random() < (share.share if share is not None else c.exploration.monitor):
                served, shadow = tier + 1, tier
        elif tier > 0:
            fraction = c.explore if c.explore is not None else (share.share if share is not None else 0.0)
            if self.rng.random() < fraction:
                shadow = tier - 1
        # The hard cap: an evaluation is made only if it fits, judge included, within the cap's share of the
        # serving spend so far.
        if shadow >= 0 and not evaluation_allowed(
            self.spent_evaluation,
            self.price[i, shadow] + self.price[i, self.top],
            self.spent_serving + self.price[i, served],
            c.evaluation_budget,
        ):
            served, shadow = tier, -1
        t = self.traces
        t.served[i] = served
        t.cost[served][i] = self.price[i, served]
        evaluation = 0.0
        if shadow >= 0:
            t.cost[shadow][i] = self.price[i, shadow]
            evaluation += self._book(shadow, "shadow", self.price[i, shadow])
            t.step[i] = shadow
            diff = self.score[i, served] - self.score[i, shadow]
            t.verdict[i] = int(np.sign(diff))
            judge = diff != 0
            if diff == 0 and served == self.start and self.calibrations < c.calibration_target:
                judge = bool(self.rng.random() < c.calibrate)
                self.calibrations += judge
            if judge:
                evaluation += self._book(self.top, "judge", self.price[i, self.top])
                self.judged_baseline += self.price[i, self.start]
                if served == self.start:
                    t.calibrated[i] = self.score[i, served]
        self.spent_serving += float(self.price[i, served])
        self.spent_evaluation += evaluation
        return served, float(self.price[i, served]), evaluation

    def _book(self, tier: int, kind: str, cost: float) -> float:
        by_tier = self.evaluation_by_tier
        by_tier[self.tiers[tier]] = by_tier.get(self.tiers[tier], 0.0) + float(cost)
        self.evaluation_by_kind[kind] += float(cost)
        return float(cost)

    # -- learning ------------------------------------------------------------------------------------
    def rediscover(self, seen: int) -> None:
        if self.vectors is None:
            return
        texts = [r.prompt for r in self.records[:seen]]
        self.domain_set = dom.discover(
            self.vectors[:seen],
            texts,
            previous=self.domain_set if self.domain_set.domains else None,
            k=self.config.clusters,
            floor=self.config.floor,
            seed=self.config.seed,
        )
        self.domain_of = np.array(_embedding_domains(self.vectors, self.domain_set), dtype=object)
        live = {d.id for d in self.domain_set.domains} | {dom.GENERAL}
        self.routes = {d: t for d, t in self.routes.items() if d in live}

    def evidence(self, seen: int) -> list[DomainEvidence]:
        t = self.traces
        names = {d.id: d.name for d in self.domain_set.domains}
        domains = self.domain_of[:seen]
        overall = {self.tiers[k]: _mean(t.cost[k][:seen]) for k in range(len(self.ladder))}
        out = []
        for domain in sorted(set(domains.tolist())):
            rows = np.flatnonzero(domains == domain)
            observed = {self.tiers[k]: _mean(t.cost[k][rows]) for k in range(len(self.ladder))}
            costs = fill_costs(self.ladder, observed, overall)
            verdicts: dict[tuple[str, str], Verdicts] = {}
            for k in range(len(self.ladder) - 1):
                v = t.verdict[rows[t.step[rows] == k]]
                counts = Verdicts(
                    better=int((v < 0).sum()), same=int((v == 0).sum()), worse=int((v > 0).sum())
                )
                verdicts[(self.tiers[k], self.tiers[k + 1])] = counts
            out.append(
                DomainEvidence(
                    domain=domain,
                    name=names.get(domain, domain),
                    tier=self.tiers[self.routes.get(domain, self.start)],
                    traffic=float(len(rows)),
                    costs=costs,
                    verdicts=verdicts,
                )
            )
        return out

    def quality(self, seen: int) -> Any:
        t = self.traces
        evaluated = (t.step[:seen] >= 0) & (t.served[:seen] == self.start)
        agree = evaluated & (t.verdict[:seen] == 0)
        disagree = evaluated & (t.verdict[:seen] != 0)
        calibrated = agree & np.isfinite(t.calibrated[:seen])
        return estimate_quality(
            agreements=int(agree.sum()),
            calibrated=int(calibrated.sum()),
            calibrated_score=float(t.calibrated[:seen][calibrated].sum()),
            disagreements=int(disagree.sum()),
            disagreement_score=float(self.score[:seen, self.start][disagree].sum()),
            alpha=self.config.promotion.alpha,
        )

    def promote(self, seen: int) -> None:
        self.rediscover(seen)
        evidence = self.evidence(seen)
        result = plan(evidence, self.ladder, self.quality(seen), self.config.promotion)
        index = {name: k for k, name in enumerate(self.tiers)}
        self.routes = {d: index[tier] for d, tier in result.routes.items()}
        judged = self.evaluation_by_kind["judge"]
        self.shares = shares(
            evidence,
            result,
            self.ladder,
            self.config,
            judge_cost=judge_cost(judged, self.judged_baseline),
            next_run=self.config.interval / seen,
            unpriced=[
                self.tiers[k]
                for k in range(len(self.ladder))
                if not np.isfinite(self.traces.cost[k][:seen]).any()
            ],
        )
        if result.decisions:
            self.changelogs.append(f"after {seen} requests: " + changelog(result))
        for decision in result.decisions:
            if decision.action != "promote":
                continue
            rows = np.flatnonzero(self.domain_of == decision.domain)
            cand, inc = index[decision.to_tier], index[decision.from_tier]
            true_gap = float((self.score[rows, inc] - self.score[rows, cand]).mean())
            self.events.append(PromotionEvent(seen, decision, true_gap, true_gap > decision.bound))


def _order(n: int, config: ReplayConfig) -> np.ndarray:
    if not config.shuffle:
        return np.arange(n)
    return np.random.default_rng([config.seed, 1]).permutation(n)


def replay(
    records: Sequence[Record],
    embed: Callable[[list[str]], np.ndarray] | None,
    config: ReplayConfig | None = None,
    progress: Progress | None = None,
) -> ReplayResult:
    """Run the loop over `records`; `embed` maps prompts to unit vectors (needed without domains)."""
    config = config or ReplayConfig()
    vectors = None
    if records[0].domain is None:
        if embed is None:
            raise ValueError("the outcomes name no domains, so replay needs an embedding model")
        # Embedded in file order, so an on-disk cache of the file's embeddings serves every seed.
        vectors = np.asarray(embed([r.prompt for r in records]), dtype=np.float32)
        if vectors.shape[0] != len(records):
            raise ValueError(f"embedding returned {vectors.shape[0]} vectors for {len(records)} prompts")
    order = _order(len(records), config)
    records = [records[i] for i in order]
    vectors = None if vectors is None else vectors[order]
    run = _Replay(records, vectors, config)
    n = len(records)
    serving = np.zeros(n)
    evaluation = np.zeros(n)
    quality = np.zeros(n)
    for i in range(n):
        served, serving[i], evaluation[i] = run.serve(i)
        quality[i] = run.score[i, served]
        if (i + 1) % config.interval == 0 and i + 1 < n:
            run.promote(i + 1)
        if progress is not None:
            progress(i + 1, n)
    teacher_cost = run.price[:, run.start]
    teacher_quality = run.score[:, run.start]
    return ReplayResult(
        metrics={
            **_metrics(
                serving, evaluation, quality, teacher_cost, teacher_quality, run.events, len(run.changelogs)
            ),
            "evaluation_by_tier": dict(sorted(run.evaluation_by_tier.items())),
            "evaluation_by_kind": dict(run.evaluation_by_kind),
            # Requests served before the run that made the first promotion (None: nothing was promoted).
            "first_promotion": run.events[0].request if run.events else None,
        },
        cumulative_cost=np.cumsum(serving + evaluation),
        cumulative_teacher_cost=np.cumsum(teacher_cost),
        cumulative_quality=np.cumsum(quality) / np.arange(1, n + 1),
        cumulative_teacher_quality=np.cumsum(teacher_quality) / np.arange(1, n + 1),
        events=run.events,
        changelogs=run.changelogs,
    )


def _metrics(
    serving: np.ndarray,
    evaluation: np.ndarray,
    quality: np.ndarray,
    teacher_cost: np.ndarray,
    teacher_quality: np.ndarray,
    events: list[PromotionEvent],
    runs_with_changes: int,
) -> dict[str, Any]:
    half = len(serving) // 2
    total = float(serving.sum() + evaluation.sum())
    steady_total = float(serving[half:].sum() + evaluation[half:].sum())
    tq, q = float(teacher_quality.mean()), float(quality.mean())
    steady_tq, steady_q = float(teacher_quality[half:].mean()), float(quality[half:].mean())
    return {
        "requests": len(serving),
        "teacher_cost": float(teacher_cost.sum()),
        "serving_cost": float(serving.sum()),
        "evaluation_cost": float(evaluation.sum()),
        "total_cost": total,
        "cost_saved_fraction": 1 - total / float(teacher_cost.sum()),
        "teacher_quality": tq,
        "quality": q,
        "quality_ratio": q / tq if tq else 0.0,
        "steady_saved_fraction": 1 - steady_total / float(teacher_cost[half:].sum()),
        "steady_quality_ratio": steady_q / steady_tq if steady_tq else 0.0,
        "promotions": len(events),
        "false_promotions": sum(e.false for e in events),
        "runs_with_changes": runs_with_changes,
    }


def summary(result: ReplayResult) -> Mapping[str, Any]:
    """The metrics plus the promotion events, as one JSON-ready object."""
    return {
        **result.metrics,
        "promotion_events": [
            {
                "after_requests": e.request,
                "domain": e.decision.domain,
                "name": e.decision.name,
                "from": e.decision.from_tier,
                "to": e.decision.to_tier,
                "samples": e.decision.samples,
                "gap": round(e.decision.gap, 4),
                "bound": round(e.decision.bound, 4),
                "true_gap": round(e.true_gap, 4),
                "false": e.false,
            }
            for e in result.events
        ],
        "changelog": result.changelogs,
    }
