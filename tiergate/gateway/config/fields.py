"""Checks shared by the config sections parsed outside settings.py (`routing`, `cache`, `learning`).

Each raises SectionError naming the field; settings.py turns it into a ConfigError (the error of the whole
config, defined here beside it), the admin API into a 400 whose `param` is that field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tiergate.policies.tiers import TIERS, is_tier


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the offending field."""


class SectionError(ValueError):
    """A field of a config section is wrong; `where` names it (`cache.semantic.threshold`) when known."""

    def __init__(self, message: str, where: str | None = None) -> None:
        super().__init__(message)
        self.where = where


def mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SectionError(f"{where} must be a mapping", where)
    return value


def only(raw: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(raw) - allowed
    if unknown:
        raise SectionError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}", where)


def tier(value: Any, where: str) -> str:
    if not isinstance(value, str) or not is_tier(value):
        raise SectionError(f"{where} must be one of {', '.join(TIERS)}", where)
    return value


def boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise SectionError(f"{where} must be true or false", where)
    return value


def number(value: Any, where: str, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SectionError(f"{where} must be a number", where)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise SectionError(f"{where} must be {bounds}", where)
    return float(value)


def integer(value: Any, where: str, lo: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise SectionError(f"{where} must be an integer >= {lo}", where)
    return value


def strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SectionError(f"{where} must be a list of non-empty strings", where)
    return tuple(value)
