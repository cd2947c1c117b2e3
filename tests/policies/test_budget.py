from __future__ import annotations

import calendar

import pytest

from tiergate.policies.budget import (
    output_allowance,
    period_end,
    period_start,
    prompt_allowance,
    reservation_nano,
    seconds_until_renewal,
)
from tiergate.policies.pricing import Price


def ts(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> int:
    return calendar.timegm((y, mo, d, h, mi, s))


@pytest.mark.parametrize(
    ("period", "now", "start", "end"),
    [
        ("daily", ts(2024, 3, 5, 13, 7), ts(2024, 3, 5), ts(2024, 3, 6)),
        ("daily", ts(2024, 3, 5), ts(2024, 3, 5), ts(2024, 3, 6)),  # the first second belongs to the new day
        ("daily", ts(2024, 3, 5) - 1, ts(2024, 3, 4), ts(2024, 3, 5)),
        ("weekly", ts(2024, 3, 6, 12), ts(2024, 3, 4), ts(2024, 3, 11)),  # a Wednesday -> Monday 4th
        ("weekly", ts(2024, 3, 4), ts(2024, 3, 4), ts(2024, 3, 11)),  # Monday 00:00 itself
        ("weekly", ts(2024, 3, 3, 23, 59, 59), ts(2024, 2, 26), ts(2024, 3, 4)),  # Sunday night
        ("weekly", ts(1970, 1, 1), ts(1969, 12, 29), ts(1970, 1, 5)),  # the epoch was a Thursday
        ("monthly", ts(2024, 2, 29, 23), ts(2024, 2, 1), ts(2024, 3, 1)),  # leap day
        ("monthly", ts(2024, 12, 31, 23, 59, 59), ts(2024, 12, 1), ts(2025, 1, 1)),  # year end
        ("monthly", ts(2025, 1, 1), ts(2025, 1, 1), ts(2025, 2, 1)),
        ("total", ts(2024, 5, 5), 0, None),
    ],
)
def test_period_boundaries(period: str, now: int, start: int, end: int | None) -> None:
    assert period_start(period, now) == start
    assert period_end(period, now) == end


def test_fractional_seconds_stay_in_their_period() -> None:
    assert period_start("daily", ts(2024, 3, 6) - 0.001) == ts(2024, 3, 5)


@pytest.mark.parametrize(
    ("period", "now", "wait"),
    [
        ("daily", 1_765_065_600, 86_400),  # exactly at midnight: a whole day
        ("daily", 1_765_151_999.5, 1),  # half a second before midnight: rounded up to 1
        ("daily", 1_765_108_800.25, 43_200),  # noon and a quarter second: up to the whole second
        ("weekly", 1_765_065_600, 86_400),  # a Sunday: Monday 00:00 is a day away
        ("monthly", 1_764_547_200, 31 * 86_400),  # 1 December: 1 January
        ("total", 1_765_108_800, None),  # never renews
    ],
)
def test_seconds_until_renewal(period: str, now: float, wait: int | None) -> None:
    assert seconds_until_renewal(period_end(period, now), now) == wait


def test_unknown_period_is_refused() -> None:
    with pytest.raises(ValueError, match="hourly"):
        period_start("hourly", 0)


@pytest.mark.parametrize(
    ("max_tokens", "n", "model_limit", "fallback", "expected"),
    [
        (100, 1, 16_384, 4096, 100),  # the request's own limit
        (100, 3, 16_384, 4096, 300),  # every choice is billed
        (None, 1, 16_384, 4096, 16_384),  # the model's output limit
        (None, 2, None, 4096, 8192),  # neither known: the configured fallback
        (50_000, 1, 16_384, 4096, 16_384),  # more than the model can produce
        (10, 0, None, 4096, 10),  # n below 1 is treated as 1
    ],
)
def test_output_allowance(
    max_tokens: int | None, n: int, model_limit: int | None, fallback: int, expected: int
) -> None:
    assert output_allowance(max_tokens, n, model_limit, fallback) == expected


def test_reservation_takes_the_priciest_deployment_and_rounds_up() -> None:
    cheap, dear = (Price(0.15, 0.60), 16_384, 0.0), (Price(2.5, 10.0), 16_384, 0.0)
    # 1000 (+16 framing) prompt tokens at $2.5/M = 2,540,000 nano; 100 completion at $10/M = 1,000,000 nano.
    assert reservation_nano((cheap, dear), 1000, 100, 1, 4096) == 3_540_000
    assert reservation_nano((cheap,), 1000, 100, 1, 4096) == 212_400
    assert reservation_nano((cheap,), 1000, 100, 2, 4096) == 272_400  # two choices
    # No max_tokens: each deployment's own output limit, or the fallback where it has none.
    assert reservation_nano(((Price(0, 1.0), 10, 0.0),), 0, None, 1, 4096) == 10_000
    assert reservation_nano(((Price(0, 1.0), None, 0.0),), 0, None, 1, 4096) == 4_096_000
    assert (
        reservation_nano(((Price(0.0000001, 0.0), None, 0.0),), 0, 5, 1, 4096) == 1
    )  # a fraction still reserves one
    assert reservation_nano((), 1000, 100, 1, 4096) == 0


@pytest.mark.parametrize(
    ("counted", "margin", "allowance"),
    [(0, 0.35, 16), (1000, 0.0, 1016), (1000, 0.35, 1366), (1000, 0.05, 1066), (7, 0.35, 26)],
)
def test_the_prompt_allowance_covers_a_tokenizer_that_counts_more(
    counted: int, margin: float, allowance: int
) -> None:
    assert prompt_allowance(counted, margin) == allowance


def test_a_margin_makes_the_dearer_tokenizer_the_ceiling() -> None:
    # Same price, one deployment's tokenizer unknown: its 35% margin sets the reservation.
    known, unknown = (Price(1.0, 1.0), 100, 0.05), (Price(1.0, 1.0), 100, 0.35)
    assert reservation_nano((known, unknown), 1000, 10, 1, 4096) == (1366 + 10) * 1000
