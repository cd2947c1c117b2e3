"""The sliding window's arithmetic; tests/gateway/test_limits_redis.py holds the Lua script to the same table."""

from __future__ import annotations

import pytest

from tiergate.policies.ratelimit import BUCKETS, WindowVerdict, bucket_of, check_window

# (buckets {second: count}, now, cost, limit, expected verdict)
CASES: list[tuple[dict[int, int], float, int, int, WindowVerdict]] = [
    ({}, 1000.0, 1, 10, WindowVerdict(True)),
    ({1000: 9}, 1000.5, 1, 10, WindowVerdict(True)),  # exactly at the limit
    ({1000: 10}, 1000.5, 1, 10, WindowVerdict(False, 59.5)),  # full: wait for second 1000 to leave the window
    ({941: 10}, 1000.0, 1, 10, WindowVerdict(False, 1.0)),  # second 941 counts until second 1001 begins
    ({941: 10}, 1001.0, 1, 10, WindowVerdict(True)),
    ({940: 10}, 999.99, 1, 10, WindowVerdict(False, 0.01)),
    (
        {970: 4, 980: 4, 990: 2},
        995.0,
        5,
        10,
        WindowVerdict(False, 45.0),
    ),  # 5 must be freed: 970 (4) and 980 (4)
    ({970: 4, 980: 4, 990: 2}, 995.0, 3, 10, WindowVerdict(False, 35.0)),  # 3 freed once 970 expires at 1030
    ({1000: 3}, 1000.0, 11, 10, WindowVerdict(False, 60.0)),  # can never fit
    ({900: 100}, 1000.0, 10, 10, WindowVerdict(True)),  # long-expired buckets do not count
]


@pytest.mark.parametrize(("buckets", "now", "cost", "limit", "expected"), CASES)
def test_sliding_window(
    buckets: dict[int, int], now: float, cost: int, limit: int, expected: WindowVerdict
) -> None:
    verdict = check_window(buckets, now, cost, limit)
    assert verdict.admitted is expected.admitted
    assert verdict.retry_after_s == pytest.approx(expected.retry_after_s)


def test_a_steady_client_gets_the_limit_in_every_window() -> None:
    """One request every 0.1 s against 100 RPM: never more than 100 in any 60 s, and at least 98 per minute."""
    buckets: dict[int, int] = {}
    admitted: list[float] = []
    for i in range(6000):  # ten minutes
        now = i * 0.1
        if check_window(buckets, now, 1, 100).admitted:
            buckets[bucket_of(now)] = buckets.get(bucket_of(now), 0) + 1
            admitted.append(now)
    for start in range(0, 540, 7):
        in_window = sum(1 for t in admitted if start <= t < start + 60)
        assert 100 * (1 - 1 / BUCKETS) - 1 <= in_window <= 100
