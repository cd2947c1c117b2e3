"""When to retry an upstream call, how long to wait, and when to rest a failing deployment."""

from __future__ import annotations

import random
from dataclasses import dataclass

# 408 and 409 are what OpenAI-compatible servers send for a request they dropped or a transient conflict.
_RETRYABLE_4XX = frozenset({408, 409, 429})


def is_retryable_status(status: int) -> bool:
    """Worth another attempt (here or on another deployment): throttling and server-side failures only."""
    return status >= 500 or status in _RETRYABLE_4XX


def backoff_s(
    attempt: int, base_s: float, cap_s: float, rng: random.Random, retry_after_s: float | None = None
) -> float:
    """Delay before retry number `attempt` (0-based): "full jitter" exponential backoff.

    Jitter keeps replicas that failed together from retrying together; an upstream's Retry-After wins
    when it is within the cap (a longer one is better spent on the next deployment).
    """
    if retry_after_s is not None and 0 <= retry_after_s <= cap_s:
        return retry_after_s
    return rng.uniform(0, min(cap_s, base_s * (2**attempt)))


@dataclass(frozen=True, slots=True)
class Health:
    """Circuit-breaker state of one deployment."""

    consecutive_failures: int = 0
    cooled_until: float = 0.0

    def available(self, now: float) -> bool:
        return now >= self.cooled_until


def record_failure(state: Health, now: float, threshold: int, cooldown_s: float) -> Health:
    """After `threshold` consecutive failures the deployment rests for `cooldown_s`; the count restarts."""
    failures = state.consecutive_failures + 1
    if failures >= threshold:
        return Health(0, now + cooldown_s)
    return Health(failures, state.cooled_until)


def record_success(state: Health) -> Health:
    return Health() if state.consecutive_failures or state.cooled_until else state
