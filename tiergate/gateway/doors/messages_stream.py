"""The chat event stream rewritten as Anthropic's Messages event stream.

`message_start` and a `ping` at the first chunk; each run of text or each tool call becomes one content block
(`content_block_start`, `content_block_delta` with `text_delta` or `input_json_delta`, `content_block_stop`);
at `[DONE]`, `message_delta` with the stop reason and the usage (the chat stream carries usage in its last
chunk, so the input tokens arrive here, not in `message_start`) and `message_stop`. A gateway or upstream
error event becomes Anthropic's `error` event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from tiergate.policies.usage import reported_count

_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                 "function_call": "tool_use", "content_filter": "refusal"}  # fmt: skip
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                429: "rate_limit_error", 504: "timeout_error", 529: "overloaded_error"}  # fmt: skip


def message_id(chat_id: Any) -> str:
    """`msg_...` for the chat completion id `chat_id`, so both name the same answer."""
    return "msg_" + str(chat_id or "").removeprefix("chatcmpl-")


def stop_reason(finish_reason: Any) -> str | None:
    return _STOP_REASONS.get(finish_reason, "end_turn") if finish_reason is not None else None


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    """Anthropic's error object for an HTTP `status`."""
    kind = _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def anthropic_usage(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """Anthropic's usage for a chat `usage`: input tokens exclude those read from the upstream's cache (a
    field that is not a count reads as 0)."""
    cached = reported_count(usage, "prompt_tokens_details", "cached_tokens")
    return {
        "input_tokens": max(0, reported_count(usage, "prompt_tokens") - cached),
        "output_tokens": reported_count(usage, "completion_tokens"),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    }


def _event(kind: str, doc: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **doc}) + b"\n\n"


class MessagesStream:
    """A `BodyTranslator` from chat SSE to Anthropic's event stream; events may arrive split anywhere."""

    def __init__(self) -> None:
        self._pending = b""
        self._started = False
        self._finished = False
        self._block: int | None = None  # the index of the open content block
        self._block_kind = ""  # "text" | "tool_use"
        self._tool_calls: dict[int, int] = {}  # chat tool-call index -> content block index
        self._blocks = 0
        self._text_prefix = b""  # the bytes of a text_delta event of the open text block, up to the text
        self._stop: str | None = None
        self._usage: dict[str, int] = {"output_tokens": 0}

    def feed(self, chunk: bytes) -> bytes:
        self._pending += chunk
        *events, self._pending = self._pending.split(b"\n\n")
        out = []
        for event in events:
            # Most of a stream: a one-line chunk with one more piece of the open text block, written out
            # without building its event (this loop is the door's whole per-token cost).
            if self._block_kind == "text" and event[:7] == b"data: {" and b"\n" not in event:
                try:
                    doc = orjson.loads(event[6:])
                except orjson.JSONDecodeError:
                    doc = None
                choices = doc.get("choices") if isinstance(doc, dict) else None
                if isinstance(choices, list) and len(choices) == 1 and not doc.get("usage"):
                    choice = choices[0]
                    delta = choice.get("delta") if isinstance(choice, dict) else None
                    if (
                        isinstance(delta, dict)
                        and choice.get("finish_reason") is None
                        and choice.get("index", 0) == 0
                        and delta.keys() <= {"content"}
                        and isinstance(text := delta.get("content") or "", str)
                    ):
                        if text:
                            out.append(self._text_prefix + orjson.dumps(text) + b"}}\n\n")
                        continue
            out.append(self._translate(event))
        return b"".join(out)

    def close(self) -> bytes:
        rest, self._pending = self._pending, b""
        out = self._translate(rest) if rest.strip() else b""
        return out + self._finish()  # a stream cut short still ends as a well-formed message

    def _translate(self, event: bytes) -> bytes:
        if event.startswith(b"data: ") and b"\n" not in event:  # the usual one-line event
            data = event[6:]
        else:
            data = b"\n".join(line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:"))
        if not data:  # a comment or keep-alive: kept as it came
            return event + b"\n\n"
        if data == b"[DONE]":
            return self._finish()
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            return _event("error", anthropic_error(500, "the upstream sent an unreadable event"))
        if not isinstance(doc, dict):
            return b""
        if "error" in doc:
            error = doc["error"] if isinstance(doc["error"], dict) else {"message": str(doc["error"])}
            self._finished = True  # nothing follows an error event
            return _event("error", anthropic_error(500, str(error.get("message") or "upstream error")))
        return self._chunk(doc)

    def _chunk(self, doc: dict[str, Any]) -> bytes:
        """A chunk's pieces; a piece of the wrong type (an upstream's mistake) adds nothing, it never breaks
        the stream."""
        out = b"" if self._started else self._start(doc)
        if isinstance(doc.get("usage"), dict) and doc["usage"]:
            self._usage = anthropic_usage(doc["usage"])
        choices = doc.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # Messages has one answer
            delta = choice.get("delta")
            delta = delta if isinstance(delta, dict) else {}
            content = delta.get("content")
            if content and isinstance(content, str):
                out += self._open("text", {"type": "text", "text": ""})
                out += self._text_prefix + orjson.dumps(content) + b"}}\n\n"
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                if isinstance(call, dict):
                    out += self._tool_call(call)
            if choice.get("finish_reason") is not None:
                self._stop = stop_reason(choice["finish_reason"])
                out += self._close_block()
        return out

    def _start(self, doc: dict[str, Any]) -> bytes:
        self._started = True
        message: dict[str, Any] = {
            "id": message_id(doc.get("id")), "type": "message", "role": "assistant", "model": doc.get("model"),
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }  # fmt: skip
        return _event("message_start", {"message": message}) + _event("ping", {})

    def _tool_call(self, call: dict[str, Any]) -> bytes:
        out = b""
        index = call.get("index", 0)
        index = index if isinstance(index, int) else 0
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        if index not in self._tool_calls:
            out += self._close_block()
            self._tool_calls[index] = self._blocks
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": call.get("id") if isinstance(call.get("id"), str) else None,
                "name": function.get("name") if isinstance(function.get("name"), str) else None,
                "input": {},
            }
            out += self._open("tool_use", block)
        if self._tool_calls[index] != self._block:
            return (
                out  # a late fragment of a call whose block is closed: Anthropic's blocks do not interleave
            )
        arguments = function.get("arguments")
        if arguments and isinstance(arguments, str):
            out += self._delta({"type": "input_json_delta", "partial_json": arguments})
        return out

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        if self._block is not None and self._block_kind == kind and kind == "text":
            return b""
        out = self._close_block()
        self._block, self._block_kind = self._blocks, kind
        self._blocks += 1
        if kind == "text":
            self._text_prefix = (
                b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,' % (self._block)
                + b'"delta":{"type":"text_delta","text":'
            )
        return out + _event("content_block_start", {"index": self._block, "content_block": block})

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return _event("content_block_delta", {"index": self._block, "delta": delta})

    def _close_block(self) -> bytes:
        if self._block is None:
            return b""
        index, self._block, self._block_kind = self._block, None, ""
        return _event("content_block_stop", {"index": index})

    def _finish(self) -> bytes:
        if not self._started or self._finished:
            return b""
        self._finished = True
        delta = {"stop_reason": self._stop or "end_turn", "stop_sequence": None}
        out = self._close_block() + _event("message_delta", {"delta": delta, "usage": self._usage})
        return out + _event("message_stop", {})
