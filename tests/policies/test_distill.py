from __future__ import annotations

import numpy as np
import pytest

from tiergate.policies.distill import (
    Example,
    chat_row_errors,
    deduplicate,
    preference_row_errors,
    preference_rows,
    sft_row,
    split,
)

CONVERSATION = [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
ANSWER = {"role": "assistant", "content": "4", "refusal": None}


def test_sft_row_is_valid_openai_chat_format() -> None:
    row = sft_row(Example(CONVERSATION, ANSWER, rationale="correct and brief"))
    assert row["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    assert row["judge_rationale"] == "correct and brief"
    assert chat_row_errors(row) == []


def test_preference_rows_pair_the_served_answer_with_each_rejected_candidate() -> None:
    rejected = [{"role": "assistant", "content": "5"}, {"role": "assistant", "content": "22"}]
    rows = preference_rows(Example(CONVERSATION, ANSWER, rejected=rejected))
    assert [r["non_preferred_output"][0]["content"] for r in rows] == ["5", "22"]
    assert all(preference_row_errors(r) == [] for r in rows)
    assert preference_rows(Example(CONVERSATION, ANSWER)) == []


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({}, "non-empty 'messages'"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "no assistant message"),
        (
            {"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]},
            "last message",
        ),
        (
            {"messages": [{"role": "robot", "content": "a"}, {"role": "assistant", "content": "b"}]},
            "role 'robot'",
        ),
        ({"messages": [{"role": "assistant", "content": None}]}, "no content and no tool_calls"),
        ({"messages": [{"role": "assistant", "content": "a", "extra": 1}]}, "unknown keys"),
    ],
)
def test_chat_row_validator_catches_each_mistake(row: dict, message: str) -> None:  # type: ignore[type-arg]
    assert any(message in e for e in chat_row_errors(row))


def test_preference_row_validator() -> None:
    assert preference_row_errors(
        {"input": {"messages": []}, "preferred_output": [], "non_preferred_output": [{}]}
    )
    good = preference_rows(Example(CONVERSATION, ANSWER, rejected=[{"role": "assistant", "content": "5"}]))[0]
    bad = {**good, "preferred_output": [{"role": "user", "content": "x"}]}
    assert any("assistant message" in e for e in preference_row_errors(bad))


def test_deduplicate_keeps_the_first_of_each_near_identical_group() -> None:
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    near_a = np.array([0.99, 0.141])
    near_a /= np.linalg.norm(near_a)
    assert deduplicate(np.stack([a, near_a, b, a])) == [0, 2]
    assert deduplicate(np.zeros((0, 2))) == []


def test_split_is_seeded_and_disjoint() -> None:
    train, val = split(10, 0.2, seed=1)
    assert len(val) == 2 and not set(train) & set(val) and sorted(train + val) == list(range(10))
    assert split(10, 0.2, seed=1) == (train, val)
    assert split(10, 0.2, seed=2) != (train, val)
    assert split(2, 0.01, seed=0)[1] != []  # a small export still validates on something
    assert split(1, 0.5, seed=0) == ([0], [])
