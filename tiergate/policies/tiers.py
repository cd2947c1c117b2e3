"""The tier ladder: Student < TA < Teacher < Supervisor."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["TIERS", "above", "is_tier", "ordered", "tier_rank"]

TIERS: tuple[str, ...] = ("student", "ta", "teacher", "supervisor")
_RANK = {name: i for i, name in enumerate(TIERS)}


def is_tier(name: str) -> bool:
    return name in _RANK


def tier_rank(name: str) -> int:
    """Position on the ladder (0 = cheapest); raises KeyError for a name that is not a tier."""
    return _RANK[name]


def ordered(tiers: Iterable[str]) -> tuple[str, ...]:
    """The given tiers, cheapest first, without duplicates."""
    return tuple(sorted(set(tiers), key=tier_rank))


def above(configured: Iterable[str], tier: str) -> tuple[str, ...]:
    """Configured tiers strictly more capable than `tier`, nearest first (the escalation path)."""
    rank = tier_rank(tier)
    return tuple(t for t in ordered(configured) if tier_rank(t) > rank)
