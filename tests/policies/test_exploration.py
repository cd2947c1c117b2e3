from __future__ import annotations

import dataclasses

import pytest

from tiergate.policies.exploration import (
    JUDGE_COST,
    ExplorationConfig,
    Outlook,
    allowances,
    evaluation_allowed,
    exploration_shares,
    explore_share,
    judge_cost,
    moved,
)
from tiergate.policies.route_table import Sampling

CONFIG = ExplorationConfig()
PROMISING = Outlook(
    samples=10, gap=0.0, sd=0.05, disagreement=0.2, saving=0.01, verdict_cost=0.003,
    traffic=1000, share=0.5, next_run=200,
)  # fmt: skip


def share(o: Outlook, allowed: float = 0.05) -> float:
    return explore_share(o, allowed, min_samples=30, alpha=0.05, config=CONFIG)


def test_a_promising_domain_gets_the_verdicts_it_still_needs_by_the_next_run() -> None:
    s = share(PROMISING)
    # need = 0.2 * 1.645^2 / 0.05^2 = 216 verdicts; 206 still needed over 200 requests: capped at max_share.
    assert s == CONFIG.max_share
    nearly = dataclasses.replace(PROMISING, samples=200)
    assert share(nearly) == pytest.approx((0.2 * 1.6449**2 / 0.05**2 - 200) / 200, abs=0.01)


def test_futility_stops_exploring_and_revisits_at_a_low_decaying_rate() -> None:
    hopeless = dataclasses.replace(PROMISING, samples=30, gap=0.4, sd=0.05)
    assert share(hopeless) == CONFIG.revisit
    assert share(dataclasses.replace(hopeless, samples=300)) == pytest.approx(CONFIG.revisit / 10)
    # Where a promotion could never repay min_samples verdicts, not even a revisit.
    assert share(dataclasses.replace(hopeless, traffic=5)) == 0.0


def test_no_exploration_where_the_evaluation_cannot_pay_for_itself() -> None:
    assert share(dataclasses.replace(PROMISING, traffic=20)) == 0.0  # too little traffic to follow
    assert share(dataclasses.replace(PROMISING, verdict_cost=1.0)) == 0.0  # a judge dearer than the saving
    assert share(dataclasses.replace(PROMISING, saving=0.0)) == 0.0


def test_allowances_split_the_budget_by_gap_per_dollar() -> None:
    good = dataclasses.replace(PROMISING, gap=0.02, share=0.5)
    bad = dataclasses.replace(PROMISING, gap=0.3, share=0.5)
    allowed = allowances({"good": good, "bad": bad}, budget=0.04)
    # The good domain alone fits (0.01 of 0.04); adding the bad one overflows: the price is bad's ratio.
    assert allowed["good"] == pytest.approx(0.04 / 0.5)
    assert allowed["bad"] == pytest.approx(0.04 / 0.5)
    shares = exploration_shares({"good": good, "bad": bad}, 0.04, min_samples=30, alpha=0.05)
    assert shares["good"] > 0 and shares["bad"] == CONFIG.revisit


@pytest.mark.parametrize(
    ("spent", "upcoming", "serving", "share", "allowed"),
    [
        (0.0, 5.0, 100.0, 0.05, True),  # exactly the cap
        (0.0, 5.1, 100.0, 0.05, False),
        (4.0, 1.5, 100.0, 0.05, False),  # what was spent counts
        (0.0, 0.1, 0.0, 0.05, False),  # nothing served yet: nothing to take a share of
        (1e9, 1.0, 0.0, None, True),  # no cap
    ],
)
def test_the_hard_cap_on_evaluation_spend(
    spent: float, upcoming: float, serving: float, share: float | None, allowed: bool
) -> None:
    assert evaluation_allowed(spent, upcoming, serving, share) is allowed


def test_a_judged_verdicts_price_is_measured_once_paid_for() -> None:
    assert judge_cost(0.0, 0.0) == JUDGE_COST  # nothing judged yet: the prior
    assert judge_cost(6.0, 2.0) == 3.0  # the judge cost three baseline answers on the requests judged


@pytest.mark.parametrize(
    ("old", "new", "written"),
    [
        (None, Sampling(0.1), True),  # a new domain
        (Sampling(0.1), Sampling(0.11), False),  # drift within the tolerance
        (Sampling(0.1), Sampling(0.2), True),
        (Sampling(0.0), Sampling(0.005), True),  # starting to explore, however little
        (Sampling(0.0), Sampling(0.0), False),
        (Sampling(0.03), Sampling(0.03, "teacher"), True),  # exploring -> monitoring
    ],
)
def test_a_share_is_rewritten_only_when_it_moved(old: Sampling | None, new: Sampling, written: bool) -> None:
    assert moved(old, new) is written
