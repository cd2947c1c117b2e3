from __future__ import annotations

import math

import pytest

from tests.policies.test_promotion import QUALITY, TWO, domain, scaled
from tiergate.policies.promotion import plan
from tiergate.policies.promotion_stats import domain_z, estimate_quality, gap_estimates, wilson_lower


@pytest.mark.parametrize(
    ("successes", "n", "alpha", "expected"),
    [(50, 100, 0.05, 0.41885), (0, 10, 0.05, 0.0), (10, 10, 0.05, 0.78706), (0, 0, 0.05, 0.0)],
)
def test_wilson_lower_bound(successes: float, n: float, alpha: float, expected: float) -> None:
    assert wilson_lower(successes, n, alpha) == pytest.approx(expected, abs=1e-4)


def test_incumbent_quality_from_judged_pairs() -> None:
    q = estimate_quality(
        agreements=80, calibrated=40, calibrated_score=36, disagreements=20, disagreement_score=15, alpha=0.05
    )
    assert q.estimate == pytest.approx(0.8 * 0.9 + 0.2 * 0.75)
    assert 0.6 < q.lower < q.estimate
    assert q.samples == 60
    # Agreements alone reveal nothing about absolute quality: no budget can be spent.
    assert estimate_quality(100, 0, 0, 0, 0, 0.05).lower == 0.0
    bigger = estimate_quality(800, 400, 360, 200, 150, 0.05)
    assert q.lower < bigger.lower < bigger.estimate == pytest.approx(q.estimate)


def test_posterior_bounds_cover_a_simulated_truth() -> None:
    """Across many domains drawn with known gaps, promoted domains rarely exceed their recorded bound."""
    import numpy as np

    rng = np.random.default_rng(7)
    false = promoted = 0
    for _ in range(40):
        gaps = rng.uniform(-0.05, 0.3, size=30)
        evidence = []
        for i, g in enumerate(gaps):
            better = 0.05
            worse = better + g
            n = int(rng.integers(20, 120))
            counts = rng.multinomial(n, [better, 1 - better - worse, worse])
            evidence.append(domain(f"d{i}", int(counts[0]), int(counts[1]), int(counts[2])))
        result = plan(evidence, TWO, QUALITY)
        for d in result.decisions:
            promoted += 1
            false += gaps[int(d.domain[1:])] > d.bound
        true_loss = sum(gaps[int(d[1:])] for d, t in result.routes.items() if t == "student") / len(gaps)
        assert true_loss <= result.budget + 0.02
    assert promoted > 100
    assert false / promoted <= 0.05
    assert not math.isnan(false)


def test_a_clear_outlier_is_not_shrunk_to_the_pool() -> None:
    # Thirty domains with a small gap and one whose 40 verdicts show a large one: its bound must stay high.
    evidence = [domain(f"d{i}", *scaled((0.05, 0.88, 0.07), 30)) for i in range(30)]
    evidence.append(domain("outlier", *scaled((0.03, 0.57, 0.40), 40)))
    estimate = gap_estimates(evidence, TWO)[("outlier", "student", "teacher")]
    assert estimate.mean > 0.25 and estimate.bound > 0.37 and estimate.samples == 40
    typical = gap_estimates(evidence, TWO)[("d0", "student", "teacher")]
    assert typical.sd < estimate.sd and abs(typical.mean - 0.02) < 0.03


def test_domain_bounds_widen_with_repeated_looks() -> None:
    # Same observed rates, more verdicts: the sd shrinks, but the z of a later sample-size epoch grows.
    assert domain_z(0.05, 30, 30) == pytest.approx(1.95996, abs=1e-4)  # epoch 0: alpha / 2
    assert domain_z(0.05, 60, 30) == pytest.approx(2.39398, abs=1e-4)  # epoch 1: alpha / 6
    assert domain_z(0.05, 10, 30) == domain_z(0.05, 30, 30)
