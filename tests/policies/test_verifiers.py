"""Cascade verifiers, table-driven: each answer shape against what the request asked for."""

from __future__ import annotations

from typing import Any

import pytest

from tiergate.policies.verifiers import (
    VERIFIERS,
    Expected,
    VerifierConfig,
    judge_sampled,
    judge_verdict,
    mean_logprob,
    pass_fail_judge_messages,
    strip_logprobs,
    verify_answer,
)

ALL = VerifierConfig(enabled=tuple(VERIFIERS), min_mean_logprob=-1.0)
SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
JSON_SCHEMA = Expected.of(
    {"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}}}
)
JSON_OBJECT = Expected.of({"response_format": {"type": "json_object"}})
TOOLS = Expected.of({"tools": [{"type": "function", "function": {"name": "add", "parameters": {}}}]})


def answer(content: Any = "Paris.", finish: str = "stop", **message: Any) -> dict[str, Any]:
    return {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, **message},
                "finish_reason": finish,
            }
        ]
    }


def call(arguments: str, name: str = "add") -> dict[str, Any]:
    return {"id": "c1", "type": "function", "function": {"name": name, "arguments": arguments}}


def with_logprobs(*values: float) -> dict[str, Any]:
    doc = answer()
    doc["choices"][0]["logprobs"] = {"content": [{"token": "x", "logprob": v} for v in values]}
    return doc


@pytest.mark.parametrize(
    ("doc", "expected", "verifier", "reason"),
    [
        (answer(), Expected(), None, ""),
        (answer("a long answer cut", finish="length"), Expected(), "truncated", "finish_reason length"),
        (answer(""), Expected(), "truncated", "empty"),
        (answer("   \n"), Expected(), "truncated", "empty"),
        (answer(None), Expected(), "truncated", "empty"),
        ({"choices": []}, Expected(), "truncated", "no choices"),
        (answer("I'm sorry, but I can't help with that."), Expected(), "refusal", "refused"),
        (answer("I cannot assist with this request."), Expected(), "refusal", "refused"),
        (answer("As an AI language model, I cannot browse."), Expected(), "refusal", "refused"),
        (answer("Sure. I can't stress enough: back up first."), Expected(), None, ""),  # not at the start
        (answer(None, refusal="no"), Expected(), "truncated", "empty"),  # empty is checked first
        (answer("x", refusal="I won't"), Expected(), "refusal", "refusal field"),
        (answer('{"answer": 4}'), JSON_OBJECT, None, ""),
        (answer("answer: 4"), JSON_OBJECT, "json", "not valid JSON"),
        (answer('{"answer": 4}'), JSON_SCHEMA, None, ""),
        (answer('{"answer": "four"}'), JSON_SCHEMA, "json", "answer: 'four' is not of type 'integer'"),
        (answer("{}"), JSON_SCHEMA, "json", "'answer' is a required property"),
        (answer("not json"), Expected(), None, ""),  # no JSON mode, no JSON check
        (answer(None, tool_calls=[call('{"a": 1}')], finish="tool_calls"), TOOLS, None, ""),
        (
            answer(None, tool_calls=[call('{"a": 1')], finish="tool_calls"),
            TOOLS,
            "tool_args",
            "not valid JSON",
        ),
        (
            answer(None, tool_calls=[call("[1]")], finish="tool_calls"),
            TOOLS,
            "tool_args",
            "not a JSON object",
        ),
        (
            answer(None, tool_calls=[call("{}", "sub")], finish="tool_calls"),
            TOOLS,
            "tool_args",
            "unknown function",
        ),
        (with_logprobs(-0.1, -0.2), Expected(), None, ""),
        (with_logprobs(-0.5, -3.0), Expected(), "logprob", "mean token logprob -1.75"),
    ],
)
def test_verify(doc: dict[str, Any], expected: Expected, verifier: str | None, reason: str) -> None:
    verdict = verify_answer(doc, expected, ALL)
    if verifier is None:
        assert verdict.ok, verdict
    else:
        assert not verdict.ok and verdict.verifier == verifier and reason in verdict.reason, verdict


def test_only_enabled_verifiers_run_and_custom_refusals_add_to_the_builtin_ones() -> None:
    assert verify_answer(answer("", finish="length"), Expected(), VerifierConfig(enabled=("refusal",))).ok
    custom = VerifierConfig(enabled=("refusal",), refusals=(r"computer says no",))
    assert not verify_answer(answer("Computer says no."), Expected(), custom).ok


def test_every_choice_is_checked() -> None:
    doc = answer()
    doc["choices"].append(
        {"index": 1, "message": {"role": "assistant", "content": ""}, "finish_reason": "stop"}
    )
    assert verify_answer(doc, Expected(), ALL).verifier == "truncated"


def test_logprobs_mean_and_stripping() -> None:
    doc = with_logprobs(-1.0, -2.0)
    assert mean_logprob(doc) == -1.5 and mean_logprob(answer()) is None
    stripped = strip_logprobs(doc)
    assert stripped["choices"][0]["logprobs"] is None and doc["choices"][0]["logprobs"]  # a copy
    assert VerifierConfig(enabled=("logprob",)).wants_logprobs and not VerifierConfig().wants_logprobs


def test_judge_sampling_is_seeded_and_near_the_fraction() -> None:
    draws = [judge_sampled(7, f"req_{i}", 0.2) for i in range(5000)]
    assert draws == [judge_sampled(7, f"req_{i}", 0.2) for i in range(5000)]
    assert 0.17 < sum(draws) / len(draws) < 0.23
    assert draws != [judge_sampled(8, f"req_{i}", 0.2) for i in range(5000)]
    assert not judge_sampled(0, "r", 0.0) and judge_sampled(0, "r", 1.0)


@pytest.mark.parametrize(
    ("text", "verdict"), [("PASS", True), ("pass.", True), ("FAIL - wrong city", False), ("Maybe", None)]
)
def test_judge_verdict(text: str, verdict: bool | None) -> None:
    assert judge_verdict(text) is verdict


def test_judge_messages_show_the_conversation_and_the_candidate() -> None:
    messages = pass_fail_judge_messages([{"role": "user", "content": "Capital of France?"}], answer("Paris."))
    assert messages[0]["role"] == "system" and "PASS" in messages[0]["content"]
    assert "Capital of France?" in messages[1]["content"] and "Paris." in messages[1]["content"]
