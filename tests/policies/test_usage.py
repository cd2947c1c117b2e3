from __future__ import annotations

from typing import Any

import pytest

from tiergate.policies.usage import chat_usage, embeddings_usage

# (response document, chat_usage, embeddings_usage)
CASES: list[tuple[Any, tuple[int, int] | None, int | None]] = [
    ({"usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}}, (12, 5), 12),
    ({"usage": {"prompt_tokens": 8, "total_tokens": 8}}, (8, 0), 8),  # embeddings: nothing generated
    ({"usage": {"prompt_tokens": 0, "completion_tokens": 0}}, (0, 0), 0),
    ({"usage": {"completion_tokens": 5}}, None, None),
    ({"usage": {"prompt_tokens": 12, "completion_tokens": None}}, None, 12),
    ({"usage": {"prompt_tokens": True, "completion_tokens": 5}}, None, None),  # a bool is not a count
    ({"usage": {"prompt_tokens": 12, "completion_tokens": False}}, None, 12),
    ({"usage": {"prompt_tokens": -3, "completion_tokens": 5}}, None, None),  # would refund the tenant
    ({"usage": {"prompt_tokens": 12, "completion_tokens": -1}}, None, 12),
    ({"usage": {"prompt_tokens": 12.0, "completion_tokens": 5}}, None, None),
    ({"usage": {"prompt_tokens": 12, "completion_tokens": 2.7}}, None, 12),
    ({"usage": {"prompt_tokens": "12", "completion_tokens": "5"}}, None, None),
    ({"usage": {}}, None, None),
    ({"usage": None}, None, None),
    ({"usage": [12, 5]}, None, None),
    ({}, None, None),
    (None, None, None),
    ([{"usage": {"prompt_tokens": 1}}], None, None),
    ("usage", None, None),
]  # fmt: skip


@pytest.mark.parametrize(("doc", "chat", "embeddings"), CASES)
def test_reading_a_usage(doc: Any, chat: tuple[int, int] | None, embeddings: int | None) -> None:
    assert chat_usage(doc) == chat
    assert embeddings_usage(doc) == embeddings
