"""An upstream chunk of the wrong shape adds nothing to a translated stream and never breaks it: the client
still gets well-formed events and the door's terminal event."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from tiergate.gateway.doors.messages_stream import MessagesStream
from tiergate.gateway.doors.responses_output import RequestEcho
from tiergate.gateway.doors.responses_stream import ResponsesStream
from tiergate.gateway.upstream.translation import BodyTranslator


def _chunk(choices: Any, **extra: Any) -> bytes:
    doc = {
        "id": "chatcmpl-g",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": choices,
    }
    return b"data: " + orjson.dumps({**doc, **extra}) + b"\n\n"


def _delta(**delta: Any) -> bytes:
    return _chunk([{"index": 0, "delta": delta, "finish_reason": None}])


GARBAGE = {
    "content not a string": _delta(content=7),
    "choice not an object": _chunk(["x"]),
    "delta not an object": _chunk([{"index": 0, "delta": "text", "finish_reason": None}]),
    "choices an object": _chunk({"0": {"delta": {"content": "x"}}}),
    "function not an object": _delta(tool_calls=[{"index": 0, "function": "f"}]),
    "tool_calls not a list": _delta(tool_calls=5),
    "tool call not an object": _delta(tool_calls=[7]),
    "tool call index a list": _delta(tool_calls=[{"index": [0], "function": {"arguments": "{}"}}]),
    "tool call fields not strings": _delta(tool_calls=[{"index": 0, "id": 1, "function": {"name": 2, "arguments": 3}}]),
    "usage not an object": _chunk([], usage="lots"),
    "usage counts not counts": _chunk([], usage={"prompt_tokens": "x", "completion_tokens": -3,
                                                 "prompt_tokens_details": 5}),
    "a JSON array": b"data: [1, 2]\n\n",
    "a JSON number": b"data: 5\n\n",
}  # fmt: skip

DOORS: dict[str, tuple[Callable[[], BodyTranslator], str]] = {
    "messages": (MessagesStream, "message_stop"),
    "responses": (lambda: ResponsesStream(RequestEcho({})), "response.completed"),
}


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=list(GARBAGE))
def test_a_chunk_of_the_wrong_shape_adds_nothing_and_the_stream_ends_well(door: str, garbage: bytes) -> None:
    make, terminal = DOORS[door]
    translator = make()
    body = translator.feed(_delta(content="hi"))
    body += translator.feed(garbage)
    body += translator.feed(
        _chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]) + b"data: [DONE]\n\n"
    )
    body += translator.close()
    events = [e for e in body.split(b"\n\n") if e]
    docs = [orjson.loads(e.split(b"\ndata: ", 1)[1]) for e in events]
    assert docs[-1]["type"] == terminal
    assert not [d for d in docs if d["type"] == "error"]
    if door == "responses":
        assert docs[-1]["response"]["output"][0]["content"][0]["text"] == "hi"
        usage = docs[-1]["response"]["usage"]
        assert usage is None or all(v >= 0 for v in (usage["input_tokens"], usage["output_tokens"]))
