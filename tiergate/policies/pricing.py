"""Money arithmetic.

Amounts are integers of nano-US-dollars (1e-9 USD) so that sums over millions of requests, SQL totals and
Redis counters are exact; a 10-token request to a $0.15/Mtok model costs 1,500 nano-USD, which a cent-
or micro-dollar integer would round away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Price", "cost_nano", "max_cost_nano", "nano", "usd"]

NANO_PER_USD = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0

    @property
    def known(self) -> bool:
        return self.input_per_mtok > 0 or self.output_per_mtok > 0


def cost_nano(price: Price, prompt_tokens: int, completion_tokens: int) -> int:
    """Cost of a call, rounded to the nearest nano-dollar."""
    # USD/Mtok * tokens / 1e6 USD  ==  USD/Mtok * tokens * 1e3 nano-USD
    return round(
        price.input_per_mtok * prompt_tokens * 1000 + price.output_per_mtok * completion_tokens * 1000
    )


def max_cost_nano(price: Price, prompt_tokens: int, max_completion_tokens: int) -> int:
    """Upper bound of a call's cost, rounded up: what a budget reservation must hold."""
    return math.ceil(
        price.input_per_mtok * prompt_tokens * 1000 + price.output_per_mtok * max_completion_tokens * 1000
    )


def usd(nano: int) -> float:
    return nano / NANO_PER_USD


def nano(usd_amount: float) -> int:
    return round(usd_amount * NANO_PER_USD)
