from __future__ import annotations

from typing import Any

import orjson

from tiergate.gateway.upstream.relay import SSEAccumulator, error_event


def frame(doc: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(doc) + b"\n\n"


def chunk(delta: dict[str, Any], finish: str | None = None, index: int = 0) -> bytes:
    return frame(
        {
            "id": "c1",
            "model": "m",
            "created": 1,
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
        }
    )


USAGE = frame(
    {"id": "c1", "model": "m", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}
)
STREAM = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Hel"}),
    chunk({"content": "lo"}),
    chunk({}, "stop"),
    USAGE,
    b"data: [DONE]\n\n",
]


def test_forwards_each_complete_event_at_once_even_when_split_across_chunks() -> None:
    acc = SSEAccumulator(strip_usage_chunk=False)
    data = b"".join(STREAM)
    out = b""
    for i in range(0, len(data), 7):  # arbitrary network chunking
        piece = acc.feed(data[i : i + 7])
        out += piece
        assert not piece or piece.endswith(b"\n\n")  # never half an event
    assert out == data
    assert acc.done and acc.usage == {"prompt_tokens": 5, "completion_tokens": 2}
    assert acc.text == "Hello"


def test_strips_the_usage_chunk_only_when_asked() -> None:
    acc = SSEAccumulator(strip_usage_chunk=True)
    out = b"".join(acc.feed(c) for c in STREAM)
    assert USAGE not in out and b"[DONE]" in out
    assert acc.usage == {"prompt_tokens": 5, "completion_tokens": 2}  # still counted


def test_crlf_events_comments_and_a_trailing_partial_event() -> None:
    acc = SSEAccumulator(strip_usage_chunk=True)
    out = acc.feed(
        b": keep-alive\r\n\r\n" + chunk({"content": "x"}).replace(b"\n\n", b"\r\n\r\n") + b'data: {"partial'
    )
    assert out.startswith(b": keep-alive") and out.endswith(b"\r\n\r\n")
    assert acc.text == "x"
    assert acc.flush() == b'data: {"partial'  # forwarded as-is rather than swallowed
    assert not acc.done


def test_assembles_tool_calls_and_several_choices() -> None:
    acc = SSEAccumulator(strip_usage_chunk=False)
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_", "arguments": '{"ci'}}
    more = {"index": 0, "function": {"name": "weather", "arguments": 'ty": "Paris"}'}}
    for c in [chunk({"role": "assistant", "tool_calls": [call]}), chunk({"tool_calls": [more]}, "tool_calls"),
              chunk({"content": "B"}, "stop", index=1)]:  # fmt: skip
        acc.feed(c)
    doc = acc.assembled()
    first, second = doc["choices"]
    assert first["message"]["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        }
    ]
    assert first["finish_reason"] == "tool_calls"
    assert second["message"]["content"] == "B"
    assert doc["id"] == "c1" and doc["object"] == "chat.completion"


def test_upstream_error_events_are_kept_and_noted() -> None:
    acc = SSEAccumulator(strip_usage_chunk=True)
    out = acc.feed(error_event("boom"))
    assert orjson.loads(out[6:])["error"]["message"] == "boom"
    assert acc.error["code"] == "upstream_stream_broken"
