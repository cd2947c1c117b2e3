"""The Anthropic Messages door: request, answer and stream translation, errors, and the door in-process."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import respx
from httpx import Request, Response

from tests.gateway.conftest import AUTH, MASTER, completion, gateway, sse
from tiergate.gateway.doors.messages import MessagesDoor, anthropic_message, chat_from_messages
from tiergate.gateway.doors.messages_stream import MessagesStream
from tiergate.gateway.errors import (
    BadRequest,
    GatewayError,
    InsufficientQuota,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
    UpstreamFailed,
)


def _json(request: Request) -> dict[str, Any]:
    return orjson.loads(request.content)  # type: ignore[no-any-return]


def test_a_conversation_with_system_images_and_a_tool_round_trip_becomes_chat_messages() -> None:
    body = {
        "model": "auto", "max_tokens": 100, "system": [{"type": "text", "text": "Be brief.",
                                                        "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Weather here?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "I should call the tool", "signature": "s"},
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "-3C"}]},
                {"type": "text", "text": "And tomorrow?"},
            ]},
        ],
        "tools": [{"name": "weather", "description": "Weather by city",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "stop_sequences": ["END"], "temperature": 0.2, "top_p": 0.9, "top_k": 5,
        "metadata": {"user_id": "u-42"}, "stream": True,
    }  # fmt: skip
    assert chat_from_messages(body) == {
        "model": "auto", "max_tokens": 100, "temperature": 0.2, "top_p": 0.9, "top_k": 5,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather here?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ]},
            {"role": "assistant", "content": "Let me look.", "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}},
            ]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "-3C"},
            {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]},
        ],
        "tools": [{"type": "function", "function": {
            "name": "weather", "description": "Weather by city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "tool_choice": "required", "parallel_tool_calls": False, "stop": ["END"], "user": "u-42",
        "stream": True, "stream_options": {"include_usage": True},
    }  # fmt: skip


def test_tool_choice_and_error_results_translate() -> None:
    base = {"model": "m", "max_tokens": 5, "tools": [{"name": "f", "input_schema": {"type": "object"}}]}
    msgs = [{"role": "user", "content": "x"}]
    for given, expected in [({"type": "auto"}, "auto"), ({"type": "none"}, "none"),
                            ({"type": "tool", "name": "f"}, {"type": "function", "function": {"name": "f"}})]:  # fmt: skip
        chat = chat_from_messages({**base, "messages": msgs, "tool_choice": given})
        assert chat["tool_choice"] == expected and "parallel_tool_calls" not in chat
    failed = [{"type": "tool_result", "tool_use_id": "t", "content": "boom", "is_error": True}]
    chat = chat_from_messages(
        {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": failed}]}
    )
    assert chat["messages"] == [{"role": "tool", "tool_call_id": "t", "content": "Error: boom"}]
    url = {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}
    chat = chat_from_messages(
        {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [url]}]}
    )
    assert chat["messages"][0]["content"] == [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}, "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file"}}]}]},
         "messages[0].content[0].source"),
        ({"messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": []}]}]},
         "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                                     "content": [{"type": "image"}]}]}]},
         "messages[0].content[0].content[0]"),
        ({"system": 5}, "system"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
        ({"tools": [{"name": "f"}]}, "tools[0]"),
        ({"tools": [{"name": "f", "input_schema": {}}], "tool_choice": {"type": "sometimes"}}, "tool_choice"),
        ({"stop_sequences": "END"}, "stop_sequences"),
        ({"metadata": "u"}, "metadata"),
        ({"mcp_servers": [{"type": "url", "url": "https://x"}]}, "mcp_servers"),
        ({"container": "c"}, "container"),
    ],
)  # fmt: skip
def test_what_cannot_be_translated_is_refused_naming_the_field(fields: dict[str, Any], param: str) -> None:
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **fields}
    with pytest.raises(BadRequest) as refused:
        chat_from_messages({k: v for k, v in body.items() if v is not None})
    assert refused.value.param == param


def test_a_chat_completion_becomes_an_anthropic_message() -> None:
    chat = completion("small-a", "Checking.")
    chat["choices"][0]["finish_reason"] = "tool_calls"
    chat["choices"][0]["message"]["tool_calls"] = [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
        },
        {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": "not json"}},
    ]
    chat["usage"]["prompt_tokens_details"] = {"cached_tokens": 40}
    assert anthropic_message(chat) == {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "small-a",
        "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Oslo"}},
            {"type": "tool_use", "id": "call_2", "name": "weather", "input": {"arguments": "not json"}},
        ],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 60, "output_tokens": 50, "cache_read_input_tokens": 40,
                  "cache_creation_input_tokens": 0},
    }  # fmt: skip
    chat["choices"][0] = {
        "index": 0,
        "message": {"role": "assistant", "content": "x"},
        "finish_reason": "length",
    }
    assert anthropic_message(chat)["stop_reason"] == "max_tokens"


def _chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 2, "model": "m", "choices": choices,
            **extra}  # fmt: skip


def _call(index: int, **function: Any) -> dict[str, Any]:
    first = {"id": f"call_{index}", "type": "function"} if "name" in function else {}
    return {"index": 0, "delta": {"tool_calls": [{"index": index, **first, "function": function}]},
            "finish_reason": None}  # fmt: skip


CHAT_STREAM = sse(
    _chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]),
    _chunk([{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]),
    _chunk([{"index": 0, "delta": {"content": "lo"}, "finish_reason": None}]),
    _chunk([_call(0, name="weather", arguments="")]),
    _chunk([_call(0, arguments='{"city":')]),
    _chunk([_call(0, arguments='"Oslo"}')]),
    _chunk([_call(1, name="time", arguments="{}")]),
    _chunk([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]),
    _chunk([], usage={"prompt_tokens": 30, "completion_tokens": 7, "total_tokens": 37}),
)


def _events(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for event in body.split(b"\n\n"):
        if event:
            kind, data = event.split(b"\n")
            doc = orjson.loads(data.removeprefix(b"data: "))
            assert kind == b"event: " + doc["type"].encode()
            out.append((doc["type"], doc))
    return out


def test_the_chat_stream_becomes_anthropics_event_sequence_however_it_is_split() -> None:
    whole = MessagesStream()
    expected = whole.feed(CHAT_STREAM) + whole.close()
    events = _events(expected)
    assert [kind for kind, _ in events] == [
        "message_start", "ping",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
    assert events[0][1]["message"]["id"] == "msg_9" and events[0][1]["message"]["content"] == []
    assert events[2][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert events[4][1]["delta"] == {"type": "text_delta", "text": "lo"}
    assert events[6][1]["content_block"] == {
        "type": "tool_use",
        "id": "call_0",
        "name": "weather",
        "input": {},
    }
    assert [e[1]["delta"]["partial_json"] for e in events[7:9]] == ['{"city":', '"Oslo"}']
    assert events[10][1]["index"] == 2 and events[10][1]["content_block"]["name"] == "time"
    assert events[13][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert events[13][1]["usage"]["input_tokens"] == 30 and events[13][1]["usage"]["output_tokens"] == 7
    for size in (1, 9, 64):
        split = MessagesStream()
        pieces = [CHAT_STREAM[i : i + size] for i in range(0, len(CHAT_STREAM), size)]
        assert b"".join(split.feed(p) for p in pieces) + split.close() == expected


def test_an_error_event_becomes_anthropics_error_event_and_a_cut_stream_still_ends() -> None:
    translator = MessagesStream()
    out = translator.feed(
        sse(_chunk([{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]))[:-14]
    )
    out += translator.feed(b'data: {"error": {"message": "broken", "code": "upstream_stream_broken"}}\n\n')
    out += translator.close()
    kinds = [kind for kind, _ in _events(out)]
    assert kinds == ["message_start", "ping", "content_block_start", "content_block_delta", "error"]
    assert _events(out)[-1][1]["error"] == {"type": "api_error", "message": "broken"}
    cut = MessagesStream()
    tail = (
        cut.feed(sse(_chunk([{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]))[:-14])
        + cut.close()
    )
    assert [k for k, _ in _events(tail)][-3:] == ["content_block_stop", "message_delta", "message_stop"]


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (BadRequest("bad"), 400, "invalid_request_error"),
        (Unauthorized("who"), 401, "authentication_error"),
        (InsufficientQuota("spent"), 402, "billing_error"),
        (RateLimited("slow", retry_after_s=2), 429, "rate_limit_error"),
        (UpstreamFailed("down"), 529, "overloaded_error"),
        (GatewayError("internal error"), 500, "api_error"),
        (UpstreamFailed("slow", status=504), 504, "timeout_error"),
        (ServiceUnavailable("busy"), 529, "overloaded_error"),
    ],
)
def test_errors_take_anthropics_shape_and_statuses(error: Any, status: int, kind: str) -> None:
    got_status, body = MessagesDoor().error(error)
    assert got_status == status
    assert orjson.loads(body) == {"type": "error", "error": {"type": kind, "message": error.message}}


async def test_the_door_in_process_answers_streams_counts_and_refuses_in_anthropic_shape() -> None:
    router = respx.Router()
    route = router.post("http://up-a/v1/chat/completions").mock(
        side_effect=[
            Response(200, json=completion("small-a", "four")),
            Response(200, content=CHAT_STREAM, headers={"content-type": "text/event-stream"}),
        ]
    )
    ask = {"model": "student", "max_tokens": 64, "messages": [{"role": "user", "content": "2+2?"}]}
    x_api_key = {"x-api-key": MASTER, "anthropic-version": "2023-06-01"}
    async with gateway(router) as (client, records):
        plain = await client.post("/v1/messages", json=ask, headers=x_api_key)
        streamed = await client.post("/messages", json={**ask, "stream": True}, headers=AUTH)
        bad = await client.post("/v1/messages", json={**ask, "max_tokens": None}, headers=x_api_key)
        anonymous = await client.post("/v1/messages", json=ask)
        counted = await client.post("/v1/messages/count_tokens", json=ask, headers=x_api_key)
        count_bad = await client.post(
            "/v1/messages/count_tokens", json={"model": "m", "messages": []}, headers=AUTH
        )
    assert plain.status_code == 200 and plain.headers["x-tiergate-tier"] == "student"
    assert plain.json()["content"] == [{"type": "text", "text": "four"}] and plain.json()["type"] == "message"
    sent = _json(route.calls[0].request)
    assert sent["messages"] == [{"role": "user", "content": "2+2?"}] and sent["max_tokens"] == 64
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert [k for k, _ in _events(streamed.content)][-2:] == ["message_delta", "message_stop"]
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in bad.json()["error"]["message"]
    assert anonymous.status_code == 401 and anonymous.json()["type"] == "error"
    assert anonymous.json()["error"]["type"] == "authentication_error"
    assert counted.status_code == 200 and counted.json()["input_tokens"] > 0
    assert count_bad.status_code == 400 and count_bad.json()["error"]["type"] == "invalid_request_error"
    assert route.call_count == 2  # refusals and token counts reached no upstream
    assert [r.endpoint for r in records] == ["messages"] * 2 and records[1].stream
    assert records[0].completion_tokens == 50
