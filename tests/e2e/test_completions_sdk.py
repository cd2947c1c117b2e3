"""The legacy Completions API through the official `openai` SDK against a real tiergate process."""

from __future__ import annotations

import openai
import pytest

from tests.e2e.conftest import Stack, sdk_client

pytestmark = pytest.mark.e2e


def test_a_prompt_is_answered_as_a_text_completion_through_the_chat_pipeline(gw: Stack) -> None:
    raw = sdk_client(gw.url).completions.with_raw_response.create(
        model="auto", prompt="What is two plus two?", stop=["\n\n"]
    )
    completion = raw.parse()
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
    assert completion.choices[0].text == "echo: What is two plus two?"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert raw.headers["x-tiergate-tier"] == "student" and raw.headers["x-request-id"]
    (sent,) = gw.received()
    assert sent["body"]["messages"] == [{"role": "user", "content": "What is two plus two?"}]
    assert sent["body"]["stop"] == ["\n\n"] and sent["body"]["max_tokens"] == 16  # the legacy default


def test_a_streamed_prompt_arrives_as_text_completion_chunks(gw: Stack) -> None:
    stream = sdk_client(gw.url).completions.create(
        model="auto", prompt="Count to three", stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(choice.text for c in chunks for choice in c.choices) == "echo: Count to three"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_a_field_a_chat_model_cannot_honour_is_a_bad_request_that_reaches_no_upstream(gw: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk_client(gw.url).completions.create(model="auto", prompt="x", suffix="y")
    assert "suffix" in str(caught.value)
    assert gw.received() == []
