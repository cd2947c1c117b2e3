"""Budget periods and reservation sizing.

A budget is a limit in nano-USD over a period: `daily`, `weekly` (Monday 00:00 UTC), `monthly` (the 1st,
00:00 UTC) or `total` (never resets). Before an upstream call the gateway reserves the request's largest
possible cost; after it, the actual cost is settled and the rest released. So concurrent requests can
overspend a budget by at most what was already reserved and in flight when it ran out (nothing, as long as
the upstream honours the output limit the reservation assumed, and counts no more prompt tokens than the
reservation's prompt allowance: see `prompt_allowance`).
"""

from __future__ import annotations

import calendar
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from tiergate.policies.pricing import Price, max_cost_nano

PERIODS: tuple[str, ...] = ("daily", "weekly", "monthly", "total")
MAX_BUDGET_NANO = 10**18
"""A billion dollars: the largest budget. A reservation above it fits no budget and is refused before a counter
sees it, and a cost above it is counted as it, so spent + reserved + amount stays far inside the 64-bit
integers of SQLite, PostgreSQL and Redis whatever the request or the upstream said."""
_DAY = 86_400


def period_start(period: str, now_s: float) -> int:
    """Epoch seconds (UTC) at which the period containing `now_s` began; 0 for `total`."""
    if period == "total":
        return 0
    day = int(now_s // _DAY) * _DAY
    if period == "daily":
        return day
    if period == "weekly":
        # 1970-01-01 was a Thursday: day number + 3 counts days since a Monday.
        return day - ((day // _DAY + 3) % 7) * _DAY
    if period == "monthly":
        year, month = _year_month(day)
        return calendar.timegm((year, month, 1, 0, 0, 0))
    raise ValueError(f"unknown budget period {period!r}")


def period_end(period: str, now_s: float) -> int | None:
    """Epoch seconds at which the period containing `now_s` ends; None for `total`."""
    start = period_start(period, now_s)
    if period == "total":
        return None
    if period == "daily":
        return start + _DAY
    if period == "weekly":
        return start + 7 * _DAY
    year, month = _year_month(start)
    return calendar.timegm((year + month // 12, month % 12 + 1, 1, 0, 0, 0))


def seconds_until_renewal(period_end: int | None, now_s: float) -> int | None:
    """Whole seconds until a budget whose period ends at `period_end` renews, rounded up and at least 1 (a
    client told to come back must not come back too early); None for a `total` budget, which never renews."""
    if period_end is None:
        return None
    return max(1, math.ceil(period_end - now_s))


def _year_month(epoch_s: int) -> tuple[int, int]:
    t = datetime.fromtimestamp(epoch_s, tz=UTC)
    return t.year, t.month


@dataclass(frozen=True, slots=True)
class Budget:
    """A limit over a period, for one scope (a key or a tenant)."""

    limit_nano: int
    period: str


def output_allowance(max_tokens: int | None, n: int, model_limit: int | None, fallback: int) -> int:
    """Completion tokens a request may produce: its own `max_tokens`, else the model's limit, else `fallback`.

    Multiplied by `n`: every choice is billed. A request's `max_tokens` above the model's limit cannot be
    produced, so the smaller of the two bounds the cost.
    """
    per_choice = max_tokens if max_tokens is not None else (model_limit or fallback)
    if max_tokens is not None and model_limit:
        per_choice = min(max_tokens, model_limit)
    return per_choice * max(1, n)


# The gateway counts prompt tokens with tiktoken; the upstream bills with its own tokenizer. For OpenAI models
# the two agree up to the framing of tools and names, which is estimated; other families (Llama, Claude,
# Mistral, Qwen, ...) are counted with o200k, and for the same text their tokenizers count up to ~30% more.
KNOWN_TOKENIZER_MARGIN = 0.05
PROMPT_MARGIN_TOKENS = 16  # on top of the share: short prompts are mostly framing


def prompt_allowance(counted: int, margin: float) -> int:
    """Prompt tokens a reservation holds: the gateway's count plus `margin` of it and PROMPT_MARGIN_TOKENS.

    The reservation then covers an upstream whose tokenizer counts the prompt up to that much higher."""
    return counted + math.ceil(counted * margin) + PROMPT_MARGIN_TOKENS


def reservation_nano(
    offers: Sequence[tuple[Price, int | None, float]],
    prompt_tokens: int,
    max_tokens: int | None,
    n: int,
    fallback: int,
) -> int:
    """The largest cost the request can reach on any of the deployments that may answer it.

    `offers` holds each such deployment's price, output limit (None: unknown, `fallback` is assumed) and
    tokenizer margin (see `prompt_allowance`); `prompt_tokens` is the gateway's own count.
    """
    return max(
        (
            max_cost_nano(
                price,
                prompt_allowance(prompt_tokens, margin),
                output_allowance(max_tokens, n, limit, fallback),
            )
            for price, limit, margin in offers
        ),
        default=0,
    )
