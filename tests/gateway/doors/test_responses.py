"""The Responses door: request and answer translation, the stream, and the door in-process over the pipeline."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import respx
from httpx import Request, Response
from openai.types.responses import Response as SDKResponse

from tests.gateway.conftest import AUTH, completion, gateway, sse
from tiergate.gateway.doors.responses import responses_chat_request
from tiergate.gateway.doors.responses_output import RequestEcho, response_from_completion
from tiergate.gateway.doors.responses_stream import ResponsesStream
from tiergate.gateway.errors import BadRequest

TOOL = {
    "type": "function",
    "name": "weather",
    "description": "d",
    "parameters": {"type": "object"},
    "strict": True,
}


def test_input_items_become_chat_messages_and_settings_their_chat_fields() -> None:
    chat = responses_chat_request({
        "model": "m", "instructions": "Be brief.", "temperature": 0.2, "top_p": 0.9, "user": "u",
        "max_output_tokens": 50, "metadata": {"k": "v"}, "parallel_tool_calls": False, "store": False,
        "tools": [TOOL], "tool_choice": {"type": "function", "name": "weather"},
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": True}},
        "input": [
            {"role": "developer", "content": "Use tools."},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "Weather here?"},
                {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "low"}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
            {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "weather", "arguments": "{\"x\":1}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "rain"}]},
        ],
    })  # fmt: skip
    assert chat == {
        "model": "m", "temperature": 0.2, "top_p": 0.9, "user": "u", "max_tokens": 50,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "system", "content": "Use tools."},
            {"role": "user", "content": [{"type": "text", "text": "Weather here?"},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "detail": "low"}}]},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}},
                {"id": "c2", "type": "function", "function": {"name": "weather", "arguments": "{\"x\":1}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "c2", "content": "rain"},
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "description": "d",
                                                    "parameters": {"type": "object"}, "strict": True}}],
        "parallel_tool_calls": False,
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True}},
    }  # fmt: skip


def test_a_string_input_is_one_user_message_and_a_stream_asks_for_usage() -> None:
    chat = responses_chat_request(
        {"model": "m", "input": "hi", "stream": True, "text": {"format": {"type": "text"}}}
    )
    assert chat == {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}],
                    "stream_options": {"include_usage": True}}  # fmt: skip
    assert responses_chat_request({"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}})[
        "response_format"
    ] == {"type": "json_object"}
    with_tools = responses_chat_request(
        {"model": "m", "input": "x", "tools": [TOOL], "tool_choice": "required"}
    )
    assert with_tools["tool_choice"] == "required"
    no_tools = responses_chat_request({"model": "m", "input": "x", "tools": [], "tool_choice": "auto"})
    assert "tools" not in no_tools and "tool_choice" not in no_tools  # chat refuses either without tools


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"input": None}, "input"),
        ({"input": []}, "input"),
        ({"input": 3}, "input"),
        ({"input": ["hi"]}, "input[0]"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0]",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input[0].content[0]",
        ),
        ({"input": [{"type": "reasoning", "summary": []}]}, "input[0]"),
        ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0].call_id"),
        ({"input": [{"type": "function_call_output", "call_id": "c", "output": 1}]}, "input[0].output"),
        ({"tools": [{"type": "web_search"}]}, "tools[0]"),
        ({"tools": [TOOL, {"type": "file_search", "vector_store_ids": []}]}, "tools[1]"),
        ({"tools": [{"type": "code_interpreter"}]}, "tools[0]"),
        ({"tools": [{"type": "computer_use_preview"}]}, "tools[0]"),
        ({"tools": {}}, "tools"),
        ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
        ({"text": {"format": {"type": "grammar"}}}, "text.format"),
        ({"text": {"format": {"type": "json_schema", "name": "w"}}}, "text.format.schema"),
        ({"text": {"verbosity": "low"}}, "text.verbosity"),
        ({"store": "yes"}, "store"),
        ({"background": True}, "background"),
        ({"include": ["reasoning.encrypted_content"]}, "include"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"truncation": "auto"}, "truncation"),
        ({"service_tier": "flex"}, "service_tier"),
        ({"previous_response_id": 5}, "previous_response_id"),
        ({"previous_response_id": ""}, "previous_response_id"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"prompt": {"id": "p"}}, "prompt"),
        ({"messages": []}, "messages"),
        ({"instructions": 5}, "instructions"),
        ({"metadata": "x"}, "metadata"),
    ],
)
def test_what_the_gateway_cannot_do_is_refused_naming_the_field(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as refused:
        responses_chat_request({"model": "m", "input": "x", **fields})
    assert refused.value.param == param
    with pytest.raises(BadRequest) as missing:
        responses_chat_request({"model": "m"})
    assert missing.value.param == "input"


def test_a_chat_completion_becomes_a_response_the_sdk_reads() -> None:
    echo = RequestEcho({"instructions": "Be brief.", "tools": [TOOL], "metadata": {"k": "v"}})
    answer = response_from_completion(completion("small-a", "hello"), echo)
    parsed = SDKResponse.model_validate(answer)
    assert parsed.id == "resp_1" and parsed.object == "response" and parsed.status == "completed"
    assert parsed.output_text == "hello" and parsed.model == "small-a" and parsed.instructions == "Be brief."
    assert parsed.usage is not None and (parsed.usage.input_tokens, parsed.usage.output_tokens) == (100, 50)
    assert parsed.usage.total_tokens == 150 and parsed.usage.input_tokens_details.cached_tokens == 0
    assert parsed.tools[0].name == "weather" and parsed.metadata == {"k": "v"}
    assert parsed.text is not None and parsed.text.format.type == "text"

    calls = completion("small-a", "")
    calls["choices"][0] = {"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": None,
                           "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]}}  # fmt: skip
    (call,) = SDKResponse.model_validate(response_from_completion(calls, echo)).output
    assert call.type == "function_call" and (call.call_id, call.name, call.arguments) == (
        "call_1",
        "weather",
        "{}",
    )

    cut = completion("small-a", "hel")
    cut["choices"][0]["finish_reason"] = "length"
    incomplete = SDKResponse.model_validate(response_from_completion(cut, echo))
    assert incomplete.status == "incomplete" and incomplete.incomplete_details is not None
    assert (
        incomplete.incomplete_details.reason == "max_output_tokens"
        and incomplete.output[0].status == "incomplete"
    )


def _chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 2, "model": "m", "choices": choices,
            **extra}  # fmt: skip


def _call_delta(**fields: Any) -> dict[str, Any]:
    return _chunk([{"index": 0, "delta": {"tool_calls": [{"index": 0, **fields}]}, "finish_reason": None}])


CHAT_STREAM = sse(
    _chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]),
    _chunk([{"index": 0, "delta": {"content": "Let me "}, "finish_reason": None}]),
    _chunk([{"index": 0, "delta": {"content": "check."}, "finish_reason": None}]),
    _call_delta(id="call_1", type="function", function={"name": "weather", "arguments": '{"city"'}),
    _call_delta(function={"arguments": ': "Oslo"}'}),
    _chunk([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]),
    _chunk([], usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}),
)


def _events(body: bytes) -> list[dict[str, Any]]:
    out = []
    for event in filter(None, body.split(b"\n\n")):
        name, data = event.split(b"\n")
        doc = orjson.loads(data.removeprefix(b"data: "))
        assert name == b"event: " + doc["type"].encode()
        out.append(doc)
    return out


def test_the_chat_stream_becomes_the_responses_event_sequence_however_it_is_split() -> None:
    whole = ResponsesStream(RequestEcho({}))
    expected = whole.feed(CHAT_STREAM) + whole.close()
    events = _events(expected)
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed",
    ]  # fmt: skip
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[6]["text"] == "Let me check." and events[12]["arguments"] == '{"city": "Oslo"}'
    final = SDKResponse.model_validate(events[-1]["response"])
    assert final.id == "resp_9" and final.status == "completed" and final.output_text == "Let me check."
    assert final.output[1].type == "function_call" and final.output[1].call_id == "call_1"
    assert final.usage is not None and final.usage.total_tokens == 5
    for size in (1, 7, 50):
        split = ResponsesStream(RequestEcho({}))
        pieces = [CHAT_STREAM[i : i + size] for i in range(0, len(CHAT_STREAM), size)]
        assert b"".join(split.feed(p) for p in pieces) + split.close() == expected


def test_text_chunks_that_carry_more_than_text_are_translated_in_full() -> None:
    # The per-token path takes only a chunk whose one choice adds text; every other shape must still count.
    translator = ResponsesStream(RequestEcho({}))
    stream = sse(
            _chunk([{"index": 0, "delta": {"content": "a"}, "finish_reason": None}]),
            _chunk([{"index": 0, "delta": {"content": None}, "finish_reason": None}], usage=None),
            _chunk([{"index": 0, "delta": {"content": "b"}, "finish_reason": None}],
                   usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}),
            _chunk([{"index": 0, "delta": {"content": "c", "role": "assistant"}, "finish_reason": None}]),
            _chunk([{"index": 0, "delta": {"content": 7}, "finish_reason": None}]),
            [1, 2],
            _chunk([{"index": 0, "delta": {"content": "d"}, "finish_reason": None},
                    {"index": 1, "delta": {"content": "e"}, "finish_reason": None}]),
            _chunk([{"index": 0, "delta": {"content": "é\n\"f\""}, "finish_reason": "stop"}],
                   usage={"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}),
    )  # fmt: skip
    events = _events(translator.feed(stream) + translator.close())
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert deltas == ["a", "b", "c", "d", "e", 'é\n"f"']  # a non-text content (7) and a non-object add none
    final = events[-1]
    assert final["type"] == "response.completed"
    assert final["response"]["output"][0]["content"][0]["text"] == 'abcdeé\n"f"'
    assert final["response"]["usage"]["total_tokens"] == 9  # the last usage, whichever chunk carried it


def test_a_streamed_refusal_is_its_own_content_part() -> None:
    translator = ResponsesStream(RequestEcho({}))
    body = (
        translator.feed(
            sse(
                _chunk([{"index": 0, "delta": {"content": "Hm. "}, "finish_reason": None}]),
                _chunk([{"index": 0, "delta": {"refusal": "I can't"}, "finish_reason": None}]),
                _chunk([{"index": 0, "delta": {"refusal": " help."}, "finish_reason": None}]),
                _chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
            )
        )
        + translator.close()
    )
    events = _events(body)
    assert [(e["type"], e.get("content_index")) for e in events[2:-1]] == [
        ("response.output_item.added", None), ("response.content_part.added", 0),
        ("response.output_text.delta", 0), ("response.output_text.done", 0), ("response.content_part.done", 0),
        ("response.content_part.added", 1), ("response.refusal.delta", 1), ("response.refusal.delta", 1),
        ("response.refusal.done", 1), ("response.content_part.done", 1), ("response.output_item.done", None),
    ]  # fmt: skip
    assert events[-4]["refusal"] == "I can't help."
    final = SDKResponse.model_validate(events[-1]["response"])
    assert [p.type for p in final.output[0].content] == ["output_text", "refusal"]  # type: ignore[union-attr]
    assert final.output_text == "Hm. "


def test_a_cut_stream_ends_incomplete() -> None:
    translator = ResponsesStream(RequestEcho({}))
    body = translator.feed(
        sse(
            _chunk([{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]),
            _chunk([{"index": 0, "delta": {}, "finish_reason": "length"}]),
        )
    )
    final = _events(body + translator.close())[-1]
    assert final["type"] == "response.incomplete"
    assert final["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_a_gateway_error_event_becomes_an_error_event_and_response_failed() -> None:
    translator = ResponsesStream(RequestEcho({}))
    error = b'data: {"error": {"message": "broken", "type": "server_error", "code": "upstream_stream_broken"}}\n\n'
    head = sse(_chunk([{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}])).split(
        b"data: [DONE]"
    )[0]
    body = translator.feed(b": ping\n\n" + head + error + b"data: [DONE]\n\n") + translator.close()
    assert body.startswith(b": ping\n\n")
    events = _events(body.removeprefix(b": ping\n\n"))
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    assert events[-2]["message"] == "broken" and events[-2]["code"] == "upstream_stream_broken"
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"] == {
        "code": "upstream_stream_broken",
        "message": "broken",
    }
    assert [e["sequence_number"] for e in events] == list(range(len(events)))  # nothing after the failure


def test_a_stream_that_stops_before_its_end_fails() -> None:
    translator = ResponsesStream(RequestEcho({}))
    translator.feed(sse(_chunk([{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]))[:-14])
    assert [e["type"] for e in _events(translator.close())][-2:] == ["error", "response.failed"]


def _json(request: Request) -> dict[str, Any]:
    return orjson.loads(request.content)  # type: ignore[no-any-return]


async def test_the_door_in_process_answers_streams_and_refuses_in_openai_shape() -> None:
    router = respx.Router()
    route = router.post("http://up-a/v1/chat/completions").mock(
        side_effect=[
            Response(200, json=completion("small-a", "four")),
            Response(200, content=CHAT_STREAM, headers={"content-type": "text/event-stream"}),
        ]
    )
    async with gateway(router) as (client, records):
        plain = await client.post(
            "/v1/responses",
            json={"model": "student", "input": "2+2=", "instructions": "Be brief."},
            headers=AUTH,
        )
        streamed = await client.post(
            "/responses", json={"model": "student", "input": "hi", "stream": True}, headers=AUTH
        )
        bad = await client.post(
            "/v1/responses",
            json={"model": "student", "input": "x", "tools": [{"type": "web_search"}]},
            headers=AUTH,
        )
    assert plain.status_code == 200 and plain.json()["object"] == "response"
    assert SDKResponse.model_validate(plain.json()).output_text == "four"
    assert plain.json()["instructions"] == "Be brief." and plain.headers["x-tiergate-tier"] == "student"
    sent = _json(route.calls[0].request)
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2="},
    ]
    assert "input" not in sent and sent["model"] == "small-a"
    assert _json(route.calls[1].request)["stream_options"] == {"include_usage": True}
    events = _events(streamed.content)
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tools[0]"
    assert (
        bad.json()["error"]["type"] == "invalid_request_error"
        and "built-in" in bad.json()["error"]["message"]
    )
    assert route.call_count == 2  # the refused request reached no upstream
    assert [r.endpoint for r in records] == ["responses"] * 2
    assert records[1].stream and records[1].completion_tokens == 2
