from __future__ import annotations

import pytest

from tiergate.policies.promotion import (
    DomainEvidence,
    FeedbackStats,
    PromotionConfig,
    Quality,
    Verdicts,
    changelog,
    plan,
)

TWO = ("student", "teacher")
COSTS = {"student": 0.01, "teacher": 1.0}
QUALITY = Quality(estimate=0.8, lower=0.8, samples=1000)  # budget 0.04 at the default 5%
STEP = ("student", "teacher")


def domain(
    name: str,
    better: int,
    same: int,
    worse: int,
    *,
    tier: str = "teacher",
    traffic: float = 100.0,
    costs: dict[str, float] | None = None,
    feedback: dict[str, FeedbackStats] | None = None,
) -> DomainEvidence:
    return DomainEvidence(
        domain=name,
        name=f"{name} terms",
        tier=tier,
        traffic=traffic,
        costs=costs or COSTS,
        verdicts={STEP: Verdicts(better=better, same=same, worse=worse)},
        feedback=feedback or {},
    )


def scaled(rates: tuple[float, float, float], n: int) -> tuple[int, int, int]:
    better, worse = round(rates[0] * n), round(rates[2] * n)
    return better, n - better - worse, worse


EQUAL = (0.05, 0.90, 0.05)  # the candidate is as good: gap 0
WORSE = (0.0, 0.6, 0.4)  # clearly worse: gap 0.4


@pytest.mark.parametrize(
    ("rates", "n", "promoted"),
    [
        (EQUAL, 10, False),  # below min_samples: no promotion, whatever the prior
        (EQUAL, 19, False),
        (EQUAL, 40, True),  # clearly equal, enough samples for a fifth of the traffic
        (EQUAL, 400, True),
        (WORSE, 40, False),  # clearly worse: never, however much evidence
        (WORSE, 400, False),
        (WORSE, 4000, False),
        ((0.2, 0.8, 0.0), 40, True),  # the candidate is better
    ],
)
def test_single_domain_promotion(rates: tuple[float, float, float], n: int, promoted: bool) -> None:
    # A second, unremarkable domain keeps the empirical-Bayes pool from being a single point.
    other = domain("other", *scaled((0.05, 0.75, 0.2), 200), traffic=400)
    result = plan([domain("d", *scaled(rates, n)), other], TWO, QUALITY)
    assert (result.routes["d"] == "student") is promoted
    assert result.loss_bound <= result.budget


def test_the_budget_binds_and_moves_more_when_larger() -> None:
    # Ten equally sized domains, each with a gap of 0.08: at a 4% loss budget only about half can move.
    evidence = [domain(f"d{i}", *scaled((0.02, 0.88, 0.10), 2000)) for i in range(10)]
    tight = plan(evidence, TWO, QUALITY)
    moved = sum(t == "student" for t in tight.routes.values())
    assert 1 <= moved < 10
    assert tight.loss_bound <= tight.budget == pytest.approx(0.04)
    # The bound is on the sum: it must cover the summed posterior means.
    assert tight.loss_estimate <= tight.loss_bound
    loose = plan(evidence, TWO, Quality(0.8, 0.8, 1000), PromotionConfig(quality_budget=0.10))
    assert sum(t == "student" for t in loose.routes.values()) > moved


def test_budget_goes_to_the_cheapest_quality_per_dollar() -> None:
    # Same gap, but `pricey` saves ten times as much per request: it must be chosen first.
    cheap_saving = {"student": 0.09, "teacher": 0.1}
    evidence = [
        domain("small", *scaled((0.02, 0.88, 0.10), 2000), costs=cheap_saving),
        domain("pricey", *scaled((0.02, 0.88, 0.10), 2000)),
        domain("bad", *scaled((0.0, 0.7, 0.3), 2000)),
    ]
    result = plan(evidence, TWO, QUALITY)
    assert result.routes == {"small": "teacher", "pricey": "student", "bad": "teacher"}


def test_a_better_candidate_pays_for_a_worse_one() -> None:
    # Promoting `better` alone frees budget; together with `costly` the sum stays within it.
    evidence = [
        domain("better", *scaled((0.30, 0.70, 0.0), 1000)),
        domain("costly", *scaled((0.0, 0.85, 0.15), 1000)),
    ]
    result = plan(evidence, TWO, QUALITY)
    assert result.routes == {"better": "student", "costly": "student"}
    alone = plan([evidence[1], domain("x", *scaled((0.0, 0.85, 0.15), 1000))], TWO, QUALITY)
    assert alone.routes["costly"] == "teacher"


def test_demotion_when_monitoring_shows_the_gap() -> None:
    promoted_fine = domain("fine", *scaled(EQUAL, 300), tier="student")
    promoted_bad = domain("bad", *scaled((0.0, 0.7, 0.3), 300), tier="student")
    result = plan([promoted_fine, promoted_bad, domain("other", *scaled(EQUAL, 300))], TWO, QUALITY)
    assert result.routes["bad"] == "teacher"
    assert result.routes["fine"] == "student"
    demotions = [d for d in result.decisions if d.action == "demote"]
    assert [(d.domain, d.from_tier, d.to_tier) for d in demotions] == [("bad", "student", "teacher")]
    assert result.loss_bound <= result.budget


def test_promoted_domains_stay_while_the_budget_holds() -> None:
    # Slightly worse than a newcomer, but the bound holds: no churn.
    kept = domain("kept", *scaled((0.03, 0.9, 0.07), 400), tier="student")
    result = plan([kept, domain("new", *scaled(EQUAL, 400))], TWO, QUALITY)
    assert result.routes["kept"] == "student"
    assert all(d.action == "promote" for d in result.decisions)


def test_feedback_counts_as_evidence() -> None:
    # The judge sees no difference, but users rate the candidate's answers far lower.
    fb = {"teacher": _feedback([1.0] * 45 + [0.0] * 5), "student": _feedback([1.0] * 20 + [0.0] * 30)}
    evidence = [domain("d", *scaled(EQUAL, 60), feedback=fb), domain("other", *scaled(EQUAL, 60))]
    assert plan(evidence, TWO, QUALITY).routes["d"] == "teacher"
    too_little = {t: _feedback(scores[:5]) for t, scores in (("teacher", [1.0] * 5), ("student", [0.0] * 5))}
    evidence[0] = domain("d", *scaled(EQUAL, 60), feedback=too_little)
    assert plan(evidence, TWO, QUALITY).routes["d"] == "student"


def _feedback(scores: list[float]) -> FeedbackStats:
    fb = FeedbackStats()
    for s in scores:
        fb = fb.add(s)
    return fb


def test_three_tiers_move_one_step_per_verdict_pair_and_losses_add_up() -> None:
    costs = {"student": 0.01, "ta": 0.1, "teacher": 1.0}
    three = ("student", "ta", "teacher")
    upper = {("ta", "teacher"): Verdicts(50, 900, 50)}
    first = plan([DomainEvidence("d", "d", "teacher", 100, costs, upper)], three, QUALITY)
    assert first.routes == {"d": "ta"}  # nothing is known yet about the student against the TA
    both = {**upper, ("student", "ta"): Verdicts(50, 900, 50)}
    second = plan([DomainEvidence("d", "d", "ta", 100, costs, both)], three, QUALITY)
    assert second.routes == {"d": "student"}
    assert [(d.from_tier, d.to_tier) for d in second.decisions] == [("ta", "student")]
    # The loss at `student` adds both steps' uncertainty, so its bound exceeds the bound at `ta` alone.
    assert second.loss_bound > first.loss_bound
    # With too little evidence on the upper step, the lower one cannot be reached from the teacher.
    weak = {("ta", "teacher"): Verdicts(1, 5, 1), ("student", "ta"): Verdicts(50, 900, 50)}
    assert plan([DomainEvidence("d", "d", "teacher", 100, costs, weak)], three, QUALITY).routes == {
        "d": "teacher"
    }


def test_changelog_names_every_decision_with_its_evidence() -> None:
    result = plan([domain("d", *scaled(EQUAL, 100)), domain("e", *scaled(WORSE, 100))], TWO, QUALITY)
    text = changelog(result)
    (decision,) = result.decisions
    assert (decision.domain, decision.from_tier, decision.to_tier, decision.samples) == (
        "d",
        "teacher",
        "student",
        100,
    )
    assert decision.worse_rate == pytest.approx(0.05) and decision.better_rate == pytest.approx(0.05)
    assert decision.gap <= decision.bound
    assert "promote d terms [d]: teacher -> student; 100 verdicts" in text
    assert f"bound {decision.bound:+.3f}" in text
    assert changelog(plan([domain("e", *scaled(WORSE, 100))], TWO, QUALITY)).endswith("no change")


@pytest.mark.parametrize(
    ("evidence", "tiers", "message"),
    [
        ([], ("teacher",), "at least two tiers"),
        ([domain("d", 1, 1, 1, costs={"teacher": 1.0})], TWO, "costs"),
        ([domain("d", 1, 1, 1, tier="supervisor")], TWO, "tier"),
    ],
)
def test_bad_input_is_rejected(evidence: list[DomainEvidence], tiers: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan(evidence, tiers, QUALITY)


def test_no_quality_evidence_means_no_budget() -> None:
    result = plan([domain("d", *scaled(EQUAL, 400))], TWO, Quality(0.0, 0.0, 0))
    assert result.budget == 0.0 and result.routes == {"d": "teacher"}


def test_budget_is_kept_for_domains_still_gathering_evidence() -> None:
    # `big` has enough verdicts and fits the budget alone, but five smaller domains, still below
    # min_samples, look far better: the budget is kept for them.
    big = domain("big", *scaled((0.02, 0.86, 0.12), 400), traffic=200)
    promising = [domain(f"s{i}", *scaled((0.03, 0.88, 0.09), 20), traffic=160) for i in range(5)]
    config = PromotionConfig(min_samples=30)
    assert plan([big, *promising], TWO, QUALITY, config).routes["big"] == "teacher"
    worse = [domain(f"s{i}", *scaled((0.0, 0.7, 0.3), 20), traffic=160) for i in range(5)]
    assert plan([big, *worse], TWO, QUALITY, config).routes["big"] == "student"
