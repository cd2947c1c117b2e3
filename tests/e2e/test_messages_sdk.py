"""The Anthropic Messages door through the official `anthropic` SDK against a real tiergate process.

Each test runs over an OpenAI-compatible deployment (the `student`/`teacher` tiers of the fake upstream) and
over an Anthropic-shaped one (`claude`, which litellm translates back into Anthropic's Messages API).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from tests.e2e.conftest import MASTER, Stack

pytestmark = pytest.mark.e2e

# The model a caller names, and the upstream model the fake upstream sees for it first.
UPSTREAMS = [pytest.param("student", "student-1", id="openai-upstream"),
             pytest.param("claude", "claude-fake", id="anthropic-upstream")]  # fmt: skip
WEATHER = {
    "name": "weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TOOL_CALL = {
    "id": "toolu_01",
    "type": "function",
    "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
}


@pytest.fixture
def sdk(gw: Stack) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(base_url=gw.url.removesuffix("/v1"), api_key=MASTER, max_retries=0)
    yield client
    client.close()


def _sent(gw: Stack, upstream_model: str) -> list[dict[str, Any]]:
    return [r["body"] for r in gw.received() if r["body"].get("model") == upstream_model]


@pytest.mark.parametrize(("model", "upstream"), UPSTREAMS)
def test_a_message_is_answered_with_the_system_prompt_sent_upstream(
    gw: Stack, sdk: anthropic.Anthropic, model: str, upstream: str
) -> None:
    raw = sdk.messages.with_raw_response.create(
        model=model,
        max_tokens=64,
        system="Answer briefly.",
        messages=[{"role": "user", "content": "Hi there"}],
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant" and message.stop_reason == "end_turn"
    assert message.content[0].type == "text" and message.content[0].text == "echo: Hi there"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert raw.headers["x-request-id"] and raw.headers["x-tiergate-tier"]
    (sent,) = _sent(gw, upstream)
    # Anthropic's own field, or the chat request's first message.
    system = sent.get("system") or sent["messages"][0]["content"]
    assert "Answer briefly." in str(system)


@pytest.mark.parametrize(("model", "upstream"), UPSTREAMS)
def test_the_stream_helper_assembles_the_streamed_message(
    gw: Stack, sdk: anthropic.Anthropic, model: str, upstream: str
) -> None:
    with sdk.messages.stream(
        model=model, max_tokens=64, messages=[{"role": "user", "content": "Count to three"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: Count to three" and final.content[0].text == text  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0 and final.usage.input_tokens > 0


@pytest.mark.parametrize(("model", "upstream"), UPSTREAMS)
def test_a_tool_call_and_its_result_make_a_round_trip(
    gw: Stack, sdk: anthropic.Anthropic, model: str, upstream: str
) -> None:
    gw.script(
        upstream, {"content": "", "tool_calls": [TOOL_CALL]}, {"content": "", "tool_calls": [TOOL_CALL]}
    )
    ask: list[Any] = [{"role": "user", "content": "Weather in Oslo?"}]
    first = sdk.messages.create(model=model, max_tokens=64, tools=[WEATHER], messages=ask)  # type: ignore[list-item]
    (call,) = [block for block in first.content if block.type == "tool_use"]
    assert first.stop_reason == "tool_use" and call.name == "weather" and call.input == {"city": "Oslo"}
    with sdk.messages.stream(model=model, max_tokens=64, tools=[WEATHER], messages=ask) as stream:  # type: ignore[list-item]
        streamed = stream.get_final_message()
    (streamed_call,) = [block for block in streamed.content if block.type == "tool_use"]
    assert streamed.stop_reason == "tool_use" and streamed_call.input == {"city": "Oslo"}
    result = {"type": "tool_result", "tool_use_id": call.id, "content": "-3 C and snow"}
    answer = sdk.messages.create(
        model=model, max_tokens=64, tools=[WEATHER],  # type: ignore[list-item]
        messages=[*ask, {"role": "assistant", "content": first.content}, {"role": "user", "content": [result]}],
    )  # fmt: skip
    assert answer.stop_reason == "end_turn"
    last = _sent(gw, upstream)[-1]["messages"]
    assert "-3 C and snow" in str(last[-1]) and call.id in str(last[-1])  # as a tool message or a tool_result
    assert "toolu_01" in str(last[-2])  # the assistant's tool call went back upstream


def test_count_tokens_counts_without_calling_an_upstream(gw: Stack, sdk: anthropic.Anthropic) -> None:
    short = sdk.messages.count_tokens(model="student", messages=[{"role": "user", "content": "Hi"}])
    long = sdk.messages.count_tokens(
        model="student", system="Be brief.", tools=[WEATHER],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "Tell me the weather in Oslo and in Bergen, please"}],
    )  # fmt: skip
    assert 0 < short.input_tokens < long.input_tokens
    assert gw.received() == []


def test_bad_keys_and_bad_requests_raise_the_sdks_own_exceptions(gw: Stack) -> None:
    stranger = anthropic.Anthropic(base_url=gw.url.removesuffix("/v1"), api_key="sk-wrong", max_retries=0)
    with stranger, pytest.raises(anthropic.AuthenticationError):
        stranger.messages.create(model="student", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    client = anthropic.Anthropic(base_url=gw.url.removesuffix("/v1"), api_key=MASTER, max_retries=0)
    with client, pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(
            model="student", max_tokens=8, messages=[{"role": "user", "content": "x"}],
            tools=[{"type": "web_search_20250305", "name": "web_search"}],
        )  # fmt: skip
    assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "tools[0].type" in str(refused.value)
    assert gw.received() == []


@pytest.mark.parametrize(("model", "upstream"), [("teacher", "teacher-1"), ("claude", "claude-fake")])
def test_upstream_rate_limits_and_failures_arrive_as_429_and_529(
    gw: Stack, sdk: anthropic.Anthropic, model: str, upstream: str
) -> None:
    ask: list[Any] = [{"role": "user", "content": "x"}]
    gw.script(upstream, *[{"status": 429, "retry_after": 1}] * 2)
    with pytest.raises(anthropic.RateLimitError) as limited:
        sdk.messages.create(model=model, max_tokens=8, messages=ask)
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    gw.script(upstream, *[{"status": 500}] * 2)
    with pytest.raises(anthropic.APIStatusError) as failed:
        sdk.messages.create(model=model, max_tokens=8, messages=ask)
    assert failed.value.status_code == 529
    assert failed.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
