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
    assert acc.flush() == b""  # a cut event would make the client fail before it reads the error event
    assert acc.truncated and not acc.done


def test_a_whole_last_event_without_its_blank_line_is_forwarded_terminated() -> None:
    acc = SSEAccumulator(strip_usage_chunk=False)
    assert acc.feed(chunk({"content": "x"}) + b"data: [DONE]") == chunk({"content": "x"})
    assert acc.flush() == b"data: [DONE]\n\n"
    assert acc.done and not acc.truncated


COMPLETION = {
    "id": "c9",
    "object": "chat.completion",
    "created": 7,
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hi there"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6},
}


def _events(data: bytes) -> list[bytes]:
    assert data.endswith(b"\n\n")
    events = data[:-2].split(b"\n\n")
    assert all(e.startswith(b"data: ") and b"\n" not in e for e in events), events
    return [e[6:] for e in events]


def test_a_json_completion_sent_to_a_stream_request_is_restreamed_as_chunks() -> None:
    acc = SSEAccumulator(strip_usage_chunk=True)
    payloads = _events(acc.restream(orjson.dumps(COMPLETION)))
    assert payloads[-1] == b"[DONE]"
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert all(c["choices"] for c in chunks)  # the usage chunk the client did not ask for is dropped
    assert acc.usage == COMPLETION["usage"] and acc.done and acc.error is None
    assert acc.assembled()["choices"][0]["message"]["content"] == "Hi there"


def test_a_json_completion_keeps_its_usage_chunk_when_the_client_asked_for_it() -> None:
    acc = SSEAccumulator(strip_usage_chunk=False)
    chunks = [orjson.loads(p) for p in _events(acc.restream(orjson.dumps(COMPLETION)))[:-1]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == COMPLETION["usage"]


def test_a_json_error_or_unreadable_body_sent_to_a_stream_request_becomes_one_error_event() -> None:
    acc = SSEAccumulator(strip_usage_chunk=True)
    body = orjson.dumps({"error": {"message": "model overloaded", "type": "server_error"}})
    (payload,) = _events(acc.restream(body))
    error = orjson.loads(payload)["error"]
    assert "model overloaded" in error["message"] and error["code"] == "upstream_not_streaming"
    assert acc.error == {"message": "model overloaded", "type": "server_error"}

    acc = SSEAccumulator(strip_usage_chunk=True)
    (payload,) = _events(acc.restream(b"{not json"))
    assert orjson.loads(payload)["error"]["code"] == "upstream_not_streaming"
    assert acc.error is not None


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


async def test_a_streams_last_bytes_leave_only_once_the_call_is_settled() -> None:
    # Settling writes the ledger row ahead: a replica killed after the client has the whole answer has it.
    import asyncio

    from tiergate.gateway.upstream.relay import RelayResponse, StreamOutcome

    events: list[str] = []

    async def chunks() -> Any:
        for piece in STREAM[1:]:
            yield piece

    async def finish(outcome: StreamOutcome) -> None:
        events.append(f"settled:{outcome.status}")

    async def closed() -> None:
        events.append("upstream closed")

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # the client stays
        return {}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            events.append("last bytes" if not message.get("more_body") else "bytes")

    relay = RelayResponse(
        headers=[], first_chunk=STREAM[0], chunks=chunks(), close_upstream=closed,
        accumulator=SSEAccumulator(strip_usage_chunk=False), started=0.0, upstream_wait_s=0.0, finish=finish,
    )  # fmt: skip
    await relay({}, receive, send)
    assert events.index("settled:ok") < events.index("last bytes")
    assert events.count("settled:ok") == 1  # once, not again when the relay ends
