from __future__ import annotations

import sys
from typing import Any

import orjson
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


def _nested(depth: int, leaf: str, sibling: str) -> bytes:
    """A JSON body nested `depth` levels, built as text (orjson writes at most 255 levels, reads 1024)."""
    text = orjson.dumps(leaf)
    for i in range(depth):
        text = (
            b"[" + text + b", " + orjson.dumps(sibling) + b"]"
            if i % 2
            else b'{"k": ' + text + b', "n": ' + str(i).encode() + b"}"
        )
    return b'{"messages": ' + text + b"}"


def _flat(value: Any) -> list[tuple[str, Any]]:
    """Every container's keys and every scalar, in order, without recursion (== would recurse)."""
    out: list[tuple[str, Any]] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            out.append(("dict", tuple(item)))
            stack.extend(reversed(item.values()))
        elif isinstance(item, list):
            out.append(("list", len(item)))
            stack.extend(reversed(item))
        else:
            out.append(("scalar", item))
    return out


# 900 levels: two Python calls a level for a recursive walk on 3.11 (a comprehension is a frame); 1020: about
# the deepest body orjson reads, one call a level where comprehensions are inlined (3.12+). Both are past the
# default recursion limit of 1000.
@pytest.mark.parametrize("depth", [900, 1020])
def test_redacts_a_body_nested_deeper_than_the_recursion_limit_like_before(depth: int) -> None:
    body = orjson.loads(_nested(depth, "mail a@b.io", "x@y.io"))  # valid JSON: orjson takes it
    assert sys.getrecursionlimit() <= 1000
    redacted = _flat(redact(body))
    assert redacted == _flat(orjson.loads(_nested(depth, "mail [EMAIL]", "[EMAIL]"))) != _flat(body)
    assert ("scalar", "[EMAIL]") in redacted and ("scalar", "x@y.io") not in redacted
    shallow = {
        "a": [1, {"b": "call 555.123.4567 now", "c": [None, True, 2.5]}],
        "d": "sk-tg-9f8e7d6c5b4a3f2e1d0c",
    }
    assert redact(shallow) == {"a": [1, {"b": "call [PHONE] now", "c": [None, True, 2.5]}], "d": "[SECRET]"}
    assert list(redact(shallow)) == ["a", "d"]  # key order kept
