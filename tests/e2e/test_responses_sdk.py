"""The OpenAI Responses API through the official `openai` SDK against a real tiergate process, over the
OpenAI-compatible fake upstream and over the Anthropic-shaped one (through litellm)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import MASTER, Stack, sdk_client

pytestmark = pytest.mark.e2e
QUESTION = "What is two plus two?"
ADD = {
    "type": "function",
    "name": "add",
    "description": "Add two numbers",
    "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}},
    "strict": False,
}
TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 2}'}}


@pytest.mark.parametrize("model", ["auto", "claude"])
def test_an_input_is_answered_as_a_response_through_the_chat_pipeline(gw: Stack, model: str) -> None:
    raw = sdk_client(gw.url).responses.with_raw_response.create(
        model=model, input=QUESTION, instructions="Answer briefly.", max_output_tokens=64, metadata={"k": "v"}
    )
    response = raw.parse()
    assert (
        response.object == "response" and response.id.startswith("resp_") and response.status == "completed"
    )
    assert response.output_text == f"echo: {QUESTION}" and response.instructions == "Answer briefly."
    assert response.usage is not None and response.usage.output_tokens > 0 and response.metadata == {"k": "v"}
    assert raw.headers["x-request-id"]
    (sent,) = gw.received()
    if model == "auto":
        assert raw.headers["x-tiergate-tier"] == "student"
        assert sent["body"]["messages"] == [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": QUESTION},
        ]
        assert sent["body"]["max_tokens"] == 64 and "metadata" not in sent["body"]
    else:
        assert sent["path"] == "/v1/messages" and sent["body"]["system"][0]["text"] == "Answer briefly."


@pytest.mark.parametrize("model", ["auto", "claude"])
def test_a_streamed_response_arrives_as_responses_events_ending_with_usage(gw: Stack, model: str) -> None:
    events = list(sdk_client(gw.url).responses.create(model=model, input="Count to three", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-1] == "response.completed" and "response.output_text.done" in kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "echo: Count to three"
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output_text == text and final.usage is not None and final.usage.output_tokens > 0


def test_a_function_call_and_its_output_make_a_round_trip(gw: Stack) -> None:
    gw.script("student-1", {"tool_calls": [TOOL_CALL]}, {"content": "The sum is 4."})
    client = sdk_client(gw.url)
    first = client.responses.create(model="auto", input=QUESTION, tools=[ADD])  # type: ignore[list-item]
    (call,) = first.output
    assert call.type == "function_call" and call.name == "add" and call.call_id == "call_1"
    assert json.loads(call.arguments) == {"a": 2, "b": 2}
    history: list[Any] = [{"role": "user", "content": QUESTION}, call.model_dump(exclude_none=True)]
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": "4"})
    second = client.responses.create(model="auto", input=history, tools=[ADD])  # type: ignore[list-item]
    assert second.output_text == "The sum is 4."
    first_sent, second_sent = (r["body"] for r in gw.received())
    assert first_sent["tools"] == [
        {"type": "function", "function": {k: v for k, v in ADD.items() if k != "type"}}
    ]
    assert second_sent["messages"][1:] == [
        {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "4"},
    ]


def test_a_streamed_function_call_arrives_as_argument_events(gw: Stack) -> None:
    gw.script("student-1", {"tool_calls": [TOOL_CALL], "content": ""})
    events = list(sdk_client(gw.url).responses.create(model="auto", input=QUESTION, tools=[ADD], stream=True))  # type: ignore[list-item]
    (done,) = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert json.loads(done.arguments) == {"a": 2, "b": 2}
    final = events[-1].response  # type: ignore[union-attr]
    assert [item.type for item in final.output] == ["function_call"]


def test_a_json_schema_text_format_becomes_the_chat_response_format(gw: Stack) -> None:
    gw.script("student-1", {"content": json.dumps({"answer": 4})})
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    response = sdk_client(gw.url).responses.create(
        model="auto",
        input=QUESTION,
        text={"format": {"type": "json_schema", "name": "sum", "schema": schema, "strict": True}},
    )
    assert json.loads(response.output_text) == {"answer": 4}
    assert response.text is not None and response.text.format.type == "json_schema"
    (sent,) = gw.received()
    assert sent["body"]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "sum", "schema": schema, "strict": True},
    }


def test_a_built_in_tool_is_a_bad_request_that_reaches_no_upstream(gw: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk_client(gw.url).responses.create(model="auto", input="x", tools=[{"type": "web_search"}])
    assert caught.value.body["param"] == "tools[0]" and "built-in" in str(caught.value)  # type: ignore[index]
    assert gw.received() == []


def test_a_stream_that_breaks_after_it_began_ends_in_an_error_event_and_response_failed(gw: Stack) -> None:
    gw.script("student-1", {"content": "one two three four", "chunks": 4, "break_after": 2})
    events = list(sdk_client(gw.url).responses.create(model="auto", input=QUESTION, stream=True))
    assert [e.type for e in events][-2:] == ["error", "response.failed"]
    failed = events[-1].response  # type: ignore[union-attr]
    assert failed.status == "failed" and failed.error is not None and failed.error.message
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "one two"


def _texts(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(role, text) of chat or Anthropic messages, whose content is a string or text blocks."""
    out = []
    for m in messages:
        content = m["content"]
        text = content if isinstance(content, str) else "".join(b.get("text", "") for b in content)
        out.append((m["role"], text))
    return out


@pytest.mark.parametrize("model", ["auto", "claude"])
def test_a_stored_response_is_continued_retrieved_listed_and_deleted(gw: Stack, model: str) -> None:
    client = sdk_client(gw.url)
    first = client.responses.create(
        model=model, input="My name is Ada.", instructions="Be brief.", store=True
    )
    assert first.store is True
    second = client.responses.create(model=model, previous_response_id=first.id, input="What is my name?")
    assert second.previous_response_id == first.id and second.instructions is None
    _, sent = (r["body"] for r in gw.received())
    # The upstream sees the whole conversation; the first request's instructions are not carried over.
    assert _texts(sent["messages"]) == [
        ("user", "My name is Ada."),
        ("assistant", "echo: My name is Ada."),
        ("user", "What is my name?"),
    ]
    assert "system" not in sent and all(m["role"] != "system" for m in sent["messages"])
    assert client.responses.retrieve(second.id).model_dump() == second.model_dump()
    (item,) = client.responses.input_items.list(second.id).data
    assert item.type == "message" and item.id.startswith("msg_")
    client.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(second.id)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model=model, previous_response_id=second.id, input="And now?")
    assert caught.value.body["param"] == "previous_response_id"  # type: ignore[index]
    assert len(gw.received()) == 2


def test_a_streamed_response_is_continued_and_another_tenant_cannot_see_it(gw: Stack) -> None:
    client = sdk_client(gw.url)
    events = list(client.responses.create(model="auto", input="Remember 42.", stream=True))
    final = events[-1].response  # type: ignore[union-attr]
    assert final.store is True
    admin = {"authorization": f"Bearer {MASTER}"}
    base = gw.url.removesuffix("/v1")
    tenant = httpx.post(f"{base}/admin/tenants", json={"name": "other"}, headers=admin).json()
    key = httpx.post(f"{base}/admin/keys", json={"tenant_id": tenant["id"]}, headers=admin).json()["key"]
    other = sdk_client(gw.url, key)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(final.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model="auto", previous_response_id=final.id, input="Which number?")
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(final.id)
    answer = client.responses.create(model="auto", previous_response_id=final.id, input="Which number?")
    assert answer.output_text == "echo: Which number?"
    assert _texts(gw.received()[-1]["body"]["messages"]) == [
        ("user", "Remember 42."),
        ("assistant", "echo: Remember 42."),
        ("user", "Which number?"),
    ]
