from __future__ import annotations

import random

import pytest

from tiergate.policies.pricing import Price, cost_nano, max_cost_nano, nano, usd
from tiergate.policies.retry import Health, backoff_s, is_retryable_status, record_failure, record_success
from tiergate.policies.tiers import above, is_tier, ordered, tier_rank


@pytest.mark.parametrize(
    ("status", "retry"),
    [(429, True), (500, True), (502, True), (503, True), (504, True), (408, True), (409, True),
     (400, False), (401, False), (403, False), (404, False), (413, False), (422, False)],
)  # fmt: skip
def test_retryable_statuses(status: int, retry: bool) -> None:
    assert is_retryable_status(status) is retry


def test_backoff_is_jittered_exponential_and_capped() -> None:
    rng = random.Random(7)
    for attempt in range(8):
        for _ in range(50):
            delay = backoff_s(attempt, 0.25, 2.0, rng)
            assert 0 <= delay <= min(2.0, 0.25 * 2**attempt)
    delays = {backoff_s(3, 0.25, 2.0, random.Random(seed)) for seed in range(20)}
    assert len(delays) > 10  # jitter: replicas that failed together do not retry together


def test_backoff_honours_a_retry_after_within_the_cap() -> None:
    rng = random.Random(1)
    assert backoff_s(0, 0.25, 4.0, rng, retry_after_s=3.0) == 3.0
    assert backoff_s(0, 0.25, 4.0, rng, retry_after_s=60.0) <= 0.25  # too long: better spent elsewhere


def test_cooldown_after_consecutive_failures_and_recovery() -> None:
    state = Health()
    state = record_failure(state, now=100.0, threshold=3, cooldown_s=30.0)
    state = record_failure(state, now=101.0, threshold=3, cooldown_s=30.0)
    assert state.available(101.0)
    state = record_failure(state, now=102.0, threshold=3, cooldown_s=30.0)
    assert not state.available(102.0)
    assert not state.available(131.9)
    assert state.available(132.0)
    assert record_success(Health(2, 0.0)) == Health()
    healthy = Health()
    assert record_success(healthy) is healthy


@pytest.mark.parametrize(
    ("price", "prompt", "completion", "expected_nano"),
    [
        (Price(0.15, 0.60), 10, 0, 1_500),
        (Price(0.15, 0.60), 1_000_000, 1_000_000, 750_000_000),
        (Price(2.5, 10.0), 123, 456, 4_867_500),
        (Price(), 1000, 1000, 0),
    ],
)
def test_cost_in_nano_dollars(price: Price, prompt: int, completion: int, expected_nano: int) -> None:
    assert cost_nano(price, prompt, completion) == expected_nano


def test_reservation_rounds_up_and_conversions() -> None:
    assert max_cost_nano(Price(0.0000001, 0.0), 1, 0) == 1  # never reserves less than the cost
    assert usd(1_500) == pytest.approx(1.5e-6)
    assert nano(1.25) == 1_250_000_000
    assert not Price().known and Price(0.1, 0).known


def test_tier_ladder() -> None:
    assert ordered(["teacher", "student", "teacher"]) == ("student", "teacher")
    assert above(["student", "ta", "teacher", "supervisor"], "ta") == ("teacher", "supervisor")
    assert above(["student", "supervisor"], "student") == ("supervisor",)
    assert tier_rank("student") < tier_rank("ta") < tier_rank("teacher") < tier_rank("supervisor")
    assert is_tier("ta") and not is_tier("auto")
