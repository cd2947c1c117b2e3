"""Masking personal data and secrets in trace content before it is stored (`redacted` content policy).

Patterns are deliberately greedy towards masking: a trace that loses a harmless number is better than one
that keeps a card number. Each match becomes a typed placeholder so that traces stay readable and a
distillation export can tell that something was removed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
# Provider and tiergate keys (sk-..., sk-ant-..., sk-tg-...), GitHub/GitLab/Slack/AWS tokens, bearer tokens,
# and long opaque strings that look like secrets (high share of digits and letters, no spaces).
_API_KEY = re.compile(
    r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}"
    r"|\b(?:ghp|gho|ghu|ghs|github_pat|glpat|xox[abpr])[-_][A-Za-z0-9_-]{16,}"
    r"|\bAKIA[0-9A-Z]{16}\b"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/-]{16,}=*"
)
# 13-19 digits, optionally grouped by spaces or dashes; checked with Luhn to spare order numbers and the like.
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
# Phone numbers: international (+CC ...), with a bracketed area code ((020) 7946 0958), or North-American
# (555-123-4567, 555.123.4567). Plain digit groups without such a shape are left alone (dates, versions).
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?\d{1,4}(?:[ .-]?\d{2,4}){2,4}"
    r"|\(\d{2,4}\)[ .-]?\d{3,4}[ .-]?\d{3,4}"
    r"|\d{3}[ .-]\d{3}[ .-]\d{4})(?!\w)"
)


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "[CARD]" if 13 <= len(digits) <= 19 and _luhn(digits) else match.group()


def _may_hold_key(text: str) -> bool:
    """A substring every alternative of `_API_KEY` contains: scanning for it is ~20 times cheaper."""
    return any(s in text for s in ("k-", "gh", "glpat", "xox", "AKIA")) or "bearer" in text.lower()


# (pattern, replacement, a cheap test that must hold for the pattern to match; None: always scan).
_RULES: tuple[
    tuple[re.Pattern[str], str | Callable[[re.Match[str]], str], Callable[[str], bool] | None], ...
] = (
    (_API_KEY, "[SECRET]", _may_hold_key),
    (_EMAIL, "[EMAIL]", lambda text: "@" in text),
    (_CARD, _card, None),
    (_PHONE, "[PHONE]", None),
)


def redact_text(text: str) -> str:
    for pattern, replacement, may_match in _RULES:
        if may_match is None or may_match(text):
            text = pattern.sub(replacement, text)
    return text


def redact(value: Any) -> Any:
    """`value` (a message list, an answer, any JSON) with every string redacted; structure is kept.

    Walked with an explicit stack, not recursion: a valid request body may nest ~1000 levels (orjson's limit),
    beyond Python's recursion limit."""
    stack: list[tuple[Any, Any]] = []
    root = _copy(value, stack)
    while stack:
        source, target = stack.pop()
        if isinstance(source, list):
            target.extend(_copy(item, stack) for item in source)
        else:
            for key, item in source.items():
                target[key] = _copy(item, stack)
    return root


def _copy(value: Any, stack: list[tuple[Any, Any]]) -> Any:
    """`value` redacted if a string; an empty container, queued on `stack` to be filled, if a list or dict."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, list | dict):
        target: list[Any] | dict[str, Any] = [] if isinstance(value, list) else {}
        stack.append((value, target))
        return target
    return value
