"""The legacy Completions door: request and answer translation, and the door in-process over the pipeline."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import respx
from httpx import Request, Response

from tests.gateway.conftest import AUTH, completion, gateway, sse
from tiergate.gateway.doors.completions import chat_request, text_completion
from tiergate.gateway.doors.completions_stream import CompletionsStream
from tiergate.gateway.errors import BadRequest


def _json(request: Request) -> dict[str, Any]:
    return orjson.loads(request.content)  # type: ignore[no-any-return]


def test_a_prompt_becomes_one_user_message_with_the_legacy_default_max_tokens() -> None:
    for prompt in ("Say hi", ["Say hi"]):
        chat = chat_request({"model": "m", "prompt": prompt, "stop": ["\n"], "n": 2, "seed": 1, "user": "u"})
        assert chat == {"model": "m", "messages": [{"role": "user", "content": "Say hi"}], "stop": ["\n"], "n": 2,
                        "seed": 1, "user": "u", "max_tokens": 16}  # fmt: skip
    assert chat_request({"model": "m", "prompt": "x", "max_tokens": 200})["max_tokens"] == 200
    assert chat_request({"model": "m", "prompt": "x", "max_tokens": None})["max_tokens"] == 16
    assert chat_request({"model": "m", "prompt": "x", "best_of": 3, "n": 3, "echo": False})["n"] == 3


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({}, "prompt"),
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"prompt": [1, 2, 3]}, "prompt"),
        ({"prompt": [[1, 2]]}, "prompt"),
        ({"prompt": 7}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": "x", "suffix": "end"}, "suffix"),
        ({"prompt": "x", "echo": True}, "echo"),
        ({"prompt": "x", "logprobs": 2}, "logprobs"),
        ({"prompt": "x", "best_of": 2}, "best_of"),
        ({"prompt": "x", "messages": []}, "messages"),
        ({"prompt": "x", "tools": []}, "tools"),
    ],
)
def test_what_a_chat_model_cannot_do_is_refused_naming_the_field(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as refused:
        chat_request({"model": "m", **fields})
    assert refused.value.param == param


def test_a_chat_completion_becomes_a_text_completion() -> None:
    chat = completion("small-a", "hello")
    chat["choices"].append(
        {"index": 1, "message": {"role": "assistant", "content": None}, "finish_reason": "length"}
    )
    assert text_completion(chat) == {
        "id": "cmpl-1", "object": "text_completion", "created": 1, "model": "small-a",
        "choices": [{"text": "hello", "index": 0, "logprobs": None, "finish_reason": "stop"},
                    {"text": "", "index": 1, "logprobs": None, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150},
    }  # fmt: skip


def _chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-9",
        "object": "chat.completion.chunk",
        "created": 2,
        "model": "m",
        "choices": choices,
        **extra,
    }


CHAT_STREAM = sse(
    _chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]),
    _chunk([{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]),
    _chunk([{"index": 1, "delta": {"content": "lo"}, "finish_reason": None}]),
    _chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
    _chunk([], usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}),
)


def _events(body: bytes) -> list[Any]:
    return [e.removeprefix(b"data: ") for e in body.split(b"\n\n") if e]


def test_the_chat_stream_becomes_text_completion_chunks_however_it_is_split() -> None:
    whole = CompletionsStream()
    expected = whole.feed(CHAT_STREAM) + whole.close()
    events = _events(expected)
    assert events[-1] == b"[DONE]"
    docs = [orjson.loads(e) for e in events[:-1]]
    assert {d["object"] for d in docs} == {"text_completion"} and {d["id"] for d in docs} == {"cmpl-9"}
    assert [d["choices"] for d in docs[:3]] == [
        [{"text": "Hel", "index": 0, "logprobs": None, "finish_reason": None}],
        [{"text": "lo", "index": 1, "logprobs": None, "finish_reason": None}],
        [{"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"}],
    ]  # the role-only chunk is dropped
    assert docs[3]["choices"] == [] and docs[3]["usage"]["total_tokens"] == 5
    for size in (1, 7, 50):
        split = CompletionsStream()
        pieces = [CHAT_STREAM[i : i + size] for i in range(0, len(CHAT_STREAM), size)]
        assert b"".join(split.feed(p) for p in pieces) + split.close() == expected


def test_error_events_and_comments_pass_through_unchanged() -> None:
    error = b'data: {"error": {"message": "broken", "code": "upstream_stream_broken"}}\n\n'
    translator = CompletionsStream()
    assert translator.feed(b": ping\n\n" + error) == b": ping\n\n" + error
    assert translator.feed(b"data: [DONE]") == b"" and translator.close() == b"data: [DONE]\n\n"


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
            "/v1/completions", json={"model": "student", "prompt": "2+2="}, headers=AUTH
        )
        streamed = await client.post(
            "/completions",
            json={
                "model": "student",
                "prompt": "2+2=",
                "stream": True,
                "stream_options": {"include_usage": True},
            },
            headers=AUTH,
        )
        bad = await client.post(
            "/v1/completions", json={"model": "student", "prompt": ["a", "b"]}, headers=AUTH
        )
        metrics = await client.get("/metrics", headers=AUTH)
    assert plain.status_code == 200 and plain.json()["object"] == "text_completion"
    assert plain.json()["choices"][0]["text"] == "four" and plain.headers["x-tiergate-tier"] == "student"
    sent = _json(route.calls[0].request)
    assert sent["messages"] == [{"role": "user", "content": "2+2="}] and sent["max_tokens"] == 16
    assert "prompt" not in sent and sent["model"] == "small-a"
    events = _events(streamed.content)
    assert events[-1] == b"[DONE]" and orjson.loads(events[0])["object"] == "text_completion"
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "prompt"
    assert bad.json()["error"]["type"] == "invalid_request_error"
    assert route.call_count == 2  # the refused request reached no upstream
    assert [r.endpoint for r in records] == [
        "completions"
    ] * 2  # answered calls; the refusal has its own hook
    assert records[1].stream and records[0].completion_tokens == 50
    assert (
        'tiergate_requests_total{endpoint="completions",model="",outcome="refused",status="400"'
        in metrics.text
    )
