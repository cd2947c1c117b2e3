"""An unmodified app using the official `openai` SDK, pointed at a real tiergate process."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

from tests.e2e.conftest import MASTER, Stack, sdk_client
from tests.support import wait_for

pytestmark = pytest.mark.e2e
MESSAGES = [{"role": "user", "content": "What is two plus two?"}]


def client(gw: Stack, key: str = MASTER) -> openai.OpenAI:
    return sdk_client(gw.url, key)


def test_plain_completion_with_headers(gw: Stack) -> None:
    raw = client(gw).chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)  # type: ignore[arg-type]
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: What is two plus two?"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert raw.headers["x-tiergate-tier"] == "student" and raw.headers["x-tiergate-model"] == "student-1"
    assert raw.headers["x-request-id"]


def test_every_openai_field_reaches_the_upstream(gw: Stack) -> None:
    client(gw).chat.completions.create(
        model="teacher", messages=MESSAGES, n=2, stop=["\n\n"], logprobs=True, top_logprobs=2, seed=42, user="u-1",  # type: ignore[arg-type]
        max_completion_tokens=64, temperature=0.2, response_format={"type": "json_object"},
        extra_body={"vendor_specific": {"keep": True}},
    )  # fmt: skip
    (sent,) = gw.received()
    body = sent["body"]
    assert body["model"] == "teacher-1"
    for field, value in {"n": 2, "stop": ["\n\n"], "logprobs": True, "top_logprobs": 2, "seed": 42, "user": "u-1",
                         "max_completion_tokens": 64, "temperature": 0.2, "response_format": {"type": "json_object"},
                         "vendor_specific": {"keep": True}}.items():  # fmt: skip
        assert body[field] == value, field
    assert sent["authorization"] == "Bearer sk-upstream"  # the upstream key, never the caller's


def test_json_mode_and_json_schema(gw: Stack) -> None:
    gw.script("student-1", {"content": json.dumps({"answer": 4})}, {"content": json.dumps({"answer": 4})})
    c = client(gw)
    plain = c.chat.completions.create(
        model="auto", messages=MESSAGES, response_format={"type": "json_object"}
    )  # type: ignore[arg-type]
    assert json.loads(plain.choices[0].message.content or "") == {"answer": 4}
    schema = {
        "type": "json_schema",
        "json_schema": {
            "name": "a",
            "schema": {"type": "object", "properties": {"answer": {"type": "integer"}}},
        },
    }
    typed = c.chat.completions.create(model="auto", messages=MESSAGES, response_format=schema)  # type: ignore[arg-type]
    assert json.loads(typed.choices[0].message.content or "")["answer"] == 4
    assert gw.received()[1]["body"]["response_format"] == schema


TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 2}'}}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "add",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
            },
        },
    }
]


def test_tool_calls_plain_and_streamed(gw: Stack) -> None:
    gw.script("student-1", {"tool_calls": [TOOL_CALL]}, {"tool_calls": [TOOL_CALL], "content": ""})
    c = client(gw)
    plain = c.chat.completions.create(model="auto", messages=MESSAGES, tools=TOOLS)  # type: ignore[arg-type]
    (call,) = plain.choices[0].message.tool_calls or []
    assert call.function.name == "add" and json.loads(call.function.arguments) == {"a": 2, "b": 2}
    assert plain.choices[0].finish_reason == "tool_calls"
    with c.chat.completions.stream(model="auto", messages=MESSAGES, tools=TOOLS) as stream:  # type: ignore[arg-type]
        final = stream.get_final_completion()
    assert final.choices[0].message.tool_calls[0].function.arguments == '{"a": 2, "b": 2}'  # type: ignore[index]
    assert gw.received()[0]["body"]["tools"] == TOOLS


async def test_async_streaming_with_usage(gw: Stack) -> None:
    gw.script("student-1", {"content": "one two three four", "chunks": 4})
    async with openai.AsyncOpenAI(base_url=gw.url, api_key=MASTER, max_retries=0) as c:
        stream = await c.chat.completions.create(
            model="auto",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},  # type: ignore[arg-type]
        )
        pieces, usage = [], None
        async for chunk in stream:
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
            if chunk.usage:
                usage = chunk.usage
    assert "".join(pieces) == "one two three four"
    assert usage is not None and usage.completion_tokens == 4


def test_stream_without_include_usage_has_no_usage_chunk(gw: Stack) -> None:
    chunks = list(client(gw).chat.completions.create(model="auto", messages=MESSAGES, stream=True))  # type: ignore[call-overload]
    assert chunks and all(ch.usage is None for ch in chunks)
    assert gw.received()[0]["body"]["stream_options"] == {
        "include_usage": True
    }  # asked on the client's behalf


def test_error_classes(gw: Stack) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(gw, key="sk-wrong").chat.completions.create(model="auto", messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError):
        client(gw).chat.completions.create(model="gpt-17", messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        client(gw).chat.completions.create(model="auto", messages=[])
    with pytest.raises(openai.BadRequestError):
        client(gw).chat.completions.create(model="auto", messages=MESSAGES, temperature="warm")  # type: ignore[arg-type]
    gw.script("student-1", {"status": 429, "retry_after": 3}, {"status": 429, "retry_after": 3})
    with pytest.raises(openai.RateLimitError) as limited:
        client(gw).chat.completions.create(model="student-1", messages=MESSAGES)  # type: ignore[arg-type]
    assert limited.value.response.headers["retry-after"] == "3"
    gw.script("teacher-1", {"status": 500}, {"status": 503})
    with pytest.raises(openai.InternalServerError):
        client(gw).chat.completions.create(model="teacher", messages=MESSAGES)  # type: ignore[arg-type]


def test_fallback_to_the_second_deployment(gw: Stack) -> None:
    gw.script("student-1", {"status": 500}, {"status": 502})
    raw = client(gw).chat.completions.with_raw_response.create(model="student", messages=MESSAGES)  # type: ignore[arg-type]
    assert raw.headers["x-tiergate-model"] == "student-2"
    assert [r["body"]["model"] for r in gw.received()] == ["student-1", "student-1", "student-2"]


def test_escalation_to_the_next_tier(gw: Stack) -> None:
    gw.script("student-1", {"status": 500}, {"drop": True})
    gw.script("student-2", {"status": 503}, {"status": 503})
    raw = client(gw).chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)  # type: ignore[arg-type]
    assert raw.headers["x-tiergate-tier"] == "teacher" and raw.headers["x-tiergate-escalations"] == "1"
    assert raw.parse().choices[0].message.content == "echo: What is two plus two?"


def test_client_disconnect_mid_stream_closes_the_upstream(gw: Stack) -> None:
    gw.script(
        "student-1", {"content": " ".join(f"w{i}" for i in range(200)), "chunks": 200, "chunk_delay_s": 0.05}
    )
    with httpx.stream(
        "POST", f"{gw.url}/chat/completions", json={"model": "auto", "messages": MESSAGES, "stream": True},
        headers={"authorization": f"Bearer {MASTER}"}, timeout=10,
    ) as response:  # fmt: skip
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))
    # The client is gone after ~1 of 200 chunks (10 s of streaming); the upstream must see its stream closed now.
    event = wait_for(
        lambda: [e for e in gw.events() if e["model"] == "student-1"],
        timeout=3,
        what="the upstream stream to close",
    )
    assert event[0]["event"] == "stream_closed_by_client"


def test_a_stream_broken_after_bytes_were_sent_ends_with_an_error_event(gw: Stack) -> None:
    gw.script("student-1", {"content": "a b c d e f", "chunks": 6, "break_after": 2})
    received = []
    stream = client(gw).chat.completions.create(model="auto", messages=MESSAGES, stream=True)  # type: ignore[call-overload]
    with stream, pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.append(chunk)
    assert received  # bytes had reached the client: no retry, an error event instead
    assert "broke" in str(info.value) or "early" in str(info.value)
    assert len([r for r in gw.received() if r["body"]["model"] == "student-1"]) == 1


def test_an_upstream_answering_a_stream_with_plain_json_is_restreamed_as_chunks(gw: Stack) -> None:
    gw.script("student-1", {"content": "four, as it happens", "plain_json": True})
    stream = client(gw).chat.completions.create(  # type: ignore[call-overload]
        model="auto", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "four, as it happens"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_an_upstream_answering_a_stream_with_a_json_error_makes_the_sdk_raise(gw: Stack) -> None:
    body = {"error": {"message": "the model is overloaded", "type": "server_error", "code": None}}
    gw.script("student-1", {"plain_body": body})
    stream = client(gw).chat.completions.create(model="auto", messages=MESSAGES, stream=True)  # type: ignore[call-overload]
    with stream, pytest.raises(openai.APIError, match="the model is overloaded"):
        list(stream)


def test_a_stream_failing_before_its_first_byte_falls_back(gw: Stack) -> None:
    gw.script("student-1", {"fail_first_chunk": True}, {"fail_first_chunk": True})
    chunks = list(client(gw).chat.completions.create(model="student", messages=MESSAGES, stream=True))  # type: ignore[call-overload]
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == "echo: What is two plus two?"
    )
    assert chunks[0].model == "student-2"


def test_anthropic_through_litellm_plain_and_streamed(gw: Stack) -> None:
    c = client(gw)
    plain = c.chat.completions.create(model="claude", messages=MESSAGES)  # type: ignore[arg-type]
    assert plain.choices[0].message.content == "echo: What is two plus two?"
    assert plain.usage is not None and plain.usage.prompt_tokens == 12
    stream = c.chat.completions.create(
        model="claude", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )  # type: ignore[call-overload]
    chunks = list(stream)
    assert (
        "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        == "echo: What is two plus two?"
    )
    assert any(ch.usage for ch in chunks)
    sent = [r for r in gw.received() if r["path"] == "/v1/messages"]
    assert sent[0]["body"]["model"] == "claude-fake" and sent[0]["authorization"] == "sk-ant-fake"


def test_embeddings_and_models(gw: Stack) -> None:
    c = client(gw)
    emb = c.embeddings.create(model="embed-1", input=["a", "b"])
    assert len(emb.data) == 2 and emb.usage.prompt_tokens == 6
    ids = [m.id for m in c.models.list()]
    assert ids[:3] == ["auto", "student", "teacher"] and {
        "student-1",
        "teacher-1",
        "embed-1",
        "claude",
    } <= set(ids)


def test_the_sdk_retrieves_one_model_and_gets_not_found_for_an_unknown_one(gw: Stack) -> None:
    c = client(gw)
    assert c.models.retrieve("student").id == "student"
    assert c.models.retrieve("student-1").object == "model"
    with pytest.raises(openai.NotFoundError, match="nosuchmodel"):
        c.models.retrieve("nosuchmodel")


def test_oversized_body_is_413_and_never_a_500(gw: Stack) -> None:
    big = {"model": "auto", "messages": [{"role": "user", "content": "x" * (11 * 1024 * 1024)}]}
    r = httpx.post(
        f"{gw.url}/chat/completions", json=big, headers={"authorization": f"Bearer {MASTER}"}, timeout=30
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert gw.received() == []


async def test_concurrent_requests_are_served(gw: Stack) -> None:
    async with openai.AsyncOpenAI(base_url=gw.url, api_key=MASTER, max_retries=0) as c:
        results = await asyncio.gather(
            *(c.chat.completions.create(model="auto", messages=MESSAGES) for _ in range(50))
        )  # type: ignore[arg-type]
    assert all(r.choices[0].message.content == "echo: What is two plus two?" for r in results)
