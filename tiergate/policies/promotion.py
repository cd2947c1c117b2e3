"""Which domains a cheaper tier may serve, within a tenant's quality budget: promotion and demotion.

Evidence
    For each domain and each step down the ladder (candidate tier vs the tier above it), shadow evaluation
    yields pairwise verdicts on the same request: the candidate's answer was `better`, `same` (as good,
    including agreements found by the cheap check) or `worse` than the incumbent's. A verdict is a sample of
    d = incumbent score - candidate score in {-1, 0, +1}, so the domain's quality gap g is estimated by
    (worse - better) / n, with a sampling variance from verdict rates smoothed by ten pseudo-verdicts at the
    pooled rates (a domain with a few identical verdicts must not claim zero variance). User feedback (0..1
    scores on served answers) adds an independent estimate where both tiers have some in the domain (mean
    feedback of the incumbent minus the candidate's), combined with the judge's by inverse-variance weight.

Estimation: empirical Bayes across domains
    Per step, the gaps are pooled in a normal hierarchical model g_d ~ N(mu, tau^2), ghat_d ~ N(g_d, s_d^2).
    tau^2 comes from the Q-profile method at the 20% quantile of chi^2_(k-1), deliberately on the high side:
    the moment estimator collapses towards 0 when each domain has a few dozen verdicts, and then shrinks a
    genuinely different domain (MMLU's moral scenarios, gap 0.38) to the pool's mean. Shrinkage is damped
    and the posterior widened for tau^2 being estimated (Morris, 1983). Each domain's posterior has a mean
    m_d, a variance of its own, and a loading on mu, since an error in mu moves every shrunk estimate of the
    step together.

Spending the budget
    The tenant allows the served quality to fall at most `quality_budget` (default 5%) below the incumbent's
    over all traffic. The incumbent's quality Q is known only through judged pairs (`estimate_quality`), so
    the allowed loss is B = quality_budget * Q_lower. The loss of a route table is L = sum_d w_d G_d (traffic
    shares w_d; G_d the step gaps summed from the baseline tier down to the domain's tier) and its bound is
    U = E[L] + z_(1-alpha) * sd[L] under the posterior, with Var[L] = sum_d w_d^2 own_d + sum_steps
    (sum_d w_d loading_d)^2 var(mu). Bounding the sum, not summing per-domain bounds, is what makes a 5%
    budget usable: per-domain half-widths add up linearly, the sum's uncertainty only in quadrature. Moves
    are taken greedily by their increase of U per dollar saved (traffic-weighted), so domains where the
    candidate is better come first, then the cheapest quality per dollar, while U <= B.

False-promotion control
    - A domain needs `min_samples` verdicts at the step before it can be promoted.
    - It is promoted only if it would also be chosen were every domain, including those still gathering
      verdicts, competing at its posterior mean: the first domains to reach `min_samples` (the largest) do
      not spend the budget better ones will need.
    - Each promotion records its claim, the domain's own bound m_d + z_d * sd_d, with alpha spent over
      sample-size epochs (epoch k, n in [min_samples 2^k, min_samples 2^(k+1)), gets alpha / ((k+1)(k+2)),
      summing to alpha) so that looking again at every run does not inflate the chance of a false claim. A
      false promotion is one whose true gap exceeds its claim.
    - The route table's total loss exceeds the budget with posterior probability at most alpha at each run.
      Promoted traffic keeps a monitoring sample (served by the incumbent, the candidate shadowed,
      `exploration.sampling`); when a run finds U > B it demotes, domain by domain, the move that lowers U most
      per dollar given up, until U <= B. Promoted domains are otherwise kept (no churn on noise).

The live `tiergate promote` job and `tiergate replay` call the same functions: `estimate_quality` for Q,
`fill_costs` for each domain's cost per tier, `plan` for the decisions, `exploration.sampling` for the
shadow share per (domain, candidate), and `changelog` for the human-readable record. Pure: no I/O, no clocks, no randomness.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from tiergate.policies.promotion_stats import (
    DomainEvidence,
    FeedbackStats,
    GapEstimate,
    PromotionConfig,
    Quality,
    StepPosteriors,
    Verdicts,
    domain_z,
    estimate_quality,
    fill_costs,
    gap_estimates,
    ladder_steps,
    posteriors,
    wilson_lower,
    z_value,
)
from tiergate.policies.tiers import tier_rank

__all__ = [
    "DomainEvidence",
    "FeedbackStats",
    "GapEstimate",
    "Plan",
    "PromotionConfig",
    "PromotionDecision",
    "Quality",
    "Verdicts",
    "changelog",
    "domain_z",
    "estimate_quality",
    "fill_costs",
    "gap_estimates",
    "plan",
    "wilson_lower",
]


@dataclass(frozen=True, slots=True)
class PromotionDecision:
    """One line of the changelog: a domain moving between tiers, with the evidence for it."""

    domain: str
    name: str
    action: Literal["promote", "demote"]
    from_tier: str
    to_tier: str
    samples: int  # verdicts at the step
    worse_rate: float  # share of verdicts where the cheaper tier was worse
    better_rate: float  # share where it was better
    gap: float  # posterior mean quality gap of the cheaper tier at this step
    bound: float  # upper bound of that gap
    saving: float  # USD per request saved by the cheaper tier on this domain


@dataclass(frozen=True, slots=True)
class Plan:
    """The decisions of one run and the route table they produce."""

    routes: Mapping[str, str]  # domain -> tier
    decisions: tuple[PromotionDecision, ...]
    budget: float  # allowed loss, absolute (quality units per request)
    loss_estimate: float  # posterior mean of the route table's loss
    loss_bound: float  # its upper bound; <= budget unless even demoting everything could not fix it
    quality: Quality


@dataclass(slots=True)
class _Table:
    """Mutable working state of one run: each domain's tier and the running sums of the loss bound.

    Var(loss) = sum_d w_d^2 own_d + sum_steps (sum_d w_d loading_d)^2 var_mu: the domains' own errors are
    independent, but an error in a step's mu moves every shrunk estimate of that step together.
    """

    evidence: Mapping[str, DomainEvidence]
    posts: Mapping[tuple[str, str], StepPosteriors]
    baseline: str
    shares: Mapping[str, float]
    z: float
    tiers: dict[str, str]
    alpha: float = 0.05
    min_samples: int = 20
    mean: float = 0.0
    own: float = 0.0
    loading: dict[tuple[str, str], float] = field(default_factory=dict)

    def _steps(self, tier: str) -> list[tuple[str, str]]:
        """The steps between the baseline and `tier`."""
        return [
            s
            for s in self.posts
            if tier_rank(s[0]) >= tier_rank(tier) and tier_rank(s[1]) <= tier_rank(self.baseline)
        ]

    def contribution(self, domain: str, tier: str) -> tuple[float, float, dict[tuple[str, str], float]]:
        w = self.shares[domain]
        mean = own = 0.0
        loading: dict[tuple[str, str], float] = {}
        for s in self._steps(tier):
            step = self.posts[s].domains[domain]
            mean += w * step.mean
            own += w * w * step.own
            loading[s] = w * step.loading
        return mean, own, loading

    def bound(self, mean: float, own: float, loading: Mapping[tuple[str, str], float]) -> float:
        var = own + sum(load**2 * self.posts[s].var_mu for s, load in loading.items())
        return mean + self.z * math.sqrt(max(var, 0.0))

    def copy(self, *, z: float) -> _Table:
        return dataclasses.replace(self, z=z, tiers=dict(self.tiers), loading=dict(self.loading))

    def current(self) -> float:
        return self.bound(self.mean, self.own, self.loading)

    def delta(self, domain: str, to_tier: str) -> tuple[float, float, dict[tuple[str, str], float], float]:
        """(mean, own variance, loadings, saving per request overall) if `domain` moved to `to_tier`."""
        old = self.contribution(domain, self.tiers[domain])
        new = self.contribution(domain, to_tier)
        loading = dict(self.loading)
        for s in set(old[2]) | set(new[2]):
            loading[s] = loading.get(s, 0.0) - old[2].get(s, 0.0) + new[2].get(s, 0.0)
        costs = self.evidence[domain].costs
        saving = self.shares[domain] * (costs[self.tiers[domain]] - costs[to_tier])
        return self.mean - old[0] + new[0], self.own - old[1] + new[1], loading, saving

    def bound_after(self, domain: str, to_tier: str) -> tuple[float, float]:
        mean, own, loading, saving = self.delta(domain, to_tier)
        return self.bound(mean, own, loading), saving

    def add(self, domain: str) -> None:
        mean, own, loading = self.contribution(domain, self.tiers[domain])
        self.mean += mean
        self.own += own
        for s, load in loading.items():
            self.loading[s] = self.loading.get(s, 0.0) + load

    def move(self, domain: str, to_tier: str) -> None:
        self.mean, self.own, self.loading, _ = self.delta(domain, to_tier)
        self.tiers[domain] = to_tier


def _decision(
    table: _Table, domain: str, from_tier: str, to_tier: str, action: Literal["promote", "demote"]
) -> PromotionDecision:
    cheap, dear = (to_tier, from_tier) if action == "promote" else (from_tier, to_tier)
    posts = table.posts[(cheap, dear)]
    step = posts.domains[domain]
    v = step.verdicts
    costs = table.evidence[domain].costs
    return PromotionDecision(
        domain=domain,
        name=table.evidence[domain].name,
        action=action,
        from_tier=from_tier,
        to_tier=to_tier,
        samples=v.n,
        worse_rate=v.worse / v.n if v.n else 0.0,
        better_rate=v.better / v.n if v.n else 0.0,
        gap=step.mean,
        bound=step.mean + domain_z(table.alpha, v.n, table.min_samples) * math.sqrt(posts.variance(domain)),
        saving=costs[dear] - costs[cheap],
    )


def _above(ladder: Sequence[str], tier: str) -> str:
    return ladder[ladder.index(tier) + 1]


def _greedy(
    table: _Table, ladder: Sequence[str], budget: float, eligible: Callable[[str, tuple[str, str]], bool]
) -> list[tuple[str, str]]:
    """Move domains one step down, best increase of the bound per dollar first, while it stays in budget."""
    moves: list[tuple[str, str]] = []
    while True:
        best: tuple[float, str, str] | None = None
        current = table.current()
        for d, tier in table.tiers.items():
            if tier == ladder[0]:
                continue
            down = ladder[ladder.index(tier) - 1]
            if not eligible(d, (down, tier)):
                continue
            after, saving = table.bound_after(d, down)
            if saving <= 0 or after > budget:
                continue
            score = (after - current) / saving
            if best is None or score < best[0]:
                best = (score, d, down)
        if best is None:
            return moves
        _, d, down = best
        table.move(d, down)
        moves.append((d, down))


def plan(
    evidence: Sequence[DomainEvidence],
    tiers: Sequence[str],
    quality: Quality,
    config: PromotionConfig | None = None,
) -> Plan:
    """Decide each domain's tier for the next period (see the module docstring for the method).

    `tiers` are the configured tiers; the most capable is the baseline whose quality the budget protects.
    Every domain's `costs` must name every tier. Domains keep their current tier unless a decision says
    otherwise.
    """
    config = config or PromotionConfig()
    ladder = sorted(set(tiers), key=tier_rank)
    if len(ladder) < 2:
        raise ValueError("promotion needs at least two tiers")
    for e in evidence:
        missing = [t for t in ladder if t not in e.costs]
        if e.tier not in ladder or missing:
            raise ValueError(f"domain {e.domain}: tier {e.tier!r} or costs of {missing} unknown")
    z = z_value(config.alpha)
    traffic = sum(e.traffic for e in evidence)
    shares = {e.domain: (e.traffic / traffic if traffic > 0 else 0.0) for e in evidence}
    steps = ladder_steps(ladder)
    table = _Table(
        evidence={e.domain: e for e in evidence},
        posts={s: posteriors(evidence, s, config) for s in steps},
        baseline=ladder[-1],
        shares=shares,
        z=z,
        tiers={e.domain: e.tier for e in evidence},
        alpha=config.alpha,
        min_samples=config.min_samples,
    )
    for e in evidence:
        table.add(e.domain)
    budget = config.quality_budget * quality.lower
    decisions: list[PromotionDecision] = []

    # Demote while the bound shows the budget broken: each time the move that lowers the bound most per
    # dollar it gives up.
    while table.current() > budget:
        best: tuple[float, str, str] | None = None
        for d, tier in table.tiers.items():
            if tier == ladder[-1]:
                continue
            up = ladder[ladder.index(tier) + 1]
            after, saving = table.bound_after(d, up)
            relief = table.current() - after
            score = relief / max(-saving, 1e-12)
            if relief > 0 and (best is None or score > best[0]):
                best = (score, d, up)
        if best is None:
            break
        _, d, up = best
        decisions.append(_decision(table, d, table.tiers[d], up, "demote"))
        table.move(d, up)

    # Promote while the bound stays within the budget, cheapest quality per dollar first; but only moves that
    # would also be chosen if every domain competed at its current posterior mean, so that the first domains
    # to gather enough evidence do not spend the budget that better ones, still measuring, will need.
    demoted = {dec.domain for dec in decisions}
    worthwhile = _greedy(table.copy(z=0.0), ladder, budget, lambda d, step: d not in demoted)
    for d, down in _greedy(
        table,
        ladder,
        budget,
        lambda d, step: (
            d not in demoted
            and table.posts[step].domains[d].verdicts.n >= config.min_samples
            and (d, step[0]) in worthwhile
        ),
    ):
        decisions.append(_decision(table, d, _above(ladder, down), down, "promote"))

    return Plan(
        routes=dict(table.tiers),
        decisions=tuple(decisions),
        budget=budget,
        loss_estimate=table.mean,
        loss_bound=table.current(),
        quality=quality,
    )


def changelog(plan: Plan) -> str:
    """The human-readable record of a run: one line per decision with its evidence."""
    head = (
        f"budget {plan.budget:.4f} (quality {plan.quality.estimate:.3f}, "
        f"lower bound {plan.quality.lower:.3f}); "
        f"route table loss {plan.loss_estimate:+.4f}, bound {plan.loss_bound:.4f}"
    )
    lines = [head]
    for d in plan.decisions:
        lines.append(
            f"{d.action} {d.name} [{d.domain}]: {d.from_tier} -> {d.to_tier}; {d.samples} verdicts, "
            f"worse {d.worse_rate:.1%}, better {d.better_rate:.1%}; gap {d.gap:+.3f}, bound {d.bound:+.3f}; "
            f"saves ${d.saving:.6f}/request"
        )
    if not plan.decisions:
        lines.append("no change")
    return "\n".join(lines)
