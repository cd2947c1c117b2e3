from __future__ import annotations

import pytest

from tiergate.policies.agreement import agreement, final_choice, final_number
from tiergate.policies.judge import JUDGE_VERSION, combine, pairwise_judge_messages, parse_winner


@pytest.mark.parametrize(
    ("a", "b", "agree", "kind"),
    [
        ("The answer is (B).", "Answer: B", True, "choice"),
        ("The answer is (B).", "After thinking, the answer is C.", False, "choice"),
        ("She has 16 - 3 - 4 = 9 eggs, so $18.", "The total is 18", True, "number"),
        ("So the result is 1,000.", "So the result is 9,000.", False, "number"),
        ('{"a": 1, "b": [2]}', '```json\n{"b": [2], "a": 1}\n```', True, "json"),
        ('{"a": 1}', '{"a": 2}', False, "json"),
        ('{"a": 1}', "a is one", False, "json"),
        ("Paris is the capital.", "  paris IS the capital. ", True, "identical"),
        ("Paris is lovely in spring.", "Spring in Paris is lovely.", True, "embedding"),
        ("Paris is lovely in spring.", "Rome is hot in August.", False, "embedding"),
        ("Paris is lovely.", "Rome is hot.", False, "none"),
    ],
)
def test_agreement(a: str, b: str, agree: bool, kind: str) -> None:
    similarity = {"Spring in Paris is lovely.": 0.985, "Rome is hot in August.": 0.41}.get(b)
    result = agreement(a, b, similarity)
    assert (result.agree, result.kind) == (agree, kind)


def test_final_answer_extraction() -> None:
    assert final_choice("A is wrong because... so the answer is (D)") == "D"
    assert final_choice("**C**") == "C"
    assert final_choice("no letter here at all") is None
    assert final_number("It costs $1,234.50 in total") == 1234.5
    assert final_number("none") is None


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"winner": "A", "reason": "correct"}', ("A", "correct")),
        ('Sure! {"winner": "tie", "reason": "same"} Hope that helps', ("tie", "same")),
        ('{"winner": "b"}', ("B", "")),
        ("winner: B", ("B", "")),
        ("I cannot decide.", None),
        ('{"winner": "C"}', None),
    ],
)
def test_parse_winner(reply: str, expected: tuple[str, str] | None) -> None:
    assert parse_winner(reply) == expected


@pytest.mark.parametrize(
    ("first", "second", "verdict", "score"),
    [
        ("A", "B", "better", 1.0),  # the candidate won in both positions
        ("B", "A", "worse", 0.0),
        ("tie", "tie", "as_good", 0.5),
        (
            "A",
            "A",
            "as_good",
            0.5,
        ),  # the judge always picked position A: position bias, no evidence either way
        ("A", "tie", "as_good", 0.75),
    ],
)
def test_combine_cancels_position_bias(first: str, second: str, verdict: str, score: float) -> None:
    result = combine(first, second)
    assert (result.verdict, result.score) == (verdict, score)


def test_judge_prompt_is_fixed_and_contains_both_answers() -> None:
    messages = pairwise_judge_messages(
        [{"role": "user", "content": [{"type": "text", "text": "2+2?"}]}], "four", "4"
    )
    assert messages[0]["role"] == "system" and '"winner"' in messages[0]["content"]
    assert "2+2?" in messages[1]["content"] and "Answer A:\n<<<\nfour" in messages[1]["content"]
    assert JUDGE_VERSION.startswith("tiergate-judge-v")
