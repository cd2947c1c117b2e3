"""The statistics behind promotion: evidence types, the incumbent's quality, and empirical-Bayes gaps.

See `tiergate.policies.promotion` for the method as a whole; this module estimates, that one decides.
Pure: no I/O, no clocks, no randomness.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

from tiergate.policies.tiers import tier_rank

_PSEUDO = 10.0  # pseudo-verdicts at the pooled rates that keep small-sample variances honest
_MIN_VARIANCE = 1e-6
_TRANSLATION = 1.0  # standard errors an estimate may be shrunk by at most


@dataclass(frozen=True, slots=True)
class Verdicts:
    """Pairwise judge verdicts of a candidate against the incumbent's answer to the same request."""

    better: int = 0
    same: int = 0
    worse: int = 0

    @property
    def n(self) -> int:
        return self.better + self.same + self.worse

    def __add__(self, other: Verdicts) -> Verdicts:
        return Verdicts(self.better + other.better, self.same + other.same, self.worse + other.worse)


@dataclass(frozen=True, slots=True)
class FeedbackStats:
    """User feedback (0..1 scores) on answers a tier served in one domain: count, sum, sum of squares."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0

    def add(self, score: float) -> FeedbackStats:
        return FeedbackStats(self.n + 1, self.total + score, self.total_sq + score * score)

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    @property
    def variance(self) -> float:
        if self.n < 2:
            return 0.25  # the largest variance a 0..1 score can have
        return max((self.total_sq - self.n * self.mean**2) / (self.n - 1), _MIN_VARIANCE)


@dataclass(frozen=True, slots=True)
class DomainEvidence:
    """Everything known about one domain; tiers run cheapest-first by the ladder in `tiers.py`."""

    domain: str
    name: str
    tier: str  # the tier serving it now
    traffic: float  # requests seen (only the ratios between domains matter)
    costs: Mapping[str, float]  # mean USD per request of each tier on this domain's requests
    verdicts: Mapping[tuple[str, str], Verdicts] = field(default_factory=dict)  # (candidate, incumbent)
    feedback: Mapping[str, FeedbackStats] = field(default_factory=dict)  # tier -> feedback on its answers


@dataclass(frozen=True, slots=True)
class Quality:
    """The incumbent's quality over all traffic: an estimate and a conservative lower bound."""

    estimate: float
    lower: float
    samples: int


@dataclass(frozen=True, slots=True)
class PromotionConfig:
    quality_budget: float = 0.05  # allowed relative loss versus the incumbent, overall
    alpha: float = 0.05  # one-sided error of the budget bound and of each domain's recorded bound
    min_samples: int = 30  # verdicts a domain needs at a step before it can be promoted
    min_feedback: int = 10  # feedback on each side before it counts as evidence
    tau_quantile: float = 0.2  # chi^2 quantile of the Q-profile estimate of the spread between domains


@dataclass(frozen=True, slots=True)
class StepPosterior:
    """A domain's posterior gap at one step: mean, the variance of its own, and its loading on mu."""

    mean: float
    own: float  # posterior variance given mu (independent across domains)
    loading: float  # shrinkage weight on mu: mu's error moves every domain of the step together
    verdicts: Verdicts


@dataclass(frozen=True, slots=True)
class StepPosteriors:
    domains: Mapping[str, StepPosterior]
    var_mu: float

    def variance(self, domain: str) -> float:
        step = self.domains[domain]
        return step.own + step.loading**2 * self.var_mu


def domain_z(alpha: float, samples: int, min_samples: int) -> float:
    """z of a domain's own bound, spending alpha over sample-size epochs so repeated looks stay covered.

    Epoch k holds sample sizes in [min_samples * 2^k, min_samples * 2^(k+1)) and gets alpha / ((k+1)(k+2)),
    which sums to alpha over all epochs.
    """
    k = max(0, int(math.log2(max(samples, 1) / max(min_samples, 1)))) if samples >= min_samples else 0
    return z_value(alpha / ((k + 1) * (k + 2)))


def z_value(alpha: float) -> float:
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    return NormalDist().inv_cdf(1 - alpha)


def wilson_lower(successes: float, n: float, alpha: float) -> float:
    """One-sided Wilson lower bound of a proportion."""
    if n <= 0:
        return 0.0
    z = z_value(alpha)
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z * z / n))


def estimate_quality(
    agreements: int,
    calibrated: int,
    calibrated_score: float,
    disagreements: int,
    disagreement_score: float,
    alpha: float,
) -> Quality:
    """The incumbent's quality from shadow evaluation.

    A judged disagreement reveals the incumbent's score; an agreement found by the cheap check does not, so a
    few agreements are judged anyway (`calibrated`, with the incumbent's scores summing to
    `calibrated_score`). Q = a * q_agree + (1 - a) * q_disagree with a the share of agreements; the lower
    bound is one-sided normal with the delta-method variance of all three estimates, each proportion
    smoothed by z^2/2 pseudo-observations (Agresti-Coull) so that a perfect sample does not claim certainty.
    """
    n = agreements + disagreements
    if n == 0 or (agreements and not calibrated):
        return Quality(0.0, 0.0, calibrated + disagreements)
    z = z_value(alpha)
    share = agreements / n
    q_agree = calibrated_score / calibrated if calibrated else 0.0
    q_dis = disagreement_score / disagreements if disagreements else 0.0
    estimate = share * q_agree + (1 - share) * q_dis

    def smoothed_var(successes: float, count: float) -> float:
        p = (successes + z * z / 4) / (count + z * z / 2)
        return p * (1 - p) / (count + z * z / 2)

    var = share**2 * (smoothed_var(calibrated_score, calibrated) if calibrated else 0.0)
    var += (1 - share) ** 2 * (smoothed_var(disagreement_score, disagreements) if disagreements else 0.0)
    var += smoothed_var(agreements, n) * (q_agree - q_dis) ** 2
    return Quality(estimate, max(0.0, estimate - z * math.sqrt(var)), calibrated + disagreements)


def fill_costs(
    ladder: Sequence[str], observed: Mapping[str, float | None], overall: Mapping[str, float | None]
) -> dict[str, float]:
    """Each tier's mean cost per request on one domain: its own where observed, else over every domain.

    A tier never called anywhere takes the cost of the tier above it, so moving down to it saves nothing
    (and is never chosen) until it has been seen; when no tier above is known either, the most capable
    known one's. With nothing known at all every cost is 0.
    """

    def known(value: float | None) -> bool:
        return value is not None and math.isfinite(value)

    costs: dict[str, float | None] = {}
    for tier in ladder:
        own = observed.get(tier)
        costs[tier] = own if known(own) else overall.get(tier)
    for k in range(len(ladder) - 2, -1, -1):
        if not known(costs[ladder[k]]):
            costs[ladder[k]] = costs[ladder[k + 1]]
    found = [c for c in costs.values() if c is not None and math.isfinite(c)]
    top = found[-1] if found else 0.0
    return {t: c if c is not None and math.isfinite(c) else top for t, c in costs.items()}


def ladder_steps(tiers: Sequence[str]) -> list[tuple[str, str]]:
    ordered = sorted(tiers, key=tier_rank)
    return [(ordered[i], ordered[i + 1]) for i in range(len(ordered) - 1)]


def _raw(verdicts: Verdicts, pooled_worse: float, pooled_better: float) -> tuple[float, float]:
    """Gap estimate and its sampling variance, with pseudo-verdicts at the pooled rates."""
    n = verdicts.n
    gap = (verdicts.worse - verdicts.better) / n
    pw = (verdicts.worse + _PSEUDO * pooled_worse) / (n + _PSEUDO)
    pb = (verdicts.better + _PSEUDO * pooled_better) / (n + _PSEUDO)
    return gap, max(pw + pb - (pw - pb) ** 2, _MIN_VARIANCE) / n


def _with_feedback(
    gap: float, var: float, inc: FeedbackStats | None, cand: FeedbackStats | None, minimum: int
) -> tuple[float, float]:
    if inc is None or cand is None or inc.n < minimum or cand.n < minimum:
        return gap, var
    fb_gap = inc.mean - cand.mean
    fb_var = inc.variance / inc.n + cand.variance / cand.n
    weight = fb_var / (var + fb_var)
    return weight * gap + (1 - weight) * fb_gap, var * fb_var / (var + fb_var)


def _q_statistic(raw: Sequence[tuple[float, float]], tau2: float) -> float:
    weights = [1 / (var + tau2) for _, var in raw]
    mu = sum(w * g for w, (g, _) in zip(weights, raw, strict=True)) / sum(weights)
    return sum(w * (g - mu) ** 2 for w, (g, _) in zip(weights, raw, strict=True))


def _between_domain_variance(raw: Sequence[tuple[float, float]], quantile: float) -> float:
    """tau^2 by the Q-profile method: Q(tau^2) equals the `quantile` of chi^2 with k-1 degrees of freedom.

    Q(tau^2) falls as tau^2 grows; a low quantile gives an upper confidence limit for tau^2. Over-estimating
    tau^2 only shrinks less (wider, safer posteriors), while under-estimating it, as the moment estimator
    does when each domain has few verdicts, pulls a genuinely different domain to the pool's mean.
    """
    from scipy.stats import chi2  # deferred: importing scipy.stats costs a second, `tiergate --help` none

    k = len(raw)
    if k < 2:
        return _MIN_VARIANCE
    target = float(chi2.ppf(quantile, k - 1))
    if _q_statistic(raw, 0.0) <= target:
        return _MIN_VARIANCE
    low, high = 0.0, 1.0
    while _q_statistic(raw, high) > target and high < 1e3:
        high *= 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if _q_statistic(raw, mid) > target else (low, mid)
    return max(high, _MIN_VARIANCE)


def posteriors(
    evidence: Sequence[DomainEvidence], step: tuple[str, str], config: PromotionConfig
) -> StepPosteriors:
    """Empirical-Bayes posterior of each domain's gap at one step (candidate, incumbent)."""
    observed = [(e, e.verdicts.get(step, Verdicts())) for e in evidence]
    total = sum((v for _, v in observed), Verdicts())
    if total.n == 0:
        # Nothing measured at this step anywhere: the prior is all there is, and it is wide.
        return StepPosteriors({e.domain: StepPosterior(0.0, 1.0, 0.0, Verdicts()) for e in evidence}, 0.0)
    pooled_worse, pooled_better = total.worse / total.n, total.better / total.n
    raw: dict[str, tuple[float, float]] = {}
    for e, v in observed:
        if v.n:
            gap, var = _raw(v, pooled_worse, pooled_better)
            raw[e.domain] = _with_feedback(
                gap, var, e.feedback.get(step[1]), e.feedback.get(step[0]), config.min_feedback
            )
    tau2 = _between_domain_variance(list(raw.values()), config.tau_quantile)
    re_weights = {d: 1 / (var + tau2) for d, (_, var) in raw.items()}
    mu = sum(re_weights[d] * raw[d][0] for d in raw) / sum(re_weights.values())
    var_mu = 1 / sum(re_weights.values())
    # Morris (1983): tau^2 is itself estimated, so shrink a little less and widen by its uncertainty.
    k = len(raw)
    damping = (k - 3) / (k - 1) if k > 3 else 0.0
    extra = 2 / (k - 3) if k > 3 else 0.0
    out: dict[str, StepPosterior] = {}
    for e, v in observed:
        if e.domain not in raw:
            out[e.domain] = StepPosterior(mu, tau2, 1.0, v)
            continue
        gap, var = raw[e.domain]
        shrink = damping * var / (var + tau2)
        own = (1 - shrink) * var + extra * shrink**2 * (gap - mu) ** 2
        # Limited translation (Efron & Morris, 1972), one-sided: pooling may never make a domain look more
        # than one standard error better than its own data, so a domain unlike the others keeps its figure.
        mean = max(shrink * mu + (1 - shrink) * gap, gap - _TRANSLATION * math.sqrt(var))
        out[e.domain] = StepPosterior(mean, own, shrink, v)
    return StepPosteriors(out, var_mu)


@dataclass(frozen=True, slots=True)
class GapEstimate:
    """A domain's posterior quality gap at one step, for reports and `--dry-run` evidence."""

    mean: float
    sd: float
    bound: float  # the domain's own bound (alpha spent over sample-size epochs)
    samples: int


def gap_estimates(
    evidence: Sequence[DomainEvidence], tiers: Sequence[str], config: PromotionConfig = PromotionConfig()
) -> dict[tuple[str, str, str], GapEstimate]:
    """(domain, candidate, incumbent) -> posterior gap, for every domain and adjacent pair of tiers."""
    out = {}
    for step in ladder_steps(sorted(set(tiers), key=tier_rank)):
        posts = posteriors(evidence, step, config)
        for domain, post in posts.domains.items():
            sd = math.sqrt(posts.variance(domain))
            z = domain_z(config.alpha, post.verdicts.n, config.min_samples)
            out[(domain, *step)] = GapEstimate(post.mean, sd, post.mean + z * sd, post.verdicts.n)
    return out
