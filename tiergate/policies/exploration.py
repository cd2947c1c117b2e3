"""How much of each domain's traffic to shadow-evaluate: evaluation as an investment with an expected return.

For an unpromoted domain d and its next cheaper tier, a promotion would save `saving` USD per request on
the traffic that follows, expected to be `horizon` times the domain's traffic seen so far; each verdict
costs `verdict_cost` (the candidate's answer, plus the judge on the expected share of disagreements). The
domain is explored only while the value of the information still to be bought is positive:

    P(gap_d <= allowed_d) * saving * horizon * traffic  >  (verdicts still needed) * verdict_cost

- `allowed_d` is the largest gap the budget can give the domain: the domains competing at their posterior
  means are taken by gap per dollar saved (as `promotion.plan` spends the budget) until their traffic-
  weighted gaps fill it; the gap per dollar where it fills, times the domain's saving, is its allowance.
- The verdicts needed are those at which the domain's bound (posterior mean plus z_(1-alpha) times the
  sampling error of the verdicts) would fall to `allowed_d`, and at least `min_samples`.
- Futility: once the posterior's lower bound (mean - z_(1-alpha) * sd) lies above `allowed_d`, the domain
  cannot fit. Before a domain has verdicts of its own, the posterior is the pooled prior of its step, so
  when every domain measured so far is far worse, new ones are not bought either. A futile domain is
  revisited (traffic and models change) at `revisit` of its traffic, falling as 1/verdicts once it has
  `min_samples`, and only where a promotion could repay `min_samples` verdicts at all.
- The share asks for the verdicts still needed by the next decision, `next_run` requests of the domain
  away: remaining / next_run, between `revisit` and `max_share`. Nothing is explored where nothing is due.

Promoted traffic keeps the `monitor` share (served by the incumbent, the candidate shadowed) so a broken
budget is seen and demoted. A hard cap on the spend itself (`EVALUATION_SHARE` of the serving spend by
default, `evaluation_allowed`) is applied where money is counted (the gateway's evaluation budget, replay's
running totals); this policy decides what is worth buying under it.

The live promote job and `tiergate replay` both call `sampling` with these defaults (`ExplorationConfig`,
`EVALUATION_SHARE`, `judge_cost`), so the two cannot drift apart. Pure: no I/O, no clocks, no randomness.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

from tiergate.policies.promotion import Plan
from tiergate.policies.promotion_stats import DomainEvidence, PromotionConfig, gap_estimates, z_value
from tiergate.policies.route_table import Sampling
from tiergate.policies.tiers import tier_rank

MONITOR = 0.03  # share of a promoted domain's traffic served by the incumbent, the promoted tier shadowed
MAX_VERDICTS = 2000  # verdicts a step is ever planned to need; beyond this it is treated as out of reach
EVALUATION_SHARE = 0.05  # default hard cap: evaluation spend at most this share of the serving spend
JUDGE_COST = 1.0  # a judged verdict's cost per baseline request before any judge call has been paid for
SHARE_TOLERANCE = 0.25  # relative move below which a share already in force is left as it is


@dataclass(frozen=True, slots=True)
class ExplorationConfig:
    horizon: float = 1.0  # requests expected to follow, as a multiple of the domain's requests seen so far
    max_share: float = 0.5  # the largest share of a domain's traffic explored
    revisit: float = (
        0.01  # share at which a futile domain is revisited, falling as 1/verdicts past min_samples
    )
    monitor: float = MONITOR


def judge_cost(judged_usd: float, baseline_usd: float) -> float:
    """A judged verdict's cost as a multiple of the baseline tier's cost on the same requests: what was paid
    for the judge over what the baseline cost where the judge was paid for (`JUDGE_COST` before any)."""
    return judged_usd / baseline_usd if judged_usd > 0 and baseline_usd > 0 else JUDGE_COST


def evaluation_allowed(spent: float, upcoming: float, serving: float, share: float | None) -> bool:
    """The hard cap: whether evaluation spend `spent`, plus the `upcoming` call's, stays within `share` of the
    serving spend `serving` (any unit, the same for all three); `share` None: no cap."""
    return share is None or spent + upcoming <= share * serving


def moved(old: Sampling | None, new: Sampling) -> bool:
    """Whether `new` differs from the share in force enough to be written: the shares move a little with every
    verdict and every hour of traffic, and a route-table version per run for that would be noise."""
    if old is None or old.incumbent != new.incumbent or (old.share == 0) != (new.share == 0):
        return True
    return abs(new.share - old.share) > SHARE_TOLERANCE * max(old.share, new.share)


@dataclass(frozen=True, slots=True)
class Outlook:
    """One domain's next cheaper step, as the exploration policy sees it."""

    samples: int  # verdicts at the step
    gap: float  # posterior mean of the candidate's quality gap
    sd: float  # its posterior standard deviation
    disagreement: float  # expected share of verdicts the cheap check cannot settle
    saving: float  # USD per request a promotion would save
    verdict_cost: float  # USD per verdict expected: candidate call plus the judge on disagreements
    traffic: float  # the domain's requests seen so far
    share: float  # the domain's share of all traffic
    next_run: float  # the domain's requests expected before the next decision


def disagreement_rate(disagreements: int, samples: int, pooled: float | None) -> float:
    """Share of verdicts needing the judge: the domain's own, smoothed by two pseudo-verdicts at the pooled
    rate (0.5 when nothing is pooled)."""
    prior = 0.5 if pooled is None else pooled
    return (disagreements + 2 * prior) / (samples + 2)


def allowances(outlooks: Mapping[str, Outlook], budget: float) -> dict[str, float]:
    """Each domain's allowed gap: the gap per dollar at which the budget fills, times its saving."""
    ranked = sorted((o.gap / o.saving, d) for d, o in outlooks.items() if o.saving > 0 and o.share > 0)
    used, price = 0.0, math.inf
    for ratio, d in ranked:
        used += outlooks[d].share * outlooks[d].gap
        if used > budget:
            price = ratio
            break
    out = {}
    for d, o in outlooks.items():
        alone = budget / o.share if o.share > 0 else 0.0
        out[d] = min(alone, price * o.saving) if o.saving > 0 else 0.0
    return out


def _needed(o: Outlook, allowed: float, z: float, min_samples: int) -> float:
    """Verdicts at which the bound would reach `allowed` were the gap its posterior mean."""
    margin = allowed - o.gap
    if margin <= 0:
        return MAX_VERDICTS
    per_verdict = max(o.disagreement - o.gap * o.gap, 0.01)
    return min(max(per_verdict * z * z / (margin * margin), float(min_samples)), MAX_VERDICTS)


def explore_share(
    o: Outlook, allowed: float, *, min_samples: int, alpha: float, config: ExplorationConfig
) -> float:
    """The share of the domain's traffic to shadow at its next cheaper step (see the module docstring)."""
    if o.saving <= 0 or o.traffic <= 0:
        return 0.0
    z = z_value(alpha)
    future = config.horizon * o.traffic * o.saving  # USD a promotion would save from here on
    sd = max(o.sd, 1e-9)
    if o.gap - z * sd > allowed:
        if future <= min_samples * o.verdict_cost:
            return 0.0
        return config.revisit * min(1.0, min_samples / max(o.samples, 1))
    remaining = max(_needed(o, allowed, z, min_samples) - o.samples, 0.0)
    fits = NormalDist(o.gap, sd).cdf(allowed)
    if fits * future <= remaining * o.verdict_cost:
        return 0.0
    if remaining == 0:
        return config.revisit
    return min(max(remaining / max(o.next_run, 1.0), config.revisit), config.max_share)


def exploration_shares(
    outlooks: Mapping[str, Outlook],
    budget: float,
    *,
    min_samples: int,
    alpha: float,
    config: ExplorationConfig | None = None,
) -> dict[str, float]:
    """`explore_share` of every unpromoted domain at one step; `budget` is the allowed loss per request over
    all traffic (quality units, as `promotion.plan`'s)."""
    config = config or ExplorationConfig()
    allowed = allowances(outlooks, budget)
    return {
        d: explore_share(o, allowed[d], min_samples=min_samples, alpha=alpha, config=config)
        for d, o in outlooks.items()
    }


def sampling(
    evidence: Sequence[DomainEvidence],
    result: Plan,
    ladder: Sequence[str],
    promotion: PromotionConfig,
    *,
    judge_cost: float,
    next_run: float,
    quality_budget: float,
    unpriced: Collection[str] = (),
    config: ExplorationConfig | None = None,
) -> dict[str, Sampling]:
    """Every domain's shadow share after a `plan` run (as the route table's `sampling` carries it: exploring
    its next cheaper step, or monitoring with `incumbent` serving); the one function the live job and replay
    both use.

    `judge_cost` is a judged verdict's cost as a multiple of the baseline tier's cost per request on the
    domain; `next_run` the requests expected before the next decision as a share of the evidence's
    requests; the budget explored for is the plan's (`quality_budget` times the lower bound of the baseline's
    quality; `quality_budget` itself while that bound is 0), less the route table's expected loss. A tier in `unpriced` has never been called, so
    its cost is unknown: it is taken to be free (optimism; the first verdicts price it).
    """
    config = config or ExplorationConfig()
    ladder = sorted(set(ladder), key=tier_rank)
    traffic = sum(e.traffic for e in evidence) or 1.0
    gaps = gap_estimates(evidence, ladder, promotion)
    # The budget `plan` checks (on the quality's lower bound) once it is known; before, the most it could be.
    budget = result.budget if result.quality.lower > 0 else quality_budget
    budget = max(budget - result.loss_estimate, 0.0)
    out: dict[str, Sampling] = {}
    steps: dict[tuple[str, str], dict[str, Outlook]] = {}
    for e in evidence:
        tier = result.routes.get(e.domain, e.tier)
        k = ladder.index(tier)
        if k < len(ladder) - 1:
            out[e.domain] = Sampling(config.monitor, ladder[k + 1])
            continue
        if k == 0:
            continue
        step = (ladder[k - 1], tier)
        verdicts = e.verdicts.get(step)
        n = verdicts.n if verdicts is not None else 0
        pooled = [v for d in evidence if (v := d.verdicts.get(step)) is not None and v.n]
        pooled_n = sum(v.n for v in pooled)
        pooled_rate = sum(v.worse + v.better for v in pooled) / pooled_n if pooled_n else None
        dis = disagreement_rate(verdicts.worse + verdicts.better if verdicts else 0, n, pooled_rate)
        gap = gaps[(e.domain, *step)]
        candidate_cost = 0.0 if step[0] in unpriced else e.costs[step[0]]
        baseline_cost = e.costs[ladder[-1]]
        steps.setdefault(step, {})[e.domain] = Outlook(
            samples=n,
            gap=gap.mean,
            sd=gap.sd,
            disagreement=dis,
            saving=e.costs[tier] - candidate_cost,
            verdict_cost=candidate_cost + dis * judge_cost * baseline_cost,
            traffic=e.traffic,
            share=e.traffic / traffic,
            next_run=e.traffic * next_run,
        )
    for outlooks in steps.values():
        shares = exploration_shares(
            outlooks, budget, min_samples=promotion.min_samples, alpha=promotion.alpha, config=config
        )
        out |= {d: Sampling(s) for d, s in shares.items()}
    return out
