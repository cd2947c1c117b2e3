"""The token counts an upstream reports in a response's OpenAI `usage` object, read in one place.

Spend is settled from these numbers, so only a count the upstream really stated is taken: a non-negative
integer (JSON `true` is not a count, a negative count would refund the tenant, `3.5` or `"12"` is not an
answer). When a response does not state its counts the caller counts the tokens itself.
"""

from __future__ import annotations

from typing import Any

__all__ = ["chat_usage", "embeddings_usage", "reported_count"]


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _usage(doc: Any) -> dict[str, Any] | None:
    usage = doc.get("usage") if isinstance(doc, dict) else None
    return usage if isinstance(usage, dict) else None


def chat_usage(doc: Any) -> tuple[int, int] | None:
    """(prompt, completion) tokens of a chat completion, or None when its usage does not state them.

    A missing `completion_tokens` is 0 (nothing generated); any other field that is not a count makes the
    whole usage unusable, so that prompt and completion are always counted the same way.
    """
    usage = _usage(doc)
    if usage is None:
        return None
    prompt, completion = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens", 0))
    return None if prompt is None or completion is None else (prompt, completion)


def embeddings_usage(doc: Any) -> int | None:
    """The input tokens of an embeddings response (embeddings generate no tokens), or None when unstated."""
    usage = _usage(doc)
    return None if usage is None else _count(usage.get("prompt_tokens"))


def reported_count(usage: Any, *path: str) -> int:
    """The count at `path` in a usage object (`"prompt_tokens_details", "cached_tokens"`), 0 when it is
    absent or not a count - for translating usage into another API's shape, never for settling spend."""
    value = usage
    for name in path:
        value = value.get(name) if isinstance(value, dict) else None
    return _count(value) or 0
