from __future__ import annotations

import pytest

from tiergate.policies.redaction import _RULES, redact, redact_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail me at jane.doe+x@example.co.uk please", "mail me at [EMAIL] please"),
        ("my key is sk-proj-abcdefghijklmnop1234", "my key is [SECRET]"),
        ("anthropic sk-ant-api03-AbCdEfGhIjKlMnOpQr", "anthropic [SECRET]"),
        ("tiergate sk-tg-9f8e7d6c5b4a3f2e1d0c", "tiergate [SECRET]"),
        ("token ghp_0123456789abcdefghijABCDEFGHIJ", "token [SECRET]"),
        ("Authorization: Bearer abcdefghijklmnopqrstu", "Authorization: [SECRET]"),
        ("aws AKIAIOSFODNN7EXAMPLE here", "aws [SECRET] here"),
        ("card 4111 1111 1111 1111 exp 12/29", "card [CARD] exp 12/29"),
        ("card 4111-1111-1111-1111", "card [CARD]"),
        ("order 4111111111111112", "order 4111111111111112"),  # fails Luhn: not a card
        ("call +1 415-555-0132 or (020) 7946 0958", "call [PHONE] or [PHONE]"),
        ("call 555.123.4567 now", "call [PHONE] now"),
        ("In 1969, 3 men flew 384400 km.", "In 1969, 3 men flew 384400 km."),  # ordinary numbers stay
        ("version 3.11.7 and 2026-11-29", "version 3.11.7 and 2026-11-29"),
    ],
)
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_redact_keeps_structure() -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "a@b.io"}]},
        {"role": "assistant", "content": None},
    ]
    assert redact(messages) == [
        {"role": "user", "content": [{"type": "text", "text": "[EMAIL]"}]},
        {"role": "assistant", "content": None},
    ]
    assert redact({"n": 3, "ok": True}) == {"n": 3, "ok": True}


@pytest.mark.parametrize(
    "text",
    [
        "token sk-ABCDEFGHIJKLMNOPQRSTUV and pk-abcdefghijklmnopqrst",
        "ghp_ABCDEFGHIJKLMNOPQRSTUVWXYZ github_pat_abcdefghijklmnopqrstuv glpat-abcdefghijklmnopqrst",
        "xoxb-1234567890abcdefghij AKIAABCDEFGHIJKLMNOP",
        "Authorization: BEARER abcdefghijklmnopqrstuvwxyz0123",
        "no secrets here, just a risk-free plan at 9am",
        "mail jane@example.com, no key",
    ],
)
def test_the_cheap_pre_checks_never_skip_a_match(text: str) -> None:
    """Each rule's pre-check is a necessary condition: with or without it, the same text comes out."""
    slow = text
    for pattern, replacement, _ in _RULES:
        slow = pattern.sub(replacement, slow)
    assert redact_text(text) == slow
