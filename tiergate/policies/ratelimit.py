"""Requests- and tokens-per-minute limits as a sliding window of one-second buckets.

A scope (a key or a tenant, RPM or TPM) keeps counts per second for the last 60 seconds. A request of cost
`c` is admitted when the window's total plus `c` stays within the limit. The oldest bucket counts until the
whole second has left the window, so admissions in any 60-second span never exceed the limit, and a steady
client still gets at least (1 - 1/60) of it. The same arithmetic runs in process and, for several replicas,
inside a Redis Lua script (tests hold both to the table in tests/policies/test_ratelimit.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

WINDOW_S = 60
BUCKET_S = 1
BUCKETS = WINDOW_S // BUCKET_S


def bucket_of(now_s: float) -> int:
    return int(now_s // BUCKET_S)


def live(bucket: int, now_bucket: int) -> bool:
    """Whether a bucket still counts at `now_bucket`."""
    return bucket > now_bucket - BUCKETS


@dataclass(frozen=True, slots=True)
class WindowVerdict:
    admitted: bool
    retry_after_s: float = 0.0


def check_window(buckets: Mapping[int, int], now_s: float, cost: int, limit: int) -> WindowVerdict:
    """Whether `cost` more fits the window; if not, how long until enough of it has expired.

    A cost above the limit itself can never fit: it is refused with the full window as the wait, and the
    caller should say so rather than let the client retry forever.
    """
    now_bucket = bucket_of(now_s)
    used = sum(v for b, v in buckets.items() if live(b, now_bucket))
    if used + cost <= limit:
        return WindowVerdict(True)
    if cost > limit:
        return WindowVerdict(False, float(WINDOW_S))
    excess = used + cost - limit
    freed = 0
    for b in sorted(b for b in buckets if live(b, now_bucket)):
        freed += buckets[b]
        if freed >= excess:
            # Bucket b stops counting once now_bucket > b + BUCKETS - 1, i.e. at second b + BUCKETS.
            return WindowVerdict(False, max(0.0, (b + BUCKETS) * BUCKET_S - now_s))
    return WindowVerdict(False, float(WINDOW_S))
